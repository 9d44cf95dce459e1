"""Append-only JSONL files with durable appends and torn-tail recovery.

The committed length of an append-only file is recorded in a committed state file; anything past it
was written by a run that crashed before its commit and is truncated (with a warning) when the file is
opened again. A reader never parses a torn line as data: a line without its newline, or one that is
not JSON, is an error naming the file and the byte offset.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import TaskFileError
from . import fastjson
from .atomic import fsync_dir, raise_as_disk_error

log = logging.getLogger(__name__)


def dumps_line(obj: Any) -> bytes:
    return fastjson.dumps(obj) + b"\n"


WIPE_REQUESTS_FIX = "wipe the pending requests with --wipe_requests (answered samples are kept)"
WIPE_TASK_FIX = "start the task afresh with --wipe_task (this forgets all progress and the output)"


class JsonlAppender:
    """Appends JSON lines to ``path``, which is trusted only up to ``committed_size`` bytes.

    ``fix`` is the way out named when the file is shorter than committed (besides restoring it).
    """

    def __init__(self, path: str | os.PathLike[str], committed_size: int = 0, *, fix: str = WIPE_REQUESTS_FIX) -> None:
        self.path = Path(path)
        existed = self.path.exists()
        if not existed and committed_size > 0:
            raise TaskFileError(
                f"{self.path} is missing, but the committed task state says it holds {committed_size} bytes. It was "
                f"not recreated. Restore it, or {fix}.",
                str(self.path),
            )
        try:
            self._file = open(self.path, "ab")  # noqa: SIM115 (closed in close())
        except OSError as exc:
            raise_as_disk_error(self.path, exc)
        size = self._file.seek(0, os.SEEK_END)
        if size < committed_size:
            self._file.close()
            raise TaskFileError(
                f"{self.path} is shorter ({size} bytes) than its committed size ({committed_size} bytes): it was "
                f"truncated or replaced outside gpt_batch_api. Restore it, or {fix}.",
                str(self.path),
            )
        if size > committed_size:
            log.warning(
                "%s: dropping %d bytes written by an interrupted run after the last commit",
                self.path.name,
                size - committed_size,
            )
            self._file.truncate(committed_size)
            os.fsync(self._file.fileno())
        self._size = committed_size
        if not existed:
            fsync_dir(self.path.parent)

    @property
    def size(self) -> int:
        """Bytes written so far (committed + appended but not necessarily durable)."""
        return self._size

    def append_raw(self, data: bytes) -> int:
        """Append pre-encoded complete lines; return the offset they start at."""
        offset = self._size
        try:
            self._file.write(data)
        except OSError as exc:
            raise_as_disk_error(self.path, exc)
        self._size += len(data)
        return offset

    def append(self, obj: Any) -> int:
        return self.append_raw(dumps_line(obj))

    def append_many(self, objs: Iterable[Any]) -> int:
        return self.append_raw(b"".join(dumps_line(obj) for obj in objs))

    def flush(self, fsync: bool = True) -> int:
        """Push appended bytes to the OS (and to the disk if ``fsync``); return the durable size."""
        try:
            self._file.flush()
            if fsync:
                os.fsync(self._file.fileno())
        except OSError as exc:
            raise_as_disk_error(self.path, exc)
        return self._size

    def close(self) -> None:
        """Close the file. What was appended since the last ``flush`` is not committed (a commit flushes first)
        and is dropped when the file is opened again, so failing to write it (a full disk) is no error here: it
        would hide the error that ended the run (say, the commit's own "the disk is full")."""
        if not self._file.closed:
            with contextlib.suppress(OSError):
                self._file.close()  # flushes; the file is closed even when that fails

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def corrupt_line_error(
    path: str | os.PathLike[str], offset: int, exc: Exception, fix: str = WIPE_REQUESTS_FIX
) -> TaskFileError:
    """The error for a line that is not what it should be: names the file, the byte and the way out."""
    return TaskFileError(
        f"{path} has a corrupt line at byte {offset} ({exc}). It was not modified; restore the file, or {fix}.",
        str(path),
    )


def read_raw_lines(
    path: str | os.PathLike[str], start: int = 0, end: int | None = None, *, fix: str = WIPE_REQUESTS_FIX
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(offset, line bytes)`` for each complete line in bytes ``[start, end)``; damage raises TaskFileError
    whose message names ``fix`` as the way out (besides restoring the file)."""
    path = Path(path)
    try:
        file = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise TaskFileError(
            f"{path} is missing: it is referred to by the committed task state. Restore it, or {fix}.", str(path)
        ) from None
    with file:
        file.seek(start)
        offset = start
        for line in file:
            if end is not None and offset >= end:
                break
            if not line.endswith(b"\n"):
                raise TaskFileError(
                    f"{path} has an incomplete line at byte {offset}, inside its committed part: it was cut short "
                    f"outside gpt_batch_api. It was not modified; restore the file, or {fix}.",
                    str(path),
                )
            yield offset, line
            offset += len(line)
        if end is not None and offset < end:
            raise TaskFileError(
                f"{path} is shorter ({offset} bytes) than its committed size ({end} bytes). Restore it, or {fix}.",
                str(path),
            )


def read_jsonl(
    path: str | os.PathLike[str], start: int = 0, end: int | None = None, *, fix: str = WIPE_REQUESTS_FIX
) -> Iterator[tuple[int, Any]]:
    """Yield ``(offset, object)`` for each line in bytes ``[start, end)``; corruption raises TaskFileError."""
    for offset, line in read_raw_lines(path, start, end, fix=fix):
        try:
            obj = fastjson.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            raise corrupt_line_error(path, offset, exc, fix) from None
        yield offset, obj


def recover_jsonl(path: str | os.PathLike[str]) -> int:
    """Truncate a torn or corrupt tail of a journal-like JSONL file; return the number of bytes dropped."""
    path = Path(path)
    if not path.exists():
        return 0
    good = 0
    with open(path, "rb") as file:
        for line in file:
            if not line.endswith(b"\n"):
                break
            try:
                fastjson.loads(line)
            except (ValueError, UnicodeDecodeError):
                break
            good += len(line)
    size = path.stat().st_size
    if size > good:
        log.warning("%s: dropping a torn tail of %d bytes left by an interrupted run", path.name, size - good)
        with open(path, "r+b") as file:
            file.truncate(good)
            os.fsync(file.fileno())
    return size - good
