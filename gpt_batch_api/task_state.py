"""The task state file (``<prefix>_task.json``): what the task has committed, answered, passed and failed.

Written only inside the requester's transactions, so it always agrees with the queue, the batches and
the output files (whose committed sizes it records under ``output``). Versioned: an older file is
upgraded on load, a newer one is refused with a message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import TaskFileError
from .store.atomic import read_json

__all__ = ["TASK_STATE_VERSION", "TaskState", "load_task_state"]

TASK_STATE_VERSION = 1
_FIELDS = (
    "meta",
    "committed_meta",
    "committed_samples",
    "responded_meta",
    "failed_samples",
    "succeeded_samples",
)


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

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"version": TASK_STATE_VERSION}
        data.update({name: getattr(self, name) for name in _FIELDS})
        data["output"] = self.output
        return data


# One upgrade function per version bump: UPGRADES[n] turns a version-n document into version n + 1.
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def load_task_state(path: Path) -> TaskState:
    """Load (and upgrade) the task state; raise TaskFileError, leaving the file untouched, if it is unusable."""
    data = read_json(path, what="task state")
    hint = (
        "The file was not modified. Restore it from a backup, or move it away and start afresh with "
        "--wipe_task (this forgets all progress)."
    )
    if not isinstance(data, dict) or not isinstance(data.get("version"), int):
        raise TaskFileError(f"{path} is not a task state file (no version field). {hint}", str(path))
    version = data["version"]
    if version > TASK_STATE_VERSION:
        raise TaskFileError(
            f"{path} was written by a newer gpt_batch_api (task state version {version}, this one reads up to "
            f"{TASK_STATE_VERSION}). Upgrade gpt_batch_api to continue this task.",
            str(path),
        )
    while version < TASK_STATE_VERSION:
        data = UPGRADES[version](data)
        version = data["version"]
    for name in _FIELDS:
        if not isinstance(data.get(name, {}), dict):
            raise TaskFileError(f"{path}: field {name!r} must be a JSON object. {hint}", str(path))
    return TaskState(**{name: data.get(name, {}) for name in _FIELDS}, output=data.get("output"))
