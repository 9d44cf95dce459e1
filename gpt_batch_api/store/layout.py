"""Every file name in the task directory, decided in one place (see docs/DESIGN.md)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

__all__ = ["TaskLayout"]


@dataclasses.dataclass(frozen=True)
class TaskLayout:
    """Paths of the files that belong to the task ``prefix`` in ``task_dir``."""

    task_dir: Path
    prefix: str

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
        names = (f"{self.prefix}_queue_", f"{self.prefix}_batch_")
        return sorted(
            self.task_dir / entry.name
            for entry in os.scandir(self.task_dir)
            if entry.name.startswith(names) and entry.name.endswith(".jsonl")
        )
