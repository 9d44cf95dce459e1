"""The one door through which the engine changes a task folder, and the dry-run store that keeps nothing.

``TaskStore`` makes the changes on disk; ``DryRunStore`` (huey's ``BlackHoleStorage``) accepts them and keeps
nothing on disk. A dry run runs the same engine code as a real run: only the store it was given (and the
remote and direct parts, see ``dryrun.py``) differ. Reads go to the real files either way, so a dry run on
an existing task shows its true plan; what a dry run appends is kept in memory for this run's reads only.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from ..errors import ConfigError
from .atomic import cleanup_temp_files, fsync_dir, raise_as_disk_error
from .jsonl import WIPE_REQUESTS_FIX, JsonlAppender, read_raw_lines, recover_jsonl
from .layout import TaskLayout
from .lock import TaskLock
from .transaction import Transaction, recover_transaction

__all__ = ["Appender", "DryRunStore", "TaskStore", "create_task_dir", "store_for"]

log = logging.getLogger(__name__)


class Appender(Protocol):
    """An append-only file trusted up to its committed size (``JsonlAppender`` on disk)."""

    @property
    def size(self) -> int: ...

    def append_raw(self, data: bytes) -> int: ...

    def flush(self, fsync: bool = True) -> int: ...

    def close(self) -> None: ...


def create_task_dir(task_dir: Path) -> None:
    """Create the task folder (and its parents), or raise one ConfigError that says why it cannot be."""
    try:
        task_dir.mkdir(parents=True, exist_ok=True)
        return
    except OSError as exc:
        error = exc
    blocker = next((p for p in (task_dir, *task_dir.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        where = "is a file" if blocker == task_dir else f"is under {blocker}, which is a file"
        raise ConfigError(f"--task_dir {task_dir} {where}, not a folder: choose another --task_dir.") from None
    reason = {errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
              errno.EPERM: "permission denied", errno.ENOSPC: "the disk is full"}.get(error.errno or 0)  # fmt: skip
    raise ConfigError(
        f"--task_dir {task_dir} cannot be created: {reason or error.strerror or error}. Choose a --task_dir on a "
        "writable disk."
    ) from None


class TaskStore:
    """Makes every change on disk, durably (what each method guarantees once it returns is in its docstring)."""

    def make_dir(self, task_dir: Path) -> None:
        """The task folder exists (a ConfigError says why it cannot be made)."""
        create_task_dir(task_dir)

    def lock(self, path: Path, stop_check: Callable[[], bool], **options: Any) -> TaskLock | None:
        """This process holds the task's lock (``options``: TaskLock's); the caller releases it."""
        lock = TaskLock(path, **options)
        lock.acquire(stop_check=stop_check)
        return lock

    def recover(self, layout: TaskLayout) -> bool:
        """A commit cut short by a crash is completed and the temp files it left are gone; True if there was one."""
        recovered = recover_transaction(layout.journal)
        cleanup_temp_files(layout.task_dir, layout.owns_temp)
        return recovered

    def remove_stray(self, path: Path, why: str, level: int = logging.INFO) -> None:
        """Delete ``path``, which no committed state refers to, saying ``why`` (a dry run says what it would do)."""
        log.log(level, "Removing %s: %s", path.name, why)
        path.unlink(missing_ok=True)

    def appender(self, path: Path, committed_size: int, *, fix: str = WIPE_REQUESTS_FIX) -> Appender:
        """An appender on ``path``, cut back to ``committed_size`` (see JsonlAppender)."""
        return JsonlAppender(path, committed_size, fix=fix)

    def read_raw_lines(
        self, path: Path, start: int, end: int | None, *, fix: str = WIPE_REQUESTS_FIX
    ) -> Iterator[tuple[int, bytes]]:
        """``(offset, line)`` of the complete lines in bytes ``[start, end)`` of ``path``."""
        return read_raw_lines(path, start, end, fix=fix)

    def recover_jsonl(self, path: Path) -> None:
        """A torn last line of the append-only ``path`` is dropped."""
        recover_jsonl(path)

    def write_new(self, path: Path, data: bytes) -> None:
        """``path`` holds ``data`` durably; it means something only once a later commit refers to it."""
        try:
            with open(path, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
        except OSError as exc:
            path.unlink(missing_ok=True)  # unreferenced: removing it leaves the task as it was
            raise_as_disk_error(path, exc)
        fsync_dir(path.parent)

    def transaction(self, journal: Path) -> Transaction:
        """A transaction whose commit applies every staged change at once (see store/transaction.py)."""
        return Transaction(journal)


class _MemoryAppender:
    """Appends kept in memory, after the real file's first ``committed_size`` bytes."""

    def __init__(self, committed_size: int) -> None:
        self.base = committed_size
        self.data = bytearray()

    @property
    def size(self) -> int:
        return self.base + len(self.data)

    def append_raw(self, data: bytes) -> int:
        offset = self.size
        self.data += data
        return offset

    def flush(self, fsync: bool = True) -> int:
        return self.size

    def close(self) -> None:
        pass


class _DiscardingTransaction(Transaction):
    """Accepts staged changes (checking their paths as a real transaction does) and applies none."""

    def write_bytes(self, path: str | os.PathLike[str], data: bytes) -> None:
        self._name(path)

    def commit(self) -> None:
        self.committed = True

    def abort(self) -> None:
        pass


class DryRunStore(TaskStore):
    """Accepts every change and keeps none on disk: a dry run creates, changes and deletes no file, and takes
    no lock (it only reads; a running process may hold the lock for hours). Appended lines are kept in
    memory so that this run reads back what it appended (the plan of the queue it would have)."""

    def __init__(self) -> None:
        self._appended: dict[Path, _MemoryAppender] = {}

    def make_dir(self, task_dir: Path) -> None:
        if task_dir.exists():  # not a folder: the same refusal as a real run (mkdir fails, creating nothing)
            create_task_dir(task_dir)

    def lock(self, path: Path, stop_check: Callable[[], bool], **options: Any) -> TaskLock | None:
        return None

    def recover(self, layout: TaskLayout) -> bool:
        return False

    def remove_stray(self, path: Path, why: str, level: int = logging.INFO) -> None:
        log.log(level, "Dry run: a real run would remove %s (%s)", path.name, why)

    def appender(self, path: Path, committed_size: int, *, fix: str = WIPE_REQUESTS_FIX) -> Appender:
        appender = self._appended[path] = _MemoryAppender(committed_size)
        return appender

    def read_raw_lines(
        self, path: Path, start: int, end: int | None, *, fix: str = WIPE_REQUESTS_FIX
    ) -> Iterator[tuple[int, bytes]]:
        memory = self._appended.get(path)
        if memory is None:
            yield from read_raw_lines(path, start, end, fix=fix)
            return
        if start < memory.base:  # the file's committed part, then what this run appended
            yield from read_raw_lines(path, start, memory.base if end is None else min(end, memory.base), fix=fix)
        offset = memory.base
        for line in bytes(memory.data).splitlines(keepends=True):
            if end is not None and offset >= end:
                break
            if offset >= start:
                yield offset, line
            offset += len(line)

    def recover_jsonl(self, path: Path) -> None:
        pass

    def write_new(self, path: Path, data: bytes) -> None:
        pass

    def transaction(self, journal: Path) -> Transaction:
        return _DiscardingTransaction(journal)


def store_for(dryrun: bool) -> TaskStore:
    """The store of a run: chosen once, where the run's parts are built."""
    return DryRunStore() if dryrun else TaskStore()
