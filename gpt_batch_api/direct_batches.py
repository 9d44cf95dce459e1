"""Running a batch through the concurrent direct API, keeping every paid answer.

Each answer is appended to the batch's results journal as it arrives (flushed at once, so a SIGKILL
cannot lose it; fsynced at most every ``FSYNC_INTERVAL`` seconds and at the end, to bound what a power
loss can lose without an fsync per request). On restart only the requests without an answer are sent.
When every request has an answer, the batch is processed exactly like a remote one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from .direct import DirectExecutor
from .events import DIRECT_PROGRESS
from .gc_control import gc_paused
from .limits import Amounts
from .requester_base import RequesterBase
from .requester_state import BatchState, BatchStatus
from .results import BatchResult
from .store import fastjson
from .store.atomic import crash_point, raise_as_disk_error
from .store.jsonl import corrupt_line_error, read_jsonl

__all__ = ["DirectBatchesMixin"]

log = logging.getLogger(__name__)

FSYNC_INTERVAL = 0.2


class DirectBatchesMixin(RequesterBase):
    """Direct-API execution of DIRECT batches for GPTRequester."""

    def run_direct_batches(self, handler: Callable[[BatchResult], None]) -> int:
        """Run (or resume) each direct batch and process it once complete; returns how many were processed."""
        done = 0
        if self.opts.force_direct:
            self._convert_local_to_direct()
        for batch in self.S.batches_in(BatchStatus.DIRECT):
            if self.stop_check():
                break
            if not self._start_direct(batch):
                break
            if not self._execute_direct(batch):
                break
            with gc_paused():  # see ProcessingMixin.process_batches
                self.process_batch(batch, handler)
            done += 1
        return done

    def _direct_executor(self) -> DirectExecutor:
        """The executor of this session's direct batches (made on first use; its connections stay open)."""
        if self._executor is None:
            self._executor = DirectExecutor(
                self.async_client_factory(),
                concurrency=self.opts.direct_concurrency,
                stop_check=lambda: self.stop_check(),
            )
        return self._executor

    def close_direct_executor(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.close()

    def _convert_local_to_direct(self) -> None:
        """--force_direct on a task with local batches: run them through the direct API instead."""
        changed = False
        for batch in self.S.batches_in(BatchStatus.LOCAL):
            log.info("Batch %d will use the direct API (--force_direct)", batch.id)
            batch.status = BatchStatus.DIRECT
            changed = True
        if changed:
            self.commit()

    def _start_direct(self, batch: BatchState) -> bool:
        """Count the batch against the session/task limits the first time it runs; False if a limit blocks it."""
        if batch.push_started_at is not None:
            return True
        reason = self.spend_blocker(Amounts(batch.num_requests, batch.tokens_input, batch.cost, batch.size))
        self.note_blocked(reason)
        if reason is not None:
            return False
        if self.dryrun:
            log.info("Dry run: would send direct batch %d (%d requests)", batch.id, batch.num_requests)
            return False
        batch.push_started_at = time.time()
        totals = self.S.totals
        totals.pushed_requests += batch.num_requests
        totals.pushed_tokens += batch.tokens_input
        totals.pushed_cost += batch.cost
        totals.direct_batches += 1
        self.session.add(batch.num_requests, batch.tokens_input, batch.cost, batch.size)
        self.commit()
        return True

    def _execute_direct(self, batch: BatchState) -> bool:
        """Send the unanswered requests of ``batch``; True once every request has an answer."""
        self._check_batch_file(batch)  # damaged from outside: refuse before sending (and paying for) anything
        journal_path = self.layout.batch_results(batch.id)
        answered = set()
        if journal_path.exists():
            for offset, line in read_jsonl(journal_path):
                if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
                    raise corrupt_line_error(journal_path, offset, ValueError("not a result line"))
                answered.add(line["custom_id"])
        pending = [
            (line["custom_id"], line["body"])
            for _, line in read_jsonl(self.layout.batch_input(batch.id))
            if line["custom_id"] not in answered
        ]
        if not pending:
            return True
        total, done = batch.num_requests, batch.num_requests - len(pending)
        executor = self._direct_executor()
        with open(journal_path, "ab") as journal:
            last_sync = time.monotonic()

            def on_result(line: dict[str, Any]) -> None:
                nonlocal last_sync
                try:
                    journal.write(fastjson.dumps(line) + b"\n")
                    journal.flush()  # in the OS now: survives a kill of this process
                    crash_point("direct_after_result")
                    if time.monotonic() - last_sync >= FSYNC_INTERVAL:
                        os.fsync(journal.fileno())
                        last_sync = time.monotonic()
                except OSError as exc:  # a torn last line is dropped by recover_jsonl on the next start
                    raise_as_disk_error(journal_path, exc)

            try:
                summary = executor.run(
                    self.endpoint.path,
                    pending,
                    on_result,
                    on_progress=lambda n, _t: self.events.emit(
                        DIRECT_PROGRESS, batch_id=batch.id, done=done + n, total=total
                    ),
                )
            finally:
                with contextlib.suppress(OSError):  # a disk error is already on its way up
                    journal.flush()
                    os.fsync(journal.fileno())
        if summary.stopped:
            log.info(
                "Direct batch %d paused with %d of %d answered; rerun to continue",
                batch.id,
                done + summary.num_ok + summary.num_error_lines,
                total,
            )
            return False
        return True
