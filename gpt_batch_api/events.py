"""Named lifecycle events: the engine emits, monitors (wandb, progress bars, logs) subscribe.

The engine never imports a monitor. A subscriber that raises is logged once and then ignored, so a
monitoring failure can never break the work or damage task files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

RUN_STARTED = "run_started"  # task, config
RUN_FINISHED = "run_finished"  # status, message
STATUS = "status"  # metrics (flat dict), step; emitted after every committed step
REQUESTS_COMMITTED = "requests_committed"  # num, total_queued
BATCH_CREATED = "batch_created"  # batch_id, num_requests, ktokens, cost, direct
BATCH_PUSHED = "batch_pushed"  # batch_id, remote_id, num_requests
REMOTE_PROGRESS = "remote_progress"  # batches: list of {batch_id, remote_id, status, completed, failed, total}
BATCH_FINISHED = "batch_finished"  # batch_id, status
BATCH_PROCESSED = "batch_processed"  # batch_id, stats
DIRECT_PROGRESS = "direct_progress"  # batch_id, done, total
GENERATION_PROGRESS = "generation_progress"  # done, total
LIMIT_REACHED = "limit_reached"  # limit, message
WAITING = "waiting"  # seconds, reason

Subscriber = Callable[[str, dict[str, Any]], None]


class EventBus:
    """Synchronous fan-out of ``(name, fields)`` to subscribers, isolating their failures."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._broken: set[int] = set()

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)

    def emit(self, name: str, **fields: Any) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(name, fields)
            except Exception as exc:  # a monitor must never break the work
                if id(subscriber) not in self._broken:
                    self._broken.add(id(subscriber))
                    log.warning(
                        "Monitoring subscriber %r failed on %s (ignored from now on): %s", subscriber, name, exc
                    )
