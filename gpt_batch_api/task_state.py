"""The task state: what the task has committed, answered, passed and failed; and how it is kept on disk.

In memory it is a ``TaskState`` whose sample dicts are plain-looking dicts. On disk it is two files,
written only inside the requester's transactions (so they always agree with the queue, the batches and
the output files):

- ``<prefix>_task.json``, small and replaced at every commit: ``version``, ``meta``, the committed sizes of
  the output files, the number of entries in each dict, and where the log ends;
- ``<prefix>_task_log_GGGG.jsonl``, append-only: one line per changed dict per commit, holding only the
  keys set or deleted since the previous commit. A commit therefore costs O(changes), not O(task size),
  which matters at a million samples. When the log has grown past the size of the state it describes,
  the next commit writes a compact new generation (one line per dict) and deletes the old one.

Bytes past the recorded end of the log were appended by a commit that never happened; they are dropped on
load. Values that are dicts or lists may be changed in place by task code (e.g. appending an opinion to
``committed_meta[key]["opinions"]``), so such entries are compared with their last written form at each
commit. Version 1 files (everything inline in ``<prefix>_task.json``) are upgraded on load.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import TaskDataError, TaskFileError
from .store import fastjson
from .store.atomic import read_json
from .store.jsonl import WIPE_TASK_FIX, read_jsonl
from .store.task_store import Appender, TaskStore
from .store.transaction import Transaction

__all__ = ["TASK_STATE_VERSION", "TaskState", "TaskStateFiles", "TrackedDict", "load_task_state"]

log = logging.getLogger(__name__)

TASK_STATE_VERSION = 2
TRACKED_FIELDS = ("committed_meta", "committed_samples", "responded_meta", "failed_samples", "succeeded_samples")
COMPACT_MIN_BYTES = 4 << 20  # below this the log is never compacted
_LOG_NAME = re.compile(r"_log_\d{4}\.jsonl")  # after the head's stem


def check_key(key: Any) -> None:
    """Sample keys are JSON object keys: any other type would come back as a string after a restart (``0`` as
    ``"0"``, so ``0 in committed_samples`` turns false and every sample is sent again)."""
    if type(key) is not str and not isinstance(key, str):
        raise TaskDataError(
            f"Sample key {key!r} ({type(key).__name__}) is not a string: the task state keeps its keys as JSON "
            f"object keys, so it would not come back the same after a restart. Use a string key, e.g. "
            f"str({key!r}) or a joined string for a tuple."
        )


class TrackedDict(dict):  # type: ignore[type-arg]
    """A dict that remembers which keys were set or deleted since the state was last written; its keys must be
    strings (``TaskDataError`` otherwise)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for key in self:
            check_key(key)
        self.changed: set[Any] = set()
        self.reset = True  # written in full at the next commit (a new or replaced dict)

    def __setitem__(self, key: Any, value: Any) -> None:
        check_key(key)
        super().__setitem__(key, value)
        self.changed.add(key)

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        self.changed.add(key)

    def pop(self, key: Any, *default: Any) -> Any:
        if key in self:
            self.changed.add(key)
        return super().pop(key, *default)

    def popitem(self) -> tuple[Any, Any]:
        key, value = super().popitem()
        self.changed.add(key)
        return key, value

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            check_key(key)
            self.changed.add(key)
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        other = dict(*args, **kwargs)
        for key in other:
            check_key(key)
        super().update(other)
        self.changed.update(other)

    def __ior__(self, other: Any) -> TrackedDict:  # type: ignore[misc]
        self.update(other)
        return self

    def clear(self) -> None:
        super().clear()
        self.changed.clear()
        self.reset = True


@dataclasses.dataclass
class TaskState:
    """The task's own bookkeeping. Keys of the sample dicts must be strings (they are JSON object keys)."""

    meta: dict[str, Any] = dataclasses.field(default_factory=dict)  # fixed task parameters (see --reinit_meta)
    committed_meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    committed_samples: dict[str, Any] = dataclasses.field(default_factory=dict)
    responded_meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    failed_samples: dict[str, Any] = dataclasses.field(default_factory=dict)
    succeeded_samples: dict[str, Any] = dataclasses.field(default_factory=dict)
    output: dict[str, Any] | None = None  # committed state of the output files (managed by the TaskManager)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in TRACKED_FIELDS and type(value) is not TrackedDict:
            value = TrackedDict(value)  # a replaced dict is written in full at the next commit
        super().__setattr__(name, value)

    def to_json(self) -> dict[str, Any]:
        """Everything in one document (the version 1 layout), e.g. for reports and tests."""
        data: dict[str, Any] = {"version": 1, "meta": self.meta}
        data.update({name: dict(getattr(self, name)) for name in TRACKED_FIELDS})
        data["output"] = self.output
        return data


# One upgrade function per version bump: UPGRADES[n] turns a version-n document into version n + 1.
# Version 1 -> 2 needs no function: the inline dicts are loaded and written as a new log at the next commit.
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


class TaskStateFiles:
    """Reads and commits a TaskState as ``<prefix>_task.json`` plus ``<prefix>_task_log_GGGG.jsonl``."""

    def __init__(self, head: Path, store: TaskStore | None = None) -> None:
        self.head = head
        self._store = store or TaskStore()  # a DryRunStore in a dry run
        self.gen = 0
        self.end = 0  # committed size of the current log
        self.base = 0  # size of the compact part the current log generation started with
        self._appender: Appender | None = None
        self._written: dict[str, dict[Any, bytes]] = {name: {} for name in TRACKED_FIELDS}  # in-place-changeable

    def log_path(self, gen: int) -> Path:
        return self.head.with_name(f"{self.head.stem}_log_{gen:04d}.jsonl")

    # ------------------------------------------------------------------ load

    def load(self, *, cleanup: bool = False) -> TaskState:
        """Read the state; ``cleanup`` also deletes a log generation no longer referred to (through the store)."""
        data = _read_head(self.head)
        state = TaskState(meta=data.get("meta", {}), output=data.get("output"))
        if data["version"] == 1:
            for name in TRACKED_FIELDS:
                setattr(state, name, data.get(name, {}))  # reset: written as a new log at the next commit
            self.gen, self.end, self.base = 0, 0, 0
            return state
        log_info = data.get("log")
        if not isinstance(log_info, dict) or not all(isinstance(log_info.get(k), int) for k in ("gen", "end")):
            raise TaskFileError(f"{self.head} has no valid 'log' field. {_HINT}", str(self.head))
        self.gen, self.end, self.base = log_info["gen"], log_info["end"], log_info.get("base", 0)
        dicts: dict[str, dict[str, Any]] = {name: {} for name in TRACKED_FIELDS}
        path = self.log_path(self.gen)
        if self.end:
            for offset, line in read_jsonl(path, 0, self.end, fix=WIPE_TASK_FIX):
                target = dicts.get(str(line.get("f"))) if isinstance(line, dict) else None
                if target is None:
                    raise TaskFileError(f"{path} has an unknown line at byte {offset}. {_HINT}", str(path))
                if line.get("reset"):
                    target.clear()
                target.update(line.get("set") or {})
                for key in line.get("del") or ():
                    target.pop(key, None)
        counts = data.get("counts") or {}
        for name, values in dicts.items():
            if name in counts and counts[name] != len(values):
                raise TaskFileError(
                    f"{path} does not match {self.head} ({name}: {len(values)} entries, expected {counts[name]}). "
                    f"{_HINT}",
                    str(path),
                )
            tracked = TrackedDict(values)
            tracked.reset = False
            object.__setattr__(state, name, tracked)
            self._written[name] = {k: fastjson.dumps(v) for k, v in values.items() if isinstance(v, dict | list)}
        for stale in self.head.parent.iterdir() if cleanup else ():
            if (
                stale != path
                and _LOG_NAME.fullmatch(stale.name, len(self.head.stem))
                and stale.name.startswith(self.head.stem)
            ):  # exact names: tasks may share the folder
                self._store.remove_stray(stale, "left by a task state compaction whose commit never happened")
        return state

    # ------------------------------------------------------------------ commit

    def prepare_commit(self, txn: Transaction, state: TaskState) -> None:
        """Append the changes to the log (fsynced) and stage the head file in ``txn``."""
        if self.gen == 0 or any(getattr(state, name).reset for name in TRACKED_FIELDS):
            lines, compact = [], True
        else:
            lines = [line for name in TRACKED_FIELDS if (line := self._changes(name, getattr(state, name)))]
            grown = self.end + sum(len(line) for line in lines) - self.base
            compact = grown > max(COMPACT_MIN_BYTES, 2 * self.base)  # amortised: at most ~2x the changes
        if compact:
            self._compact(txn, state)
        elif lines:
            appender = self._open_appender()
            appender.append_raw(b"".join(lines))
            self.end = appender.flush(fsync=True)
        counts = {name: len(getattr(state, name)) for name in TRACKED_FIELDS}
        head = {
            "version": TASK_STATE_VERSION,
            "meta": state.meta,
            "output": state.output,
            "counts": counts,
            "log": {"gen": self.gen, "end": self.end, "base": self.base},
        }
        txn.write_json(self.head, head)

    def _changes(self, name: str, values: TrackedDict) -> bytes | None:
        """The log line for one dict's changes since the last commit (None if unchanged); clears the record."""
        written = self._written[name]
        sets: dict[Any, Any] = {}
        dels = []
        for key in values.changed:
            if key in values:
                sets[key] = values[key]
            else:
                dels.append(key)
                written.pop(key, None)
        for key, before in written.items():  # entries that task code may have changed in place
            if key not in sets and key in values and fastjson.dumps(values[key]) != before:
                sets[key] = values[key]
        for key, value in sets.items():
            if isinstance(value, dict | list):
                written[key] = fastjson.dumps(value)
            else:
                written.pop(key, None)
        values.changed.clear()
        if not sets and not dels:
            return None
        line = fastjson.dumps({"f": name, "set": sets, "del": dels}) + b"\n"
        if b"null" in line:  # NaN and infinity are written as null: refuse rather than change the value
            _check_finite(name, sets)
        return line

    def _compact(self, txn: Transaction, state: TaskState) -> None:
        """Stage a new log generation holding each dict in full, and the deletion of the old one."""
        lines = []
        for name in TRACKED_FIELDS:
            values: TrackedDict = getattr(state, name)
            lines.append(fastjson.dumps({"f": name, "reset": True, "set": values}) + b"\n")
            if b"null" in lines[-1]:
                _check_finite(name, values)
            values.changed.clear()
            values.reset = False
            self._written[name] = {k: fastjson.dumps(v) for k, v in values.items() if isinstance(v, dict | list)}
        content = b"".join(lines)
        old = self.log_path(self.gen) if self.gen else None
        self.gen += 1
        self.end = self.base = len(content)
        txn.write_bytes(self.log_path(self.gen), content)
        if old is not None:
            txn.delete(old)
        if self._appender is not None:
            self._appender.close()
            self._appender = None  # reopened on the new generation once this commit is done

    def _open_appender(self) -> Appender:
        if self._appender is None:
            self._appender = self._store.appender(self.log_path(self.gen), self.end, fix=WIPE_TASK_FIX)
        return self._appender

    def close(self) -> None:
        if self._appender is not None:
            self._appender.close()
            self._appender = None


_HINT = (
    "The task files were not modified. Restore them from a backup, or start afresh with --wipe_task (this "
    "forgets all progress)."
)


def _read_head(path: Path) -> dict[str, Any]:
    data = read_json(path, what="task state")
    if not isinstance(data, dict) or not isinstance(data.get("version"), int):
        raise TaskFileError(f"{path} is not a task state file (no version field). {_HINT}", str(path))
    version = data["version"]
    if version > TASK_STATE_VERSION:
        raise TaskFileError(
            f"{path} was written by a newer gpt_batch_api (task state version {version}, this one reads up to "
            f"{TASK_STATE_VERSION}). Upgrade gpt_batch_api to continue this task.",
            str(path),
        )
    while version < TASK_STATE_VERSION and version in UPGRADES:
        data = UPGRADES[version](data)
        version = data["version"]
    # Always written; one missing (an edit by hand) would silently empty the meta or forget the committed output.
    required = ("meta",) if version == 1 else ("meta", "output", "counts", "log")
    if missing := [name for name in required if name not in data]:
        raise TaskFileError(
            f"{path} lacks the field {', '.join(map(repr, missing))}: it was changed outside gpt_batch_api. {_HINT}",
            str(path),
        )
    fields = ("meta",) + (TRACKED_FIELDS if version == 1 else ())
    for name in fields:
        if not isinstance(data.get(name, {}), dict):
            raise TaskFileError(f"{path}: field {name!r} must be a JSON object. {_HINT}", str(path))
    document: dict[str, Any] = data
    return document


def load_task_state(path: str | Path) -> TaskState:
    """Read a task's state (``<task_dir>/<prefix>_task.json`` and its log) without changing any file."""
    return TaskStateFiles(Path(path)).load()


def _check_finite(field: str, values: dict[Any, Any]) -> None:
    """Raise TaskDataError if a value holds NaN or infinity (JSON has neither: they would come back as None)."""

    def finite(value: Any) -> bool:
        if isinstance(value, float):
            return math.isfinite(value)
        if isinstance(value, dict):
            return all(finite(v) for v in value.values())
        if isinstance(value, list | tuple):
            return all(finite(v) for v in value)
        return True

    for key, value in values.items():
        if not finite(value):
            raise TaskDataError(
                f"The task state's {field}[{key!r}] holds NaN or infinity ({value!r}), which JSON cannot keep: it "
                "would come back as None after a restart. Store None, a string or a finite number instead. Nothing "
                "of this commit was written."
            )
