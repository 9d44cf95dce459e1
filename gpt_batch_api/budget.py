"""What may still be sent: the remote, session and task budgets, and the one place a batch is charged to them.

A batch is charged once when it is sent (pushed to the remote, or its first direct call about to go out) and
refunded if its requests got no usable answer (congestion, a refusal of the configuration, a batch adopted by
mistake): the task totals in the requester state and this session's usage move together, so that a rerun
neither buys a batch twice nor forgets that it was bought.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from .events import LIMIT_REACHED, EventBus
from .limits import Amounts, Limits
from .requester_state import BatchState, BatchStatus, RequesterState

__all__ = ["Budget", "SessionUsage", "amounts_of"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SessionUsage:
    """The counters of this session (one run) that the requester's parts share."""

    pushed: Amounts = dataclasses.field(default_factory=Amounts)  # sent (remote or direct) during this session
    processed_failed: int = 0  # failed batches force-processed this session
    direct_processed: int = 0  # direct batches processed this session (their answers were usable)


def amounts_of(batch: BatchState) -> Amounts:
    """What sending ``batch`` spends."""
    return Amounts(batch.num_requests, batch.tokens_input, batch.cost, batch.size)


class Budget:
    """The remote, session and task limits against what was sent, and the charge/refund of a batch."""

    def __init__(
        self,
        limits: Limits,
        state: Callable[[], RequesterState],
        usage: SessionUsage,
        events: EventBus,
        option_text: Callable[[str], str],
    ) -> None:
        self._limits = limits
        self._state = state  # the requester state is replaced when it is loaded: read it through this
        self._usage = usage
        self._events = events
        self._option_text = option_text
        self.last_block_reason: str | None = None  # the limit that last stopped sending (None: none did)

    def blocker(self, this: Amounts, *, remote: Amounts | None = None) -> str | None:
        """The option (remote, session or task limit) that spending ``this`` would exceed, or None."""
        limits = self._limits
        ts, ms = limits.max_token_safety, limits.max_mb_safety
        totals = self._state().totals
        task = Amounts(totals.pushed_requests, totals.pushed_tokens, totals.pushed_cost, 0)
        checks = [(limits.session, self._usage.pushed), (limits.task, task)]
        if remote is not None:
            checks.insert(0, (limits.remote, remote))
        for limit, used in checks:
            exceeded = limit.exceeded_by(used + this, ts, ms)
            if exceeded:
                return exceeded
        return None

    def note_blocked(self, reason: str | None) -> None:
        """Say once which limit stops sending (``reason``: the option, or None when nothing blocks)."""
        if reason is not None and reason != self.last_block_reason:
            message = f"Not sending more requests for now: {self._option_text(reason)} reached"
            log.info(message)
            self._events.emit(LIMIT_REACHED, limit=reason, message=message)
        self.last_block_reason = reason

    def charge(self, batch: BatchState) -> None:
        """Count ``batch`` as sent: in the task totals (as a direct or a pushed batch, by its status) and in
        this session's usage. The caller commits."""
        self._count(batch, 1)

    def refund(self, batch: BatchState) -> None:
        """Undo ``charge`` for a batch whose requests got no usable answer (before its status changes). The
        caller commits."""
        self._count(batch, -1)

    def _count(self, batch: BatchState, sign: int) -> None:
        totals = self._state().totals
        totals.pushed_requests += sign * batch.num_requests
        totals.pushed_tokens += sign * batch.tokens_input
        totals.pushed_cost += sign * batch.cost
        if batch.status == BatchStatus.DIRECT:
            totals.direct_batches += sign
        else:
            totals.pushed_batches += sign
        self._usage.pushed.add(
            sign * batch.num_requests, sign * batch.tokens_input, sign * batch.cost, sign * batch.size
        )
