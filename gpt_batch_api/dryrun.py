"""The parts a dry run is built from: they say what they would send, and send nothing.

A dry run is not a flag tested through the engine: the requester is given these parts (and a ``DryRunStore``,
see store/task_store.py) where it is built, and runs the same code as a real run. Nothing here reaches the
backend or the direct transport, so a dry run makes no API call and costs nothing.
"""

from __future__ import annotations

import logging

from .direct_batches import DirectRunner
from .remote import RemoteBatches
from .requester_state import BatchState

__all__ = ["DryRunDirectRunner", "DryRunRemoteBatches"]

log = logging.getLogger(__name__)


class DryRunRemoteBatches(RemoteBatches):
    """Logs the pushes the limits allow; polls, settles, cancels and deletes nothing on the remote."""

    def push_batches(self) -> int:
        for batch in self._pushable():
            log.info("Dry run: would push batch %d (%d requests)", batch.id, batch.num_requests)
        return 0  # nothing changed: not progress

    def update_remote(self) -> int:
        return 0

    def resolve_pushing(self) -> None:
        pass

    def cleanup_remote(self) -> None:
        pass

    def cancel(self, batch: BatchState) -> None:
        pass


class DryRunDirectRunner(DirectRunner):
    """Logs the direct batches the limits allow; starts and sends none."""

    def _start(self, batch: BatchState) -> bool:
        if batch.push_started_at is None and not self._within_budget(batch):
            return False
        log.info("Dry run: would send direct batch %d (%d requests)", batch.id, batch.num_requests)
        return False
