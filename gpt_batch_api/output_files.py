"""Task output files whose committed content always matches the committed task state.

An output file takes part in the task's commit: ``prepare_commit(txn)`` makes the appended bytes durable
(or stages a whole-file write in the transaction) and returns a small dict that the task state stores.
``open(committed)`` trusts the files only up to that dict, so output written after the last commit (by a
run that crashed) is dropped, and every sample appears in the output exactly once.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

import pydantic

from .errors import TaskFileError
from .store.jsonl import WIPE_TASK_FIX, read_jsonl
from .store.task_store import Appender, store_for
from .store.transaction import Transaction

__all__ = ["DataclassListOutputFile", "DataclassOutputFile", "TaskOutputFile"]

log = logging.getLogger(__name__)
DataT = TypeVar("DataT")
TAIL_CHECK_BYTES = 1 << 20  # the last entry is checked at each start if it is shorter than this
_PART_NAME = re.compile(r"_part\d{3}of\d{3}\.jsonl")  # after the output base name


class TaskOutputFile:
    """Interface of a task output; ``self.D`` in a TaskManager is one of these."""

    def __init__(self, path_base: str, dryrun: bool = False) -> None:
        self.path_base = path_base
        self.dryrun = dryrun
        self.store = store_for(dryrun)  # every write goes through it (a dry run's keeps nothing)
        self.written = False  # changed since the last commit

    def open(self, committed: dict[str, Any] | None) -> None:
        """Open at the committed state (None: a fresh task, any existing output is stale)."""
        raise NotImplementedError

    def prepare_commit(self, txn: Transaction) -> dict[str, Any]:
        """Make pending output durable or stage it in ``txn``; return what the task state records."""
        raise NotImplementedError

    def wipe(self, txn: Transaction) -> None:
        """Stage the deletion of every output file in ``txn``."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class DataclassOutputFile(TaskOutputFile, Generic[DataT]):
    """One dataclass (or pydantic model) instance in ``<path_base>.json``, replaced atomically on commit."""

    def __init__(self, path_base: str, dryrun: bool, data_cls: type[DataT]) -> None:
        super().__init__(path_base, dryrun)
        self.data_cls = data_cls
        self.adapter: pydantic.TypeAdapter[DataT] = pydantic.TypeAdapter(data_cls)
        self.path = Path(f"{path_base}.json")
        self.data: DataT | None = None

    @classmethod
    def output_factory(cls, data_cls: type[DataT]) -> Callable[[str, bool], DataclassOutputFile[DataT]]:
        return lambda path_base, dryrun: cls(path_base, dryrun, data_cls)

    def open(self, committed: dict[str, Any] | None) -> None:
        self.data = None
        if committed and committed.get("exists"):
            self.data = self.read_checked()
        self.written = False

    def read_checked(self) -> DataT:
        """The committed output, or a TaskFileError naming the file if it is missing or not what was written."""
        try:
            return self.adapter.validate_json(self.path.read_bytes())
        except FileNotFoundError:
            problem = "is missing, but the committed task state says it was written"
        except OSError as exc:
            problem = f"cannot be read ({exc.strerror or exc})"
        except (pydantic.ValidationError, ValueError) as exc:
            first = exc.errors()[0] if isinstance(exc, pydantic.ValidationError) and exc.errors() else None
            detail = f"{first['msg']} at {'.'.join(map(str, first['loc'])) or 'the top'}" if first else str(exc)
            problem = f"is damaged: it does not hold the task's output ({detail})"
        raise TaskFileError(
            f"The output file {self.path} {problem}. It was not modified. Restore it from a backup, or "
            f"{WIPE_TASK_FIX}.",
            str(self.path),
        )

    def set(self, data: DataT) -> None:
        self.data = data
        self.written = True

    def prepare_commit(self, txn: Transaction) -> dict[str, Any]:
        if self.data is not None and self.written:
            txn.write_bytes(self.path, self.adapter.dump_json(self.data, indent=1))
        self.written = False
        return {"exists": self.data is not None}

    def wipe(self, txn: Transaction) -> None:
        txn.delete(self.path)
        self.data = None

    @classmethod
    def read(cls, path_base: str, data_cls: type[DataT]) -> DataT:
        return pydantic.TypeAdapter(data_cls).validate_json(Path(f"{path_base}.json").read_bytes())


class DataclassListOutputFile(TaskOutputFile, Generic[DataT]):
    """Entries appended as JSON lines to ``<path_base>.jsonl``, or to ``<path_base>_partNNNofMMM.jsonl`` parts
    when ``max_entries`` or ``max_size`` (bytes) bound a part. Appending costs O(new entries)."""

    def __init__(self, path_base: str, dryrun: bool, data_cls: type[DataT], max_entries: int = 0, max_size: int = 0):
        super().__init__(path_base, dryrun)
        self.data_cls = data_cls
        self.adapter: pydantic.TypeAdapter[DataT] = pydantic.TypeAdapter(data_cls)
        self.max_entries = max_entries
        self.max_size = max_size
        self.parts: list[dict[str, Any]] = []  # name, size, entries
        self._appender: Appender | None = None
        self._pending: list[bytes] = []

    @classmethod
    def output_factory(
        cls, data_cls: type[DataT], max_entries: int = 0, max_size: int = 0
    ) -> Callable[[str, bool], DataclassListOutputFile[DataT]]:
        return lambda path_base, dryrun: cls(path_base, dryrun, data_cls, max_entries, max_size)

    @property
    def split(self) -> bool:
        return self.max_entries > 0 or self.max_size > 0

    def _part_name(self, index: int, count: int) -> str:
        base = Path(self.path_base).name
        return f"{base}_part{index:03d}of{count:03d}.jsonl" if self.split else f"{base}.jsonl"

    def _path(self, name: str) -> Path:
        return Path(self.path_base).parent / name

    @staticmethod
    def existing_paths(path_base: str) -> list[Path]:
        base = Path(path_base)
        folder = base.parent
        if not folder.is_dir():
            return []
        single = folder / f"{base.name}.jsonl"
        # Exact names, no glob: a prefix like "run[1]" must not match "run1"'s files.
        parts = sorted(
            folder / e.name
            for e in os.scandir(folder)
            if e.name.startswith(base.name) and _PART_NAME.fullmatch(e.name, len(base.name))
        )
        return ([single] if single.exists() else []) + parts

    def open(self, committed: dict[str, Any] | None) -> None:
        self.close()
        self.parts = [dict(p) for p in (committed or {}).get("parts", [])]
        self._pending = []
        self.written = False
        keep = {p["name"] for p in self.parts}
        for path in self.existing_paths(self.path_base):
            if path.name not in keep:
                why = "an output file written after the last commit by an interrupted run"
                self.store.remove_stray(path, why, logging.WARNING)
        for part in self.parts:
            self._check_tail(self._path(part["name"]), part["size"])
        if self.parts:
            last = self.parts[-1]
            for part in self.parts[:-1]:
                self.store.appender(self._path(part["name"]), part["size"], fix=WIPE_TASK_FIX).close()  # drops a tail
            self._appender = self.store.appender(self._path(last["name"]), last["size"], fix=WIPE_TASK_FIX)

    def _check_tail(self, path: Path, size: int) -> None:
        """Refuse a part whose last committed entry is not one (damaged from outside); reading the whole file
        at every start would cost O(output)."""
        if size == 0:
            return
        problem = None
        try:
            with open(path, "rb") as file:
                start = max(0, size - TAIL_CHECK_BYTES)
                file.seek(start)
                tail = file.read(size - start)
        except FileNotFoundError:
            problem = "is missing, but the committed task state says it was written"
        except OSError as exc:
            problem = f"cannot be read ({exc.strerror or exc})"
        else:
            if len(tail) < size - start:
                problem = f"is shorter than its committed size ({size} bytes)"
            elif not tail.endswith(b"\n"):
                problem = f"does not end its committed part (byte {size}) with a complete entry"
            else:
                line = tail[tail.rfind(b"\n", 0, len(tail) - 1) + 1 :]
                try:
                    self.adapter.validate_json(line)
                except (pydantic.ValidationError, ValueError):
                    problem = "ends with a damaged entry"
        if problem is not None:
            raise TaskFileError(
                f"The output file {path} {problem}. It was not modified. Restore it from a backup, or {WIPE_TASK_FIX}.",
                str(path),
            )

    def append(self, entry: DataT) -> None:
        self._pending.append(self.adapter.dump_json(entry) + b"\n")
        self.written = True

    def extend(self, entries: Iterable[DataT]) -> None:
        for entry in entries:
            self.append(entry)

    def _plan_parts(self) -> list[int]:
        """The part index (0-based) each pending line goes to, given the current parts' fill."""
        plan, index = [], len(self.parts) - 1
        size = self.parts[-1]["size"] if self.parts else 0
        entries = self.parts[-1]["entries"] if self.parts else 0
        for line in self._pending:
            full = index >= 0 and (
                (self.max_entries > 0 and entries >= self.max_entries)
                or (self.max_size > 0 and entries > 0 and size + len(line) > self.max_size)
            )
            if index < 0 or full:
                index, size, entries = index + 1, 0, 0
            plan.append(index)
            size += len(line)
            entries += 1
        return plan

    def prepare_commit(self, txn: Transaction) -> dict[str, Any]:
        """Append pending entries (new parts get their final names; older parts are renamed in ``txn``)."""
        if self._pending:
            plan = self._plan_parts()
            count = max(plan[-1] + 1, len(self.parts))
            if count != len(self.parts):
                for i, part in enumerate(self.parts):
                    new_name = self._part_name(i + 1, count)
                    if new_name != part["name"]:
                        txn.rename(self._path(part["name"]), self._path(new_name))
                        part["name"] = new_name
            for line, index in zip(self._pending, plan, strict=True):
                if index == len(self.parts):
                    if self._appender is not None:
                        self._appender.flush(fsync=True)
                        self._appender.close()
                    self.parts.append({"name": self._part_name(index + 1, count), "size": 0, "entries": 0})
                    self._appender = self.store.appender(self._path(self.parts[-1]["name"]), 0)
                elif self._appender is None:  # first write of this run to the last committed part
                    self._appender = self.store.appender(
                        self._path(self.parts[-1]["name"]), self.parts[-1]["size"], fix=WIPE_TASK_FIX
                    )
                self._appender.append_raw(line)
                self.parts[index]["size"] += len(line)
                self.parts[index]["entries"] += 1
            self._pending = []
            assert self._appender is not None  # at least one line was written above
            self._appender.flush(fsync=True)
        self.written = False
        return {"parts": [dict(p) for p in self.parts]}

    def wipe(self, txn: Transaction) -> None:
        self.close()
        for path in self.existing_paths(self.path_base):
            txn.delete(path)
        self.parts = []
        self._pending = []

    def close(self) -> None:
        if self._appender is not None:
            self._appender.close()
            self._appender = None

    @property
    def num_entries(self) -> int:
        return int(sum(p["entries"] for p in self.parts)) + len(self._pending)

    @classmethod
    def read_entries(cls, path_base: str | os.PathLike[str], data_cls: type[DataT]) -> Iterator[DataT]:
        """Every committed entry, in order, across all parts."""
        adapter = pydantic.TypeAdapter(data_cls)
        for path in cls.existing_paths(str(path_base)):
            for _, obj in read_jsonl(path):
                yield adapter.validate_python(obj)
