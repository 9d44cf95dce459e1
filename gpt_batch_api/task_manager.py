"""TaskManager: subclass it to say which requests to make and what to do with each answer.

The contract (each hook's docstring says when it is called and what it may change):

- ``generate_requests()``: add requests for samples not yet committed and commit them (in chunks) with
  ``commit_requests()``; return True once nothing is left to generate.
- ``commit_cached_request(cached_req)``: record, in ``self.T``, that this request is now committed.
- ``process_batch_result(result)``: update ``self.T`` and the output ``self.D`` from a finished batch.
- ``wipe_unfinished(wipe_failed)``: forget committed-but-unanswered samples (for the ``--wipe_*`` modes).
- optional: ``cached_request_keys``, ``validate_state``, ``on_task_enter``, ``on_task_exit``,
  ``postprocess_output_data``.

Every change to ``self.T`` and ``self.D`` becomes durable together with the requester's state in one
transaction (at each commit of requests and each processed batch), so a kill at any instant leaves a
consistent task: on restart a batch is processed exactly once, and no sample is lost or duplicated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from .errors import ConfigError, StopRequested, TaskFileError
from .events import GENERATION_PROGRESS, RUN_FINISHED, RUN_STARTED, STATUS, WAITING, EventBus
from .gc_control import fewer_gc_passes
from .gpt_requester import GPTRequester
from .output_files import TaskOutputFile
from .redact import redact
from .request import CachedGPTRequest, GPTRequest
from .requester_state import BatchStatus
from .results import BatchResult
from .status import status_report
from .store.jsonl import WIPE_TASK_FIX
from .store.layout import TaskLayout
from .store.signals import StopMonitor
from .store.transaction import Transaction
from .task_state import TaskState, TaskStateFiles

__all__ = ["TaskManager"]

log = logging.getLogger(__name__)

POSTPROCESS_MODES = ("never", "if_written", "always")
FIRST_POLL_DELAY = 0.25  # so that small batches are noticed within about a second
DIRECT_WAIT_S = 0.1  # the loop's wait while direct calls run (it wakes at once when a batch is answered)

OutputT = TypeVar("OutputT", bound=TaskOutputFile)


class TaskFiles:
    """The task's side of the commits it joins: its output file first (the task state records how much of it
    is committed), then its state files."""

    def __init__(
        self,
        *,
        output: Callable[[], TaskOutputFile],
        state_files: Callable[[], TaskStateFiles],
        state: Callable[[], TaskState],
    ) -> None:
        self._output = output  # getters: the task makes these after the requester, and again when it wipes
        self._state_files = state_files
        self._state = state
        self._wipe_output = False

    def wipe_output_on_commit(self) -> None:
        """Delete every output file in the next commit (--wipe_task): with the state that forgets them, so that a
        crash leaves either the old task whole or the wiped one."""
        self._wipe_output = True

    def prepare_commit(self, txn: Transaction) -> None:
        output, state = self._output(), self._state()
        if self._wipe_output:
            output.wipe(txn)
        state.output = output.prepare_commit(txn)
        self._state_files().prepare_commit(txn, state)

    def committed(self) -> None:
        self._wipe_output = False


class TaskManager(Generic[OutputT]):
    """Runs one task: the step loop, the task state, the output file, and the requester underneath.

    Subclass ``TaskManager[DataclassListOutputFile[Row]]`` (the output file class your ``output_factory``
    makes) so that type checkers know ``self.D``; a bare ``TaskManager`` subclass works too, untyped."""

    def __init__(
        self,
        task_dir: str,
        name_prefix: str,
        output_factory: Callable[[str, bool], OutputT],
        init_meta: dict[str, Any] | None = None,
        *,
        run: bool = True,
        postprocess_output: str = "if_written",
        wipe_failed: bool = False,
        reinit_meta: bool = False,
        progress: bool | None = None,
        wandb: bool | None = None,
        wandb_dir: str | None = None,
        wandb_entity: str | None = None,
        wandb_project: str = "gpt_batch_api",
        wandb_run_id: str | None = None,
        wandb_name: str | None = None,
        wandb_group: str | None = None,
        **gpt_requester_kwargs: Any,
    ) -> None:
        if postprocess_output not in POSTPROCESS_MODES:
            raise ConfigError(f"--postprocess_output must be one of {', '.join(POSTPROCESS_MODES)}.")
        if wipe_failed:
            gpt_requester_kwargs["wipe_requests"] = True  # wiping failed samples implies wiping requests
        options = gpt_requester_kwargs.get("options")
        wiping = reinit_meta or any(
            gpt_requester_kwargs.get(name, getattr(options, name, False)) for name in ("wipe_requests", "wipe_task")
        )
        if not run and not wiping and TaskLayout(Path(task_dir), name_prefix).task_state.exists():
            # --no_run on a task that exists only shows the status: read the files as a dry run does, without
            # the lock (a running process may hold it for hours) and without changing anything. (On a new
            # task it creates the task and fixes its meta, as the README's first steps do.)
            gpt_requester_kwargs["dryrun"] = True
        self.events = EventBus()
        # The task's files join the requester's commits; the objects behind them are made below or on entering.
        self._task_files = TaskFiles(output=lambda: self.D, state_files=lambda: self._state_files, state=lambda: self.T)
        self.GR = GPTRequester(
            task_dir, name_prefix, events=self.events, task_files=self._task_files, **gpt_requester_kwargs
        )
        self.run_flag = run
        self.postprocess_output = postprocess_output
        self.wipe_failed = wipe_failed
        self.reinit_meta = reinit_meta
        self.init_meta = dict(init_meta or {})
        self.progress = progress
        self.wandb_enabled = wandb
        self.wandb_options: dict[str, str | None] = {
            "dir": wandb_dir,
            "entity": wandb_entity,
            "project": wandb_project,
            "run_id": wandb_run_id,
            "name": wandb_name,
            "group": wandb_group or type(self).__name__,
        }
        self.T = TaskState()
        self._state_files = TaskStateFiles(self.GR.layout.task_state, self.GR.store)
        self.D: OutputT = output_factory(self.GR.layout.output_base, self.GR.dryrun)
        self.step_num = 0
        self._output_written = False
        self._stop: StopMonitor | None = None
        self._next_poll = 0.0  # time.monotonic() of the next remote poll while direct calls run

    # ------------------------------------------------------------------ hooks for subclasses

    def on_task_enter(self) -> None:
        """Called once the task is locked and loaded, before any step. May prepare data; must not commit."""

    def on_task_exit(self) -> None:
        """Called when the run ends (normally, on error, or on Ctrl+C). Release what on_task_enter took."""

    def validate_state(self, *, clean: bool) -> None:
        """Check ``self.T`` for consistency (raise on problems). ``clean``: no request is in flight."""

    def generate_requests(self) -> bool:
        """Add requests for samples not committed yet (``self.add_request``) and commit them in chunks.

        Call ``self.commit_requests()`` every few hundred or thousand requests; if it returns True the
        pipeline is congested: return False at once (you will be called again later). Return True
        when every request the task needs has been committed.
        """
        raise NotImplementedError

    def commit_cached_request(self, cached_req: CachedGPTRequest) -> None:
        """Record in ``self.T`` (e.g. ``committed_samples``, ``committed_meta``) that this request is committed.

        Called for each request inside ``commit_requests()``; its changes are saved in the same transaction.
        """
        raise NotImplementedError

    def cached_request_keys(self, cached_reqs: list[CachedGPTRequest]) -> set[Any] | None:
        """Optional: the sample keys of requests added but not yet committed (see ``pool_keys``)."""
        return None

    def process_batch_result(self, result: BatchResult) -> bool:
        """Update ``self.T`` and ``self.D`` from each ``ResultInfo`` in ``result.infos``; return True if ``self.D``
        was written to.

        ``info.retry`` says whether the requester will queue the request again; a task may reject an answer
        with ``info.request_retry(...)``. Samples that will not be retried and have no usable answer
        should go to ``self.T.failed_samples``. A big batch's response bodies are read from its results file
        as they are used (``info.resp_info.body``), so that not all are in memory at once: take what you need
        here, as that file is deleted once this batch is committed.
        """
        raise NotImplementedError

    def wipe_unfinished(self, wipe_failed: bool) -> bool:
        """Forget samples that are committed but not answered (and the failed ones if ``wipe_failed``), so
        they are generated again. Return True if ``self.D`` was changed."""
        raise NotImplementedError

    def postprocess_output_data(self) -> None:
        """Optional: final changes to ``self.D`` once the task is complete (see ``--postprocess_output``)."""

    # ------------------------------------------------------------------ helpers for subclasses

    def add_request(self, req: GPTRequest) -> CachedGPTRequest:
        return self.GR.add_request(req)

    def add_requests(self, reqs: list[GPTRequest]) -> list[CachedGPTRequest]:
        return self.GR.add_requests(reqs)

    @property
    def num_pooled_requests(self) -> int:
        """Requests added since the last commit: commit when this reaches your chunk size."""
        return len(self.GR.P)

    def requested_meta(self) -> dict[str, Any]:
        """The meta values this run asks for (default: ``init_meta``).

        On an existing task the stored meta wins; any requested value that differs from it is reported in
        one warning that names ``--reinit_meta``. Override to return only the values a user set explicitly
        (e.g. given flags), so defaults are not reported.
        """
        return dict(self.init_meta)

    def pool_keys(self) -> set[Any]:
        """Sample keys of the requests added but not committed yet (from ``cached_request_keys``)."""
        return self.cached_request_keys(list(self.GR.P)) or set()

    def commit_requests(self) -> bool:
        """Commit the added requests (and this task's state) durably; True if generation should pause now."""
        with self.GR.commit_requests() as cached_reqs:
            for cached_req in cached_reqs:
                self.commit_cached_request(cached_req)
        self.events.emit(GENERATION_PROGRESS, done=len(self.T.committed_samples), total=None)
        if self._stop is not None:
            self._stop.check()
        if self.GR.opts.only_process:
            return True
        self.GR.batch_requests(flush=False)
        self.GR.push_batches()
        return self._congested()

    def _congested(self) -> bool:
        gr = self.GR
        if gr.S.batches_in(BatchStatus.DIRECT) and gr.direct_backlog() >= gr.direct_lookahead:
            return True  # the direct flow is fed: its calls go on while generation pauses
        return len(gr.S.batches_in(BatchStatus.LOCAL)) >= gr.limits.max_unpushed_batches

    # ------------------------------------------------------------------ running

    def run(self) -> bool:
        """Run the task until it is complete, blocked by a limit, or stopped; True if complete.

        Raises ``StopRequested`` after Ctrl+C (once the current step has finished and been saved).
        """
        # The signal monitor spans the whole run, monitors included: a Ctrl+C while wandb starts or closes
        # (or just after the task completed) is noted like any first Ctrl+C instead of raising mid-cleanup.
        with StopMonitor() as stop:
            monitors = self._start_monitors()
            status = "error"
            try:
                with self._logs_around_bars(monitors), fewer_gc_passes():
                    self._stop = stop
                    self.GR.stop_check = lambda: stop.stop_requested
                    self.GR.interruptible = stop.interruptible
                    with self.GR:
                        self._enter()
                        try:
                            if not self.run_flag:
                                print(self.status_report())
                                status = "status"
                                return not self.GR.has_unfinished_work and self._generation_complete_hint()
                            done = self._loop(stop)
                            status = "complete" if done else "paused"
                            return done
                        finally:
                            self.on_task_exit()
                            self.D.close()
                            self._state_files.close()
            except StopRequested:
                status = "stopped"
                log.warning("Stopped. Everything done so far is saved: rerun the same command to continue.")
                raise
            finally:
                self._stop = None
                self.events.emit(RUN_FINISHED, status=status, message="")
                for monitor in monitors:
                    monitor.close()

    def _generation_complete_hint(self) -> bool:
        return bool(self.T.committed_samples) and not self.GR.has_unfinished_work

    def _enter(self) -> None:
        gr, layout = self.GR, self.GR.layout
        fresh = not layout.task_state.exists()
        self._state_files = TaskStateFiles(layout.task_state, gr.store)
        if fresh and not gr.opts.wipe_task and (evidence := gr.task_evidence()):
            raise TaskFileError(
                f"{layout.task_state} is missing, but this task has files ({', '.join(evidence[:4])}): it was "
                "deleted outside gpt_batch_api. Nothing was started afresh, so that nothing committed is forgotten "
                f"or bought twice. Restore it from a backup, or {WIPE_TASK_FIX}.",
                str(layout.task_state),
            )
        if fresh:
            self.T = TaskState(meta=dict(self.init_meta))
            self.D.open(None)
        else:
            try:
                self.T = self._state_files.load(cleanup=True)
                self.D.open(self.T.output)
            except TaskFileError as exc:
                if not gr.opts.wipe_task:
                    raise
                log.warning("%s\nStarting the task afresh, as asked (--wipe_task).", exc)
                self._state_files = TaskStateFiles(layout.task_state, gr.store)
                self.T = TaskState(meta=dict(self.init_meta))
                self.D.open(None)
        if gr.opts.wipe_task:
            self._wipe_task()
        else:
            meta_changed = False
            if self.reinit_meta and not fresh:
                meta_changed = self._reinit_meta()
            elif not fresh:
                self._report_ignored_meta()
            if gr.opts.wipe_requests:
                self._wipe_requests()
            elif fresh or meta_changed:
                gr.commit(with_task=True)
        gr.resolve_pushing()
        gr.cleanup_remote()
        self.validate_state(clean=not gr.has_unfinished_work)
        self.on_task_enter()
        self.events.emit(RUN_STARTED, task=type(self).__name__, config=self._public_config())

    def _reinit_meta(self) -> bool:
        """Set the requested meta values (``requested_meta``) over the stored ones (--reinit_meta); values not
        requested keep what is stored (a task started with --model X keeps X when only another value is
        changed), keys the stored meta lacks take ``init_meta``'s. True if anything changed."""
        old = self.T.meta
        new = {**self.init_meta, **old, **self.requested_meta()}
        changes = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in {**old, **new} if old.get(k) != new.get(k)]
        if not changes:
            log.info("Task meta unchanged (--reinit_meta): the given values equal the stored ones")
            return False
        log.warning("Task meta reinitialised (--reinit_meta): %s", ", ".join(changes))
        self.T.meta = new
        gr = self.GR
        waiting = gr.S.queue.num_requests + sum(b.num_requests for b in gr.S.batches_in(BatchStatus.LOCAL))
        if waiting and not gr.opts.wipe_requests:
            log.warning(
                "%d requests not yet sent were made with the old meta and keep it (and its cost predictions); "
                "add --wipe_requests to make them again with the new meta",
                waiting,
            )
        return True

    def _report_ignored_meta(self) -> None:
        stored = self.T.meta
        ignored = {k: v for k, v in self.requested_meta().items() if k not in stored or stored[k] != v}
        if ignored:
            given = ", ".join(f"{k}={v!r}" for k, v in ignored.items())
            kept = ", ".join(f"{k}={stored[k]!r}" for k in ignored if k in stored)
            log.warning(
                "Ignored %s: the task exists and keeps its meta%s. Add --reinit_meta to change it.",
                given,
                f" ({kept})" if kept else "",
            )

    def _wipe_requests(self) -> None:
        log.warning("Wiping all pending requests and batches%s", " and failed samples" if self.wipe_failed else "")
        self.GR.wipe_requests()
        self._output_written |= bool(self.wipe_unfinished(self.wipe_failed))
        self.GR.commit(with_task=True)

    def _wipe_task(self) -> None:
        log.warning("Wiping the whole task: all progress and results are forgotten (--wipe_task)")
        self.GR.wipe_requests()
        # The meta stays as it was (it changes only with --reinit_meta), so tuning done before a wipe is kept.
        keep = self.T.meta and not self.reinit_meta
        if keep:
            self._report_ignored_meta()
        self.T = TaskState(meta=dict(self.T.meta if keep else self.init_meta))
        self._task_files.wipe_output_on_commit()
        self.GR.commit(with_task=True)
        totals = self.GR.S.totals
        if totals.pushed_requests:
            log.warning(
                "Kept on purpose: the totals of earlier runs (%d requests pushed, predicted cost %.4f, true cost "
                "%.4f), so --max_task_cost and the other task limits still count what this task has spent",
                totals.pushed_requests,
                totals.pushed_cost,
                totals.true_cost_batch + totals.true_cost_direct,
            )

    def _process_result(self, result: BatchResult) -> None:
        self._output_written |= bool(self.process_batch_result(result))

    def _loop(self, stop: StopMonitor) -> bool:
        gr = self.GR
        generated_all = gr.opts.only_process
        while True:
            stop.check()
            progress = self._poll_remote() + gr.process_batches(self._process_result)
            stop.check()
            added = False
            # While the direct flow has enough to send, queued requests need not grow without bound.
            fed = gr.direct_busy and gr.S.queue.num_requests >= gr.direct_lookahead and self._congested()
            if not generated_all and not fed:
                before = gr.S.next_request_id
                generated_all = bool(self.generate_requests())
                added = gr.S.next_request_id != before
                progress += added
                if gr.P:
                    self.commit_requests()
            stop.check()
            if not gr.opts.only_process:
                # A task that added nothing this step waits for answers: send what is queued now.
                progress += gr.batch_requests(flush=generated_all or not (added or fed), split_tail=generated_all)
                progress += gr.push_batches()
                progress += gr.run_direct_batches(self._process_result)
            self._emit_status()
            if gr.opts.only_process:
                if not gr.S.batches_in(BatchStatus.REMOTE, BatchStatus.FINISHED):
                    log.info("No unfinished remote batches left to process (--only_process)")
                    return False
            elif generated_all and not gr.has_unfinished_work:
                return self._finish()
            if progress:
                continue
            if gr.dryrun:
                log.info("Dry run: stopping here (nothing was sent and nothing was written)")
                return False
            running = gr.S.batches_in(BatchStatus.REMOTE)
            if gr.direct_busy:  # the direct calls go on in the background: wake when a batch is answered
                gr.wait_direct(DIRECT_WAIT_S)
                continue
            if running:
                self._wait(self._poll_interval(), "waiting for remote batches")
                continue
            if gr.congested_since is not None:
                self._wait(gr.opts.remote_update_interval, "token_limit_exceeded: waiting before pushing again")
                gr.congestion_expired()
                continue
            if stop.stop_requested:
                stop.check()
            log.warning(
                "Cannot make progress: %s reached. Raise that limit (or wait for remote batches), then rerun.",
                gr.opts.option_text(gr.last_block_reason or gr.blocking_limit() or "a limit"),
            )
            return False

    def _poll_interval(self) -> float:
        """Poll in proportion to how long the youngest remote batch has run: a batch done in 2 s is seen within
        about half a second, one running for hours at --remote_update_interval."""
        running = self.GR.S.batches_in(BatchStatus.REMOTE)
        if not running:
            return 0.0
        now = time.time()
        youngest = min(now - (b.push_started_at or b.created_at) for b in running)
        return min(max(FIRST_POLL_DELAY, youngest / 4), self.GR.opts.remote_update_interval)

    def _poll_remote(self) -> int:
        """Poll the remote batches; while direct calls keep the loop turning fast, only at the poll interval."""
        now = time.monotonic()
        if self.GR.direct_busy and now < self._next_poll:
            return 0
        ended = self.GR.update_remote()
        self._next_poll = now + self._poll_interval()
        return ended

    def _wait(self, seconds: float, reason: str) -> None:
        self.events.emit(WAITING, seconds=seconds, reason=reason)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._stop is not None:
                self._stop.check()
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def _finish(self) -> bool:
        mode = self.postprocess_output
        if mode == "always" or (mode == "if_written" and self._output_written):
            self.postprocess_output_data()
            self.GR.commit(with_task=True)
        log.info(
            "Task complete: %d samples succeeded, %d failed",
            len(self.T.succeeded_samples),
            len(self.T.failed_samples),
        )
        self._emit_status()
        return True

    # ------------------------------------------------------------------ monitoring

    def task_metrics(self) -> dict[str, int | float]:
        T = self.T
        return {
            "Task/samples_committed": len(T.committed_samples),
            "Task/samples_responded": len(T.responded_meta),
            "Task/samples_succeeded": len(T.succeeded_samples),
            "Task/samples_failed": len(T.failed_samples),
        }

    def _emit_status(self) -> None:
        self.step_num += 1
        metrics = {**self.task_metrics(), **self.GR.metrics(), "Task/step": self.step_num}
        self.events.emit(STATUS, metrics=metrics, step=self.step_num)

    def status_report(self) -> str:
        """A compact human-readable report of the task (what ``--no_run`` prints)."""
        return status_report(self)

    def _public_config(self) -> dict[str, Any]:
        """Task meta and requester settings for monitoring; never contains the API key."""
        options = dataclasses.asdict(self.GR.opts)
        for secret in ("openai_api_key", "anthropic_api_key"):
            options.pop(secret, None)
        if options.get("client_base_url"):
            options["client_base_url"] = redact(options["client_base_url"])
        return {"task": type(self).__name__, "meta": self.T.meta, **options}

    @staticmethod
    def _logs_around_bars(monitors: list[Any]) -> contextlib.AbstractContextManager[Any]:
        """While progress bars are drawn, log lines are printed above them instead of through them."""
        if any(getattr(m, "enabled", False) for m in monitors):
            from tqdm.contrib.logging import logging_redirect_tqdm

            return logging_redirect_tqdm()  # type: ignore[no-any-return]
        return contextlib.nullcontext()

    def _start_monitors(self) -> list[Any]:
        monitors: list[Any] = []
        from .progress import ProgressDisplay

        display = ProgressDisplay(enabled=self.progress)
        self.events.subscribe(display.handle)
        monitors.append(display)
        wandb_enabled = self.wandb_enabled
        if (wandb_enabled is None or wandb_enabled) and not self.GR.dryrun and self.run_flag:
            from .wandb_monitor import WandbMonitor

            opts = self.wandb_options
            # wandb's files live with the task (not in ./wandb of wherever the command ran), unless the user says.
            wandb_dir = opts["dir"] or (None if os.environ.get("WANDB_DIR") else str(self.GR.layout.task_dir))
            monitor = WandbMonitor(
                project=opts["project"],
                entity=opts["entity"],
                run_id=opts["run_id"],
                name=opts["name"],
                group=opts["group"],
                dir=wandb_dir,
                config=None,
            )
            monitor.start()
            self.events.subscribe(monitor.handle)
            monitors.append(_WandbCloser(monitor))
        return monitors


@dataclasses.dataclass
class _WandbCloser:
    monitor: Any

    def close(self) -> None:
        self.monitor.finish()
