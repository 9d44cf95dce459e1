"""Running batches through the concurrent direct API as one continuous flow, keeping every paid answer.

A direct batch is the unit of processing, not of sending: each one is counted against the limits and
committed as started, then handed to the session's ``DirectExecutor``, which keeps ``--direct_concurrency``
calls in flight across every submitted batch and appends each answer to its batch's results journal (fsynced
in groups). A batch whose every answer is on disk is processed exactly like a remote one, while the calls of
the next batches go on. On restart only the requests without a recorded answer are sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from .batch_files import check_batch_file
from .budget import Budget, SessionUsage, amounts_of
from .direct import STOP_AT_ONCE_S, DirectExecutor
from .direct_transports import DirectTransport
from .events import DIRECT_PROGRESS, EventBus
from .gc_control import gc_paused
from .requester_options import RequesterOptions
from .requester_state import BatchState, BatchStatus, RequesterState
from .results import BatchResult
from .store.jsonl import corrupt_line_error, read_jsonl
from .store.layout import TaskLayout

__all__ = ["DirectRunner"]

log = logging.getLogger(__name__)


class DirectRunner:
    """Direct-API execution of the DIRECT batches of one task (see the module docstring)."""

    def __init__(
        self,
        *,
        opts: RequesterOptions,
        layout: TaskLayout,
        endpoint_path: str,
        state: Callable[[], RequesterState],
        budget: Budget,
        usage: SessionUsage,
        events: EventBus,
        transport_factory: Callable[[], Callable[[], DirectTransport]],
        process_batch: Callable[[BatchState, Callable[[BatchResult], None]], BatchResult],
        commit: Callable[[], None],
        stop_check: Callable[[], bool],
    ) -> None:
        self._opts = opts
        self._layout = layout
        self._endpoint_path = endpoint_path
        self._state = state  # the requester state is replaced when it is loaded: read it through this
        self._budget = budget
        self._usage = usage
        self._events = events
        self._transport_factory = transport_factory  # called once, when the first batch is sent
        self._process_batch = process_batch
        self._commit = commit
        self._stop_check = stop_check
        self._executor: DirectExecutor | None = None  # made on first use

    @property
    def lookahead(self) -> int:
        """Requests kept cut into direct batches and not sent yet, so that a free slot never waits for the
        main thread to cut the next batch."""
        return 2 * self._opts.direct_concurrency

    def backlog(self) -> int:
        """Requests of direct batches that are not sent yet (submitted to the flow or not)."""
        submitted = self._executor.submitted if self._executor is not None else set()
        waiting = sum(b.num_requests for b in self._state().batches_in(BatchStatus.DIRECT) if b.id not in submitted)
        return waiting + (self._executor.unsent if self._executor is not None else 0)

    def tail_horizon(self) -> int:
        """Requests the flow answers while its slowest call so far is answered (see ``DirectSummary.tail_horizon``)."""
        return self._executor.summary.tail_horizon(time.monotonic()) if self._executor is not None else 0

    @property
    def busy(self) -> bool:
        """Whether direct calls are under way (or answered batches wait to be processed)."""
        return self._executor is not None and self._executor.busy

    def run(self, handler: Callable[[BatchResult], None]) -> int:
        """Hand the direct batches to the flow and process each one that is complete; returns how many were
        processed. Does not wait for calls (see ``wait``)."""
        if self._opts.force_direct:
            self.convert_local_to_direct()
        S = self._state()
        for batch in S.batches_in(BatchStatus.DIRECT):
            if self._executor is not None and batch.id in self._executor.submitted:
                continue
            if self._stop_check() or not self._start(batch):
                break
            self._submit(batch)
        if self._executor is None:
            return 0
        done = 0
        for batch_id in self._executor.completed():
            with gc_paused():  # see BatchProcessor.process_batches
                self._process_batch(S.batch(batch_id), handler)
            self._usage.direct_processed += 1
            done += 1
        self._executor.check()
        return done

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` for a direct batch to complete (showing the calls' progress)."""
        if self._executor is None:
            return
        self._executor.wait(timeout)
        for batch_id, done, total in self._executor.progress():
            self._events.emit(DIRECT_PROGRESS, batch_id=batch_id, done=done, total=total)

    def _direct_executor(self) -> DirectExecutor:
        """The executor of this session's direct batches (made on first use; its connections stay open)."""
        if self._executor is None:
            self._executor = DirectExecutor(
                self._transport_factory(),
                concurrency=self._opts.direct_concurrency,
                stop_check=self._stop_check,
            )
        return self._executor

    def close(self, error: BaseException | None = None) -> None:
        """Stop the flow: the answers in flight are recorded (after a second Ctrl+C, those that come within
        ``STOP_AT_ONCE_S``)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.close(grace=STOP_AT_ONCE_S if isinstance(error, KeyboardInterrupt) else None)

    def convert_local_to_direct(self) -> None:
        """--force_direct on a task with local batches: run them through the direct API instead."""
        changed = False
        for batch in self._state().batches_in(BatchStatus.LOCAL):
            log.info("Batch %d will use the direct API (--force_direct)", batch.id)
            batch.move_to(BatchStatus.DIRECT)
            changed = True
        if changed:
            self._commit()

    def _start(self, batch: BatchState) -> bool:
        """Count the batch against the session/task limits the first time it runs; False if a limit blocks it."""
        if batch.push_started_at is not None:
            return True
        if not self._within_budget(batch):
            return False
        batch.push_started_at = time.time()
        self._budget.charge(batch)
        self._commit()  # started, durably, before any call of it is sent
        return True

    def _within_budget(self, batch: BatchState) -> bool:
        """Whether the session/task limits allow ``batch`` (the one that blocks it is noted for the status)."""
        reason = self._budget.blocker(amounts_of(batch))
        self._budget.note_blocked(reason)
        return reason is None

    def _submit(self, batch: BatchState) -> None:
        """Hand the requests of ``batch`` that have no recorded answer to the flow."""
        check_batch_file(self._layout, batch)  # damaged from outside: refuse before sending (and paying for) anything
        journal_path = self._layout.batch_results(batch.id)
        answered = set()
        if journal_path.exists():
            for offset, line in read_jsonl(journal_path):
                if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
                    raise corrupt_line_error(journal_path, offset, ValueError("not a result line"))
                answered.add(line["custom_id"])
        pending = [
            (line["custom_id"], line["body"])
            for _, line in read_jsonl(self._layout.batch_input(batch.id))
            if line["custom_id"] not in answered
        ]
        if answered:
            log.info(
                "Direct batch %d: %d of %d answered before; sending the rest",
                batch.id,
                len(answered),
                len(pending) + len(answered),
            )
        self._direct_executor().submit(batch.id, journal_path, self._endpoint_path, pending)
