"""GPTRequester: the request engine. Queue on disk, batches within limits, push, poll, results, direct API.

The requester owns the queue and batch files and the requester state (see docs/DESIGN.md for the
layout and the commit protocol). This class keeps the lifecycle, the state, the cutting of
batches and the commit point; it is composed of parts that get their inputs in their constructors:
- ``RequestQueue`` (``request_queue.py``): the committed requests not yet in a batch, on disk;
- ``Budget`` (``budget.py``): the remote/session/task limits, and charging a sent batch (or refunding it);
- ``RemoteBatches`` (``remote.py``): push (exactly once), poll, download, cancel and delete, through a
  ``BatchBackend``;
- ``BatchProcessor`` (``processing.py``): results of a finished batch -> ``BatchResult`` -> retries, totals,
  cleanup;
- ``DirectRunner`` (``direct_batches.py``): running batches through the concurrent direct API.

Typical use (``TaskManager`` does all of this)::

    with GPTRequester("tasks", "mytask", model=...) as gr:
        gr.add_request(GPTRequest(payload, meta))
        with gr.commit_requests():
            pass
        gr.batch_requests(flush=True); gr.push_batches(); ...
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .backends import BatchBackend, InputTokenCounter
from .backends.connections import Connection, connect
from .budget import Budget, SessionUsage, amounts_of
from .costs import TokenCoster
from .direct_batches import DirectRunner
from .direct_transports import DirectTransport
from .dryrun import DryRunDirectRunner, DryRunRemoteBatches
from .endpoints import get_endpoint
from .errors import ConfigError, LimitError, TaskDataError, TaskFileError
from .events import BATCH_CREATED, REQUESTS_COMMITTED, EventBus
from .exact_tokens import count_exactly
from .limits import Amounts, Limit
from .processing import BatchProcessor
from .queue_records import QueueRecord
from .redact import redact
from .remote import RemoteBatches
from .request import CachedGPTRequest, GPTRequest, GPTRequestInfo, GPTRequestItem
from .request_queue import RequestQueue
from .requester_options import RequesterOptions
from .requester_state import BatchState, BatchStatus, RequesterState, load_state
from .results import BatchResult
from .server_identity import server_identity
from .store import fastjson
from .store.atomic import crash_point
from .store.commit import CommitCoordinator, CommitParticipant
from .store.layout import TaskLayout
from .store.lock import TaskLock
from .store.task_store import store_for
from .store.transaction import Transaction
from .tokens import TokenEstimator

__all__ = ["GPTRequester"]

log = logging.getLogger(__name__)


_dumps = fastjson.dumps


def non_finite_at(value: Any, path: str = "") -> tuple[str, float] | None:
    """Where in ``value`` (dicts and lists) the first NaN or infinity is, as ("a.b[2]", number), or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    if isinstance(value, dict):
        items: Any = ((f"{path}.{k}" if path else str(k), v) for k, v in value.items())
    elif isinstance(value, list | tuple):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for sub_path, sub in items:
        if (found := non_finite_at(sub, sub_path)) is not None:
            return found
    return None


TAIL_BATCHES_PER_CONCURRENCY = 4  # the end of a direct run is cut into batches of direct_concurrency / this


class GPTRequester:
    """The request engine for one task (``working_dir`` + ``name_prefix``). Use it as a context manager."""

    def __init__(
        self,
        working_dir: str | os.PathLike[str],
        name_prefix: str,
        *,
        events: EventBus | None = None,
        client: Any = None,
        make_async_client: Callable[[], Any] | None = None,
        backend: BatchBackend | None = None,
        task_files: CommitParticipant | None = None,
        options: RequesterOptions | None = None,
        **option_values: Any,
    ) -> None:
        """``options`` (typed: a misspelt name is a type error) and ``option_values`` (the CLI's names, which
        win) are the settings; ``backend`` replaces the provider's batch API (e.g. ``InMemoryBatchBackend``);
        ``task_files`` are the task's files, which join the commits that change the task (``commit(with_task)``)."""
        given = dataclasses.asdict(options) if options is not None else {}
        self.opts = RequesterOptions.from_kwargs({**given, **option_values})
        self.layout = TaskLayout(Path(working_dir), name_prefix)
        self.endpoint = get_endpoint(self.opts.resolved_endpoint)
        self.limits = self.opts.limits()
        self.events = events or EventBus()
        self.dryrun = self.opts.dryrun
        # A dry run is made of other parts, not of branches: a store that keeps nothing and remote/direct parts
        # that send nothing (dryrun.py). Exact token counts call the API: a dry run keeps its estimates.
        self.store = store_for(self.dryrun)
        self._count_exactly = self.opts.exact_input_tokens and not self.dryrun
        self.estimator = TokenEstimator(
            assumed_completion_ratio=self.opts.assumed_completion_ratio, warn=self.opts.token_estimator_warn
        )
        self.coster = TokenCoster(
            cost_input_direct_mtoken=self.opts.cost_input_direct_mtoken,
            cost_input_cached_mtoken=self.opts.cost_input_cached_mtoken,
            cost_input_batch_mtoken=self.opts.cost_input_batch_mtoken,
            cost_output_direct_mtoken=self.opts.cost_output_direct_mtoken,
            cost_output_batch_mtoken=self.opts.cost_output_batch_mtoken,
        )
        self._connection = connect(self.opts, self.endpoint.path, client=client, make_async_client=make_async_client)
        self._backend: BatchBackend | None = backend
        self.P: list[CachedGPTRequest] = []  # the pool: added, not yet committed
        self._dry_planned = -1  # queue size the dry-run plan was last shown for
        self.S = RequesterState(endpoint=self.endpoint.path)
        self.usage = SessionUsage()
        self.stop_check: Callable[[], bool] = lambda: False
        # Waits that the first Ctrl+C may end at once (the TaskManager's StopMonitor sets it)
        self.interruptible: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
        self._lock: TaskLock | None = None
        self._pending_deletes: list[Path] = []
        # pooled request id -> what its answer should hold: (structured output class, number of outputs)
        self._expected: dict[int, tuple[dict[str, str] | None, int]] = {}
        self._exactly_counted: set[int] = set()  # pool requests whose input tokens were counted exactly
        self.entered = False
        # The parts (each gets its inputs here; the requester state is read through a getter: loading replaces it)
        self.queue = RequestQueue(
            path_of=self.layout.queue,
            state=lambda: self.S.queue,
            replace_state=lambda queue: setattr(self.S, "queue", queue),
            delete_on_commit=self._pending_deletes.extend,
            store=self.store,
        )
        self._commits = CommitCoordinator(
            self.layout.journal,
            requester=RequesterFiles(self.layout, self.queue, lambda: self.S, self._pending_deletes),
            task=task_files,
            store=self.store,
        )
        self.budget = Budget(self.limits, lambda: self.S, self.usage, self.events, self.opts.option_text)
        self.remote_batches = (DryRunRemoteBatches if self.dryrun else RemoteBatches)(
            opts=self.opts,
            limits=self.limits,
            layout=self.layout,
            state=lambda: self.S,
            budget=self.budget,
            events=self.events,
            backend=lambda: self.backend,
            server=lambda: server_identity(self.api_base_url),
            commit=self.commit,
            stop_check=lambda: self.stop_check(),  # the TaskManager sets stop_check and interruptible later
            interruptible=lambda: self.interruptible(),
        )
        self.processor = BatchProcessor(
            opts=self.opts,
            layout=self.layout,
            endpoint=self.endpoint,
            coster=self.coster,
            estimator=self.estimator,
            events=self.events,
            state=lambda: self.S,
            usage=self.usage,
            enqueue=self.queue.enqueue,
            delete_on_commit=self._pending_deletes.extend,
            commit=self.commit,
            unpush=self.remote_batches.unpush,
            cleanup_remote=self.remote_batches.cleanup_remote,
            api_base_url=lambda: self.api_base_url,
            key_hint=lambda: self.connection.words.key_hint,
        )
        self.direct_runner = (DryRunDirectRunner if self.dryrun else DirectRunner)(
            opts=self.opts,
            layout=self.layout,
            endpoint_path=self.endpoint.path,
            state=lambda: self.S,
            budget=self.budget,
            usage=self.usage,
            events=self.events,
            transport_factory=self.direct_transport_factory,
            process_batch=self.processor.process_batch,
            commit=self.commit,
            stop_check=lambda: self.stop_check(),
        )

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> GPTRequester:
        self.enter()
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.exit(exc)

    def enter(self) -> None:
        """Lock the task, recover from any crash, load the state and reconcile it with the disk and remote."""
        if self.entered:
            raise RuntimeError("GPTRequester entered twice")
        task_dir = self.layout.task_dir
        if not task_dir.is_dir():
            if not self.opts.autocreate_working_dir and not self.dryrun:
                raise ConfigError(
                    f"The task directory {task_dir} does not exist. Create it, or drop --no_autocreate_working_dir."
                )
            self.store.make_dir(task_dir)
        self._lock = self.store.lock(
            self.layout.lock,
            self.stop_check,
            timeout=self.opts.lock_timeout,
            poll_interval=self.opts.lock_poll_interval,
            status_interval=self.opts.lock_status_interval,
        )
        try:
            self._load()
        except BaseException:
            self._release_lock()
            raise
        self.entered = True

    def exit(self, error: BaseException | None = None) -> None:
        """Release the task (``error``: what ends the run, e.g. a second Ctrl+C, which shortens the wait for the
        direct calls in flight)."""
        try:
            self.direct_runner.close(error)
        finally:  # a Ctrl+C while the answers in flight are awaited still releases the task
            self.queue.close()
            self._release_lock()
            self.entered = False

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _load(self) -> None:
        if self.store.recover(self.layout):
            log.info("Completed a commit that was interrupted by a crash (%s)", self.layout.journal.name)
        wiping = self.opts.wipe_requests or self.opts.wipe_task
        if self.layout.requester_state.exists():
            try:
                self.S = load_state(self.layout.requester_state)
            except TaskFileError as exc:
                if not wiping:
                    raise
                log.warning("%s\nStarting the requests afresh, as asked (--wipe_requests).", exc)
                self.S = RequesterState(endpoint=self.endpoint.path)
        elif evidence := self.task_evidence():
            problem = (
                f"{self.layout.requester_state} is missing, but this task has files ({', '.join(evidence[:4])}): it "
                "was deleted outside gpt_batch_api"
            )
            if not wiping:
                raise TaskFileError(
                    f"{problem}. Nothing was started afresh, so that nothing committed is forgotten or bought twice. "
                    "Restore it from a backup, or start the requests afresh with --wipe_requests (answered samples "
                    "are kept and unanswered ones are sent again; batches of this task still running on the server "
                    "are not cancelled: cancel them on the provider's dashboard to avoid paying twice).",
                    str(self.layout.requester_state),
                )
            log.warning("%s. Starting the requests afresh, as asked (--wipe_requests).", problem)
        if not wiping and (self.S.queue.num_requests or self.S.batches):
            self._refuse_batches_of_another_provider()
            if self.S.endpoint != self.endpoint.path:
                raise ConfigError(
                    f"This task's pending requests are for {self.S.endpoint}, not {self.endpoint.path}. Use the "
                    "same endpoint, or wipe the pending requests with --wipe_requests."
                )
        self.S.endpoint = self.endpoint.path
        self._remove_stray_files()
        self.queue.open(wiping=wiping)
        for batch in self.S.batches_in(BatchStatus.DIRECT):
            self.store.recover_jsonl(self.layout.batch_results(batch.id))

    def _refuse_batches_of_another_provider(self) -> None:
        """Batches in flight can only be polled, collected or cancelled through the provider that has them: stop,
        changing nothing, when this run uses another one."""
        current = self._backend.name if self._backend is not None else self.opts.provider
        theirs = [
            b
            for b in self.S.batches_in(BatchStatus.PUSHING, BatchStatus.REMOTE)
            if (b.remote.sent_backend or b.remote.backend) not in (None, current)
        ]
        if not theirs:
            return
        provider = theirs[0].remote.sent_backend or theirs[0].remote.backend
        listed = ", ".join(f"{b.id} ({b.remote.batch_id or 'push not confirmed'})" for b in theirs)
        raise ConfigError(
            f"Batches {listed} of this task were sent to {provider}, but this run uses --provider {current}. Nothing "
            f"was changed. Finish them first: rerun with --provider {provider}, then switch. Or drop them with "
            f"--wipe_requests (their requests are sent again through {current}; batches still running on {provider} "
            "are not cancelled: cancel them there)."
        )

    def task_evidence(self) -> list[str]:
        """Names of this task's files that only a committed run writes (a killed first run leaves none of them:
        the lock is taken first, and an empty queue file is created before the first commit)."""
        own = self.layout.own_files()
        skip = {self.layout.lock, self.layout.lock.with_name(self.layout.lock.name + ".holder"), self.layout.journal}
        return [p.name for p in own if p not in skip and p.exists() and p.stat().st_size > 0]

    def _remove_stray_files(self) -> None:
        """Delete queue/batch files that no committed state refers to (left by a crash before a commit)."""
        keep = {self.layout.queue(self.S.queue.gen)}
        for batch in self.S.batches:
            keep.update(self.layout.batch_files(batch.id))
        for path in self.layout.requester_files():
            if path not in keep:
                self.store.remove_stray(path, "written by an interrupted run and never committed")

    @property
    def connection(self) -> Connection:
        """How this run reaches its provider (key, base URL, SDK clients); a dry run must not use it."""
        if self.dryrun:
            raise RuntimeError("a dry run must not call the API")
        return self._connection

    @property
    def backend(self) -> BatchBackend:
        """The provider's batch API (made on first use; a dry run never makes one)."""
        if self._backend is None:
            self._backend = self.connection.backend()
        return self._backend

    @property
    def api_base_url(self) -> str:
        """The API server's base URL, for messages (credentials redacted)."""
        return redact(self.connection.base_url())

    def direct_transport_factory(self) -> Callable[[], DirectTransport]:
        """Makes the transport of direct calls on the direct executor's event loop (the connection's)."""
        return self.connection.direct_transport_factory()

    # ------------------------------------------------------------------ commit point

    def commit(self, *, with_task: bool = False) -> None:
        """Make the in-memory state durable in one transaction (with the task's files if ``with_task``)."""
        self._commits.commit(with_task=with_task)

    # ------------------------------------------------------------------ requests and the queue

    def set_assumed_completion_ratio(self, ratio: float | None) -> None:
        """Predict output tokens (and so costs and token limits) of requests added from now on as ``ratio`` x
        their ``max_completion_tokens`` (None: the whole limit). A task whose meta holds the ratio calls this
        once its meta is loaded, so the stored value, not a default, drives the predictions."""
        if ratio is not None and not 0 <= ratio <= 1:
            raise ConfigError(f"The completion ratio must be between 0 and 1, got {ratio}.")
        self.opts.assumed_completion_ratio = ratio
        self.estimator.assumed_completion_ratio = 1.0 if ratio is None else ratio

    def add_request(self, req: GPTRequest) -> CachedGPTRequest:
        """Add a request to the pool (estimating its tokens and cost once); commit it with commit_requests()."""
        item = GPTRequestItem(id=self.S.next_request_id, req=req)
        self.S.next_request_id += 1
        body, spec = self.endpoint.prepare(req.payload)
        line_obj = {"custom_id": item.custom_id, "method": "POST", "url": self.endpoint.path, "body": body}
        try:
            line = _dumps(line_obj) + b"\n"
            meta = _dumps(req.meta)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"Request {item.id} is not JSON-serialisable ({exc}); check its payload and meta."
            ) from exc
        if b"null" in line or b"null" in meta:  # orjson writes NaN and infinity as null: find them (rare path)
            for what, value in (("payload", body), ("meta", req.meta)):
                if (where := non_finite_at(value)) is not None:
                    raise TaskDataError(
                        f"Request {item.id} has {where[1]} in its {what} at {where[0] or 'the top'}: JSON has no such "
                        "number and it would be sent as null. Replace it (e.g. by None, or a finite number)."
                    )
        tokens_in = self.estimator.payload_input_tokens(body, self.endpoint.path).total
        tokens_out = self.estimator.payload_output_tokens(body, self.endpoint.path)
        info = GPTRequestInfo(
            json_size=len(line),
            tokens_input=tokens_in,
            tokens_output=tokens_out,
            cost_batch=self.coster.predicted_cost(tokens_in, tokens_out, batch=True),
            cost_direct=self.coster.predicted_cost(tokens_in, tokens_out, batch=False),
        )
        cached = CachedGPTRequest(item=item, info=info, line=line)
        self._expected[item.id] = (spec, self.endpoint.num_outputs(body))
        self.P.append(cached)
        return cached

    def add_requests(self, reqs: list[GPTRequest]) -> list[CachedGPTRequest]:
        return [self.add_request(req) for req in reqs]

    def _append_to_queue(self, cached_reqs: list[CachedGPTRequest]) -> None:
        records = []
        for cached in cached_reqs:
            info, req = cached.info, cached.item.req
            parse, num_outputs = self._expected.pop(cached.item.id, (None, 1))
            records.append(
                self.queue.record(
                    cached.line[:-1],
                    req_id=cached.item.id,
                    retry_num=req.retry_num,
                    tokens_input=info.tokens_input,
                    tokens_output=info.tokens_output,
                    cost_batch=info.cost_batch,
                    cost_direct=info.cost_direct,
                    parse=parse,
                    num_outputs=num_outputs,
                    meta=req.meta,
                )
            )
        self.queue.append(records)

    @contextlib.contextmanager
    def commit_requests(self) -> Iterator[list[CachedGPTRequest]]:
        """Commit the pool to the queue; the task updates its state for the yielded requests meanwhile.

        Everything (queue, requester state and the ``task_files``) becomes
        durable in one transaction when the block exits; if the block raises, nothing is committed.
        """
        cached_reqs = list(self.P)
        if self._count_exactly:
            self._count_input_tokens(cached_reqs)
        yield cached_reqs
        if not cached_reqs:
            return
        self._append_to_queue(cached_reqs)
        self.P = []
        self._exactly_counted.clear()
        self.commit(with_task=True)
        self.events.emit(REQUESTS_COMMITTED, num=len(cached_reqs), total_queued=self.S.queue.num_requests)

    def _count_input_tokens(self, cached_reqs: list[CachedGPTRequest]) -> None:
        """Exact input tokens for requests not counted yet (a commit that raised keeps its pool)."""
        todo = [cached for cached in cached_reqs if cached.item.id not in self._exactly_counted]
        backend = self.backend
        if not isinstance(backend, InputTokenCounter):  # validated with the options; a custom backend may lack it
            raise ConfigError(
                f"The {backend.name} backend cannot count input tokens: run without --exact_input_tokens."
            )
        with self.interruptible():  # nothing is written while counting: safe to abandon
            count_exactly(backend, todo, self.coster, self.stop_check)
        self._exactly_counted.update(cached.item.id for cached in todo)

    # ------------------------------------------------------------------ cutting batches

    def batch_requests(self, *, flush: bool, split_tail: bool = False) -> int:
        """Cut batches from the head of the queue within the batch limits; returns how many were made.

        A batch is cut once it is full; with ``flush`` (nothing more will be generated) the remainder is
        cut too. A batch under ``min_batch_requests`` (or any batch with ``force_direct``) becomes a direct
        batch, run through the direct API. ``split_tail`` (the task has generated everything: what is left
        is the end of the run and its retries) cuts a remainder that fits in one direct batch into small
        ones (see ``_tail_direct_requests``).
        """
        if self.dryrun:
            if flush and self._dry_planned != self.S.queue.num_requests:  # show the plan once, when complete
                self._dry_planned = self.S.queue.num_requests
                self._dry_plan()
            return 0
        made = 0
        while self.S.queue.num_requests > 0:
            reserved = self._unstarted_direct()
            if self.S.batches_in(BatchStatus.DIRECT) and self.direct_runner.backlog() >= self.direct_runner.lookahead:
                break  # the direct flow has enough unsent requests: cut more when it has sent them
            direct = self.opts.force_direct
            if not direct and len(self.S.batches_in(BatchStatus.LOCAL)) >= self.limits.max_unpushed_batches:
                break
            if not flush and not direct and self.queue.fits_in_one_batch(self.limits):
                break  # not a full batch yet: wait for more requests
            tail = self._tail_direct_requests() if flush and split_tail else None
            if direct:
                records, end, full = self._take(self.limits.direct, reserved, tail)
            else:
                records, end, full = self._take(self.limits.batch, reserved)
            if not full and not flush and not direct:
                break
            if not direct and len(records) < self.limits.min_batch_requests:
                direct = True
                records, end, full = self._take(self.limits.direct, reserved, tail)
            if direct and not full and not flush:
                break
            if not records:
                break  # the session or task budget is spent: nothing more can be sent in this run
            self._create_batch(records, end, direct=direct)
            made += 1
        if made:
            self.commit()
        return made

    def _unstarted_direct(self) -> Amounts:
        """What the direct batches cut ahead and not started yet will spend: the session and task budgets must
        cover them too (a lookahead cut beyond ``--max_session_requests`` would send those requests directly,
        at the direct price, in a later run)."""
        pending = Amounts()
        for batch in self.S.batches_in(BatchStatus.DIRECT):
            if batch.push_started_at is None:
                pending.add(batch.num_requests, batch.tokens_input, batch.cost, batch.size)
        return pending

    def _tail_direct_requests(self) -> int | None:
        """The size of the direct batches the rest of the queue is cut into near the end of the run (and its
        retries): a batch is processed when its slowest call answers, so in a big one a single slow call would
        hold back the retries of every other request until the flow runs dry. The end starts where the rest
        fits in one direct batch, or earlier with heavy-tailed latencies: within the requests the flow answers
        while its slowest call so far is answered. At least two, so that one refusal of every request of a
        batch is still seen as a configuration error (``same_refusal``) rather than failing the requests one
        by one. Only once a direct batch of this session was processed: a server refusing the configuration
        refuses the first batch, which is then given back whole (several batches started under it would stay
        started, each refused in a rerun of its own). None: no split."""
        cap = self.limits.direct.requests
        if not self.usage.direct_processed:
            return None
        if cap is not None and self.S.queue.num_requests > max(cap, self.direct_runner.tail_horizon()):
            return None
        return max(2, self.opts.direct_concurrency // TAIL_BATCHES_PER_CONCURRENCY)

    def _take(
        self, limit: Limit, reserved: Amounts | None = None, max_requests: int | None = None
    ) -> tuple[list[QueueRecord], int, bool]:
        """Records from the queue head that fit in ``limit`` (and ``max_requests``) and in the session and task
        budgets beyond ``reserved``: (records, end offset, whether it is full)."""
        records: list[QueueRecord] = []
        ends: list[int] = []
        direct = limit is self.limits.direct
        ts, ms = self.limits.max_token_safety, self.limits.max_mb_safety
        # Limit.exceeded_by's test on running sums (this runs once per queued request: no Amounts per record).
        cap_requests, max_tokens, max_cost, max_size = limit.caps()
        if max_requests is not None:
            cap_requests = min(cap_requests, max_requests)
        requests = tokens = size = 0
        cost = 0.0
        full = False
        for record_end, record in self.queue.records():
            tokens_next, size_next = tokens + record.tokens_input, size + record.size
            cost_next = cost + (record.cost_direct if direct else record.cost_batch)
            if (
                requests + 1 > cap_requests
                or tokens_next * ts > max_tokens
                or cost_next > max_cost
                or size_next * ms > max_size
            ):
                if not records:
                    exceeded = limit.exceeded_by(Amounts(1, tokens_next, cost_next, size_next), ts, ms)
                    raise LimitError(
                        f"Request {record.id} alone exceeds --{exceeded} ({record.tokens_input} input tokens, "
                        f"{record.size} bytes, cost {record.cost(direct=direct):.4f}). Raise --{exceeded} or make the "
                        "request smaller."
                    )
                full = True
                break
            records.append(record)
            ends.append(record_end)
            requests, tokens, cost, size = requests + 1, tokens_next, cost_next, size_next
        acc = Amounts(requests, tokens, cost, size)
        reserved = reserved or Amounts()
        if records and self.budget.blocker(reserved + acc) is not None:
            # Rare (the session/task budget is nearly used up): trim the batch to what may still be spent, so
            # that a small budget (e.g. --max_session_requests 10 for a first look) still sends that many.
            acc, keep = Amounts(), 0
            for record in records:
                acc.add(1, record.tokens_input, record.cost(direct=direct), record.size)
                if (reason := self.budget.blocker(reserved + acc)) is not None:
                    if not keep:  # nothing may be sent: say which cap stops the run
                        self.budget.note_blocked(reason)
                    break
                keep += 1
            return records[:keep], ends[keep - 1] if keep else self.S.queue.start, True
        return records, ends[-1] if ends else self.S.queue.start, full

    def _create_batch(self, records: list[QueueRecord], end: int, *, direct: bool) -> BatchState:
        batch_id = self.S.next_batch_id
        self.S.next_batch_id += 1
        batch = BatchState(
            id=batch_id,
            status=BatchStatus.DIRECT if direct else BatchStatus.LOCAL,
            num_requests=len(records),
            tokens_input=sum(r.tokens_input for r in records),
            tokens_output=sum(r.tokens_output for r in records),
            cost=sum(r.cost_direct if direct else r.cost_batch for r in records),
            size=sum(len(r.line) + 1 for r in records),  # newlines included
            first_req_id=records[0].id,
            last_req_id=records[-1].id,
            created_at=time.time(),
        )
        input_bytes = b"\n".join([r.line for r in records]) + b"\n"
        info_bytes = b"\n".join([r.head for r in records]) + b"\n"
        batch.input_crc, batch.info_crc = zlib.crc32(input_bytes), zlib.crc32(info_bytes)  # 2 GB/s: ~1 us a request
        self.store.write_new(self.layout.batch_input(batch_id), input_bytes)
        self.store.write_new(self.layout.batch_info(batch_id), info_bytes)
        self.queue.take(records, end)
        self.S.batches.append(batch)
        self.events.emit(
            BATCH_CREATED,
            batch_id=batch_id,
            num_requests=batch.num_requests,
            ktokens=batch.tokens_input / 1000,
            cost=batch.cost,
            direct=direct,
        )
        return batch

    def _dry_plan(self) -> None:
        """Dry run: log the batches the queue would be cut into, changing nothing."""
        direct = self.opts.force_direct
        limit = self.limits.direct if direct else self.limits.batch
        acc, number = Amounts(), self.S.next_batch_id - 1

        def report() -> None:
            kind = "direct" if direct or acc.requests < self.limits.min_batch_requests else "Batch API"
            log.info(
                "Dry run: would make %s batch %d: %d requests, %d input tokens, predicted cost %.4f",
                kind,
                number,
                acc.requests,
                acc.tokens,
                acc.cost,
            )

        for _, record in self.queue.records():
            item = Amounts(1, record.tokens_input, record.cost(direct=direct), record.size)
            if acc.requests and limit.exceeded_by(acc + item, self.limits.max_token_safety, self.limits.max_mb_safety):
                number += 1
                report()
                acc = Amounts()
            acc = acc + item
        if acc.requests:
            number += 1
            report()

    def wipe_requests(self) -> None:
        """Forget all pending requests and batches (remote ones are cancelled); committed by the caller."""
        _wipe_requests(self)

    # ------------------------------------------------------------------ remote batches (see remote.py)

    def push_batches(self) -> int:
        """Push local batches while the remote, session and task limits allow; returns how many were pushed."""
        if self.opts.force_direct:
            self.direct_runner.convert_local_to_direct()  # e.g. batches cut by an earlier run without --force_direct
            return 0
        return self.remote_batches.push_batches()

    def update_remote(self) -> int:
        """Poll the running remote batches; download the ones that ended. Returns how many ended."""
        return self.remote_batches.update_remote()

    def resolve_pushing(self) -> None:
        """Settle the batches whose push was cut short (see ``RemoteBatches.resolve_pushing``)."""
        self.remote_batches.resolve_pushing()

    def cleanup_remote(self) -> None:
        """Delete what a committed state marked as garbage on the remote (files, ended batches)."""
        self.remote_batches.cleanup_remote()

    @property
    def congested_since(self) -> float | None:
        """When a batch was refused for congestion (token_limit_exceeded), while that holds pushes back; or None."""
        return self.remote_batches.congested_since

    def congestion_expired(self) -> None:
        """With nothing running on the remote, congestion cannot clear by itself: retry after a pause."""
        self.remote_batches.congestion_expired()

    def blocking_limit(self) -> str | None:
        """The option that keeps the waiting work from being sent now (for a stop that must name it)."""
        for batch in self.S.batches_in(BatchStatus.LOCAL):
            return self.remote_batches.push_blocker(batch)
        for batch in self.S.batches_in(BatchStatus.DIRECT):
            if batch.push_started_at is None:
                return self.budget.blocker(amounts_of(batch))
        queue = self.S.queue
        if queue.num_requests:
            average = Amounts(1, queue.tokens_input // queue.num_requests, queue.cost / queue.num_requests, 0)
            return self.budget.blocker(average)
        return None

    # ------------------------------------------------------------------ processing (see processing.py)

    def process_batches(self, handler: Callable[[BatchResult], None]) -> int:
        """Process every finished remote batch through ``handler``; returns how many were processed."""
        return self.processor.process_batches(handler)

    # ------------------------------------------------------------------ direct batches (see direct_batches.py)

    @property
    def direct_lookahead(self) -> int:
        """Requests kept cut into direct batches and not sent yet."""
        return self.direct_runner.lookahead

    def direct_backlog(self) -> int:
        """Requests of direct batches that are not sent yet."""
        return self.direct_runner.backlog()

    @property
    def direct_busy(self) -> bool:
        """Whether direct calls are under way (or answered batches wait to be processed)."""
        return self.direct_runner.busy

    def run_direct_batches(self, handler: Callable[[BatchResult], None]) -> int:
        """Hand the direct batches to the flow and process the complete ones; returns how many were processed."""
        return self.direct_runner.run(handler)

    def wait_direct(self, timeout: float) -> None:
        """Wait up to ``timeout`` for a direct batch to complete."""
        self.direct_runner.wait(timeout)

    # ------------------------------------------------------------------ status

    @property
    def last_block_reason(self) -> str | None:
        """The limit that last kept requests from being sent, or None."""
        return self.budget.last_block_reason

    @property
    def num_unfinished_batches(self) -> int:
        return len(self.S.batches)

    @property
    def has_unfinished_work(self) -> bool:
        """Whether anything is pooled, queued or in a batch that is not processed yet."""
        return bool(self.P) or self.S.queue.num_requests > 0 or bool(self.S.batches)

    def metrics(self) -> dict[str, float | int]:
        """Flat metrics for monitoring (the STATUS event)."""
        S, totals = self.S, self.S.totals
        remote = S.batches_in(BatchStatus.PUSHING, BatchStatus.REMOTE)
        true_cost = totals.true_cost_batch + totals.true_cost_direct
        return {
            "Queue/requests": S.queue.num_requests,
            "Queue/ktokens": S.queue.tokens_input / 1000,
            "Queue/cost": S.queue.cost,
            "Batch/local": len(S.batches_in(BatchStatus.LOCAL)),
            "Batch/remote": len(remote),
            "Batch/finished": len(S.batches_in(BatchStatus.FINISHED)),
            "Batch/direct": len(S.batches_in(BatchStatus.DIRECT)),
            "Batch/remote_requests": sum(b.num_requests for b in remote),
            "Batch/remote_completed": sum(b.remote.succeeded for b in remote),
            "Batch/remote_failed": sum(b.remote.failed for b in remote),
            "Batch/remote_ktokens": sum(b.tokens_input for b in remote) / 1000,
            "Batch/remote_cost": sum(b.cost for b in remote),
            "Session/pushed_requests": self.usage.pushed.requests,
            "Session/pushed_ktokens": self.usage.pushed.tokens / 1000,
            "Session/pushed_cost": self.usage.pushed.cost,
            "Task/pushed_requests": totals.pushed_requests,
            "Task/pushed_ktokens": totals.pushed_tokens / 1000,
            "Task/pushed_cost": totals.pushed_cost,
            "Task/pushed_batches": totals.pushed_batches,
            "Task/direct_batches": totals.direct_batches,
            "Task/processed_requests": totals.processed_requests,
            "Task/retried_requests": totals.retried,
            "Usage/prompt_tokens": totals.prompt_tokens,
            "Usage/completion_tokens": totals.completion_tokens,
            "Usage/cached_tokens": totals.cached_tokens,
            "Usage/reasoning_tokens": totals.reasoning_tokens,
            "Usage/completion_ratio": _ratio(totals.completion_tokens, totals.assumed_output_tokens),
            "Cost/true": true_cost,
            "Cost/true_batch": totals.true_cost_batch,
            "Cost/true_direct": totals.true_cost_direct,
            "Cost/predicted_pushed": totals.pushed_cost,
        }


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


class RequesterFiles:
    """The requester's side of every commit: the queue's appended records, the requester state, and the files
    the parts gave up (``delete_on_commit``)."""

    def __init__(
        self, layout: TaskLayout, queue: RequestQueue, state: Callable[[], RequesterState], deletes: list[Path]
    ) -> None:
        self._layout = layout
        self._queue = queue
        self._state = state
        self._deletes = deletes  # the list the parts add to

    def prepare_commit(self, txn: Transaction) -> None:
        self._queue.prepare_commit()
        crash_point("requester_before_commit")
        txn.write_json(self._layout.requester_state, self._state().to_json())
        for path in self._deletes:
            txn.delete(path)

    def committed(self) -> None:
        self._deletes.clear()
        self._queue.committed()


def _wipe_requests(requester: GPTRequester) -> None:
    """Forget the pool, the queue and every unprocessed batch (cancelling remote ones); commit is the caller's."""
    S = requester.S
    for batch in S.batches:
        requester.remote_batches.cancel(batch)
        requester._pending_deletes.extend(p for p in requester.layout.batch_files(batch.id) if p.exists())
    log.warning("Wiped %d queued requests and %d batches", S.queue.num_requests, len(S.batches))
    S.batches = []
    requester.P = []
    requester.queue.wipe()
