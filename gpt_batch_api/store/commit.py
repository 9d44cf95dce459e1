"""One commit for every file a task changes: the participants stage their changes in one ``Transaction``.

A commit is the only moment the task's files change meaning (see docs/DESIGN.md). The requester (queue and
requester state) always takes part; the task (its output file and task state) joins when its in-memory
state changed with the requester's, e.g. when requests are committed or a batch is processed. The order is
fixed: the task first, then the requester, then, once the journal is applied, each participant's
``committed`` in the same order.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from .task_store import TaskStore
from .transaction import Transaction

__all__ = ["CommitCoordinator", "CommitParticipant"]


class CommitParticipant(Protocol):
    def prepare_commit(self, txn: Transaction) -> None:
        """Make appended bytes durable (they stay beyond the committed sizes, so a crash drops them) and stage
        every write, rename and delete in ``txn``. Nothing changes meaning until the transaction commits; if it
        raises, the transaction is aborted and the task's files are as they were."""
        ...

    def committed(self) -> None:
        """After the transaction is applied: let go of what it replaced (e.g. continue in a rotated file)."""
        ...


class CommitCoordinator:
    """Commits the requester's and, when asked, the task's changes in one transaction."""

    def __init__(
        self,
        journal: str | os.PathLike[str],
        requester: CommitParticipant,
        task: CommitParticipant | None = None,
        store: TaskStore | None = None,
    ) -> None:
        self._journal = Path(journal)
        self._store = store or TaskStore()  # a dry run's transaction applies nothing
        self._requester = requester
        self._task = task

    def commit(self, *, with_task: bool = False) -> None:
        participants = [self._task, self._requester] if with_task and self._task is not None else [self._requester]
        with self._store.transaction(self._journal) as txn:
            for participant in participants:
                participant.prepare_commit(txn)
        for participant in participants:
            participant.committed()
