"""Every file name in the task directory, decided in one place (see docs/DESIGN.md)."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from ..errors import ConfigError
from .atomic import TEMP_MARK

__all__ = ["TaskLayout", "check_prefix"]

# What follows "<prefix>" in the name of each file a task owns. Tasks may share a folder, and one prefix
# may begin with another ("run" and "run_batch"): a task recognises a file as its own only if the whole
# name is its prefix followed by one of these, never by a prefix match or a glob.
OWN_SUFFIXES = re.compile(
    r"(\.lock|\.lock\.holder|_task\.json|_task_log_\d{4}\.jsonl|_state\.json|_journal\.json|_queue_\d{4}\.jsonl"
    r"|_batch_\d{6}(?:_info|_results|_errors)?\.jsonl|_output\.json|_output\.jsonl|_output_part\d{3}of\d{3}\.jsonl)"
)
REQUESTER_SUFFIXES = re.compile(r"_queue_\d{4}\.jsonl|_batch_\d{6}(?:_info|_results|_errors)?\.jsonl")


def check_prefix(prefix: str) -> None:
    """Refuse a task prefix that could name files outside the task folder or be confused with a path."""
    bad = (
        not prefix
        or prefix in (".", "..")
        or ".." in prefix
        or any(sep in prefix for sep in {"/", "\\", os.sep, os.altsep or "/"})
        or "\0" in prefix
        or prefix.startswith(".")
    )
    if bad:
        raise ConfigError(
            f"The task prefix {prefix!r} is not a plain file name prefix (it is empty, starts with a dot, or holds a "
            "path separator or '..'). Use letters, digits, '-' and '_' only, and put the folder in --task_dir."
        )


@dataclasses.dataclass(frozen=True)
class TaskLayout:
    """Paths of the files that belong to the task ``prefix`` in ``task_dir``."""

    task_dir: Path
    prefix: str

    def __post_init__(self) -> None:
        check_prefix(self.prefix)

    def owns(self, name: str, suffixes: re.Pattern[str] = OWN_SUFFIXES) -> bool:
        """Whether the file ``name`` (no folder) is one of this task's files: exact prefix + known pattern."""
        return name.startswith(self.prefix) and suffixes.fullmatch(name, len(self.prefix)) is not None

    def owns_temp(self, name: str) -> bool:
        """Whether ``name`` is a temp file staged for one of this task's files (temp names start with the target's)."""
        target, mark, _ = name.partition(TEMP_MARK)
        return bool(mark) and self.owns(target)

    def own_files(self) -> list[Path]:
        """Every file of this task now in the folder (temp files excluded)."""
        if not self.task_dir.is_dir():
            return []
        return sorted(self.task_dir / e.name for e in os.scandir(self.task_dir) if self.owns(e.name))

    def _path(self, suffix: str) -> Path:
        return self.task_dir / f"{self.prefix}{suffix}"

    @property
    def lock(self) -> Path:
        return self._path(".lock")

    @property
    def task_state(self) -> Path:
        return self._path("_task.json")

    @property
    def requester_state(self) -> Path:
        return self._path("_state.json")

    @property
    def journal(self) -> Path:
        return self._path("_journal.json")

    @property
    def output_base(self) -> str:
        return str(self._path("_output"))

    def queue(self, gen: int) -> Path:
        return self._path(f"_queue_{gen:04d}.jsonl")

    def batch_input(self, batch_id: int) -> Path:
        return self._path(f"_batch_{batch_id:06d}.jsonl")

    def batch_info(self, batch_id: int) -> Path:
        return self._path(f"_batch_{batch_id:06d}_info.jsonl")

    def batch_results(self, batch_id: int) -> Path:
        """Result lines: the downloaded output file, or the direct API's results journal."""
        return self._path(f"_batch_{batch_id:06d}_results.jsonl")

    def batch_errors(self, batch_id: int) -> Path:
        """The downloaded error file of a remote batch."""
        return self._path(f"_batch_{batch_id:06d}_errors.jsonl")

    def batch_files(self, batch_id: int) -> list[Path]:
        return [
            self.batch_input(batch_id),
            self.batch_info(batch_id),
            self.batch_results(batch_id),
            self.batch_errors(batch_id),
        ]

    def requester_files(self) -> list[Path]:
        """Queue and batch files currently on disk (state and journal excluded)."""
        if not self.task_dir.is_dir():
            return []
        return sorted(
            self.task_dir / entry.name
            for entry in os.scandir(self.task_dir)
            if self.owns(entry.name, REQUESTER_SUFFIXES)
        )
