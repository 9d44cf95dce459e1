"""From a finished batch to a BatchResult, and from the task's decisions to retries, totals and cleanup.

Processing a batch is one transaction: the task's changes (its ``TaskFiles``), the retries
appended to the queue, the totals, and the removal of the batch from the state all commit together,
so a crash at any point leaves the batch either unprocessed (it is processed again, from the same
local files) or processed exactly once.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn, Protocol

from .budget import SessionUsage
from .classify import classify, same_refusal
from .costs import TokenCoster, usage_tokens
from .endpoints import Endpoint
from .error_kinds import ErrorKind, advice
from .errors import ProcessingError, ServerRefusedError, TaskFileError
from .events import BATCH_PROCESSED, EventBus
from .gc_control import gc_paused
from .logs import LogSummarizer
from .queue_records import QueueRecord
from .request import GPTRequestInfo, GPTRequestItem, StoredGPTRequest, custom_id_for
from .requester_options import RequesterOptions
from .requester_state import BatchState, BatchStatus, RequesterState
from .result_bodies import ResultBodies
from .results import BatchResult, ErrorInfo, ResultInfo, ResultStats
from .store import fastjson
from .store.atomic import crash_point
from .store.jsonl import WIPE_REQUESTS_FIX, corrupt_line_error, read_jsonl, read_raw_lines
from .store.layout import TaskLayout
from .tokens import TokenEstimator

__all__ = ["BatchProcessor"]

log = logging.getLogger(__name__)

MIN_PASS_SAMPLE = 10  # a batch of fewer requests neither passes nor fails the --max_pass_failures count

HISTORY_LENGTH = 50


def _read_result_lines(path: Path) -> Iterator[tuple[int, int, dict[str, Any] | None]]:
    """``(offset, size, line)`` of each result line of a downloaded file; a malformed line is None (that request
    becomes 'missing')."""
    if not path.exists():
        return
    offset = 0
    with open(path, "rb") as file:
        for raw in file:
            start, offset = offset, offset + len(raw)
            if raw.isspace():  # a blank line (no copy of the line, unlike strip())
                continue
            try:
                obj = fastjson.loads(raw)
            except ValueError:
                yield start, len(raw), None
                continue
            yield start, len(raw), obj if isinstance(obj, dict) else None


def _is_line_of(line: bytes, custom_id: str) -> bool:
    """Whether a batch input line is the request ``custom_id``'s (our writer puts custom_id first)."""
    if line.startswith(b'{"custom_id":"%s"' % custom_id.encode()):
        return True
    try:
        return bool(fastjson.loads(line).get("custom_id") == custom_id)
    except (ValueError, AttributeError):
        return False


def _count_kinds(stats: ResultStats, infos: Any) -> None:
    stats.num_success = stats.num_warnings = stats.num_fatal = stats.num_retryable = stats.num_retries = 0
    for info in infos:
        if info.err_info is None:
            stats.num_warnings += bool(info.warn_infos)
            stats.num_success += not info.warn_infos
        elif info.err_info.fatal:
            stats.num_fatal += 1
        else:
            stats.num_retryable += 1


class Committer(Protocol):
    def __call__(self, *, with_task: bool = False) -> None: ...


class BatchProcessor:
    """Collect and finalise the finished batches of one task (see the module docstring)."""

    def __init__(
        self,
        *,
        opts: RequesterOptions,
        layout: TaskLayout,
        endpoint: Endpoint,
        coster: TokenCoster,
        estimator: TokenEstimator,
        events: EventBus,
        state: Callable[[], RequesterState],
        usage: SessionUsage,
        enqueue: Callable[..., None],
        delete_on_commit: Callable[[Iterable[Path]], None],
        commit: Committer,
        unpush: Callable[[BatchState], None],
        cleanup_remote: Callable[[], None],
        api_base_url: Callable[[], str],
        key_hint: Callable[[], str],
    ) -> None:
        self._opts = opts
        self._layout = layout
        self._endpoint = endpoint
        self._coster = coster
        self._estimator = estimator
        self._events = events
        self._state = state  # the requester state is replaced when it is loaded: read it through this
        self._usage = usage
        self._enqueue = enqueue  # appends one request to the queue (committed with the processed batch)
        self._delete_on_commit = delete_on_commit
        self._commit = commit
        self._unpush = unpush  # gives a batch back as never sent (the remote side, the budget)
        self._cleanup_remote = cleanup_remote
        self._api_base_url = api_base_url  # for advice; made only when a refusal needs it
        self._key_hint = key_hint

    def process_batches(self, handler: Callable[[BatchResult], None]) -> int:
        """Process every finished remote batch through ``handler``; returns how many were processed."""
        processed = 0
        for batch in self._state().batches_in(BatchStatus.FINISHED):
            if batch.remote.status == "failed" and not self._may_process_failed(batch):
                reasons = "; ".join(e.rstrip(".") for e in batch.remote.errors[:3])
                raise ProcessingError(
                    f"Batch {batch.id} ({batch.remote.batch_id}) failed on the remote: {reasons or 'no details'}. "
                    "Fix the cause, then rerun with --process_failed_batches N to finalise it (add "
                    "--retry_fatal_requests to retry its requests), or --wipe_requests to drop it."
                )
            damage = self._damaged_download(batch)
            if damage is not None:
                # The provider still holds the answers (its files are deleted only after processing): download
                # them again rather than count those requests as missing and buy them again.
                log.warning("Batch %d: %s; downloading its results again", batch.id, damage)
                batch.move_to(BatchStatus.REMOTE)
                self._commit()
                continue
            with gc_paused():  # one batch's result objects die before the collector would walk them
                self.process_batch(batch, handler)
            processed += 1
        return processed

    def _damaged_download(self, batch: BatchState) -> str | None:
        """Why the downloaded result files of ``batch`` are no longer what was downloaded (changed or deleted
        since, e.g. a disk or a user's edit), or None. Cheap: sizes and the last byte, not every line."""
        info = batch.remote
        if not info.backend or not info.batch_id or info.status == "missing":
            return None
        for path, expected in ((self._layout.batch_results(batch.id), info.succeeded),
                               (self._layout.batch_errors(batch.id), info.failed)):  # fmt: skip
            if not path.exists():
                if expected > 0:
                    return f"{path.name} is gone although the batch reported {expected} lines"
                continue
            size = path.stat().st_size
            if expected > 0 and size == 0:
                return f"{path.name} is empty although the batch reported {expected} lines"
            if size:
                with open(path, "rb") as file:
                    file.seek(size - 1)
                    if file.read(1) != b"\n":
                        return f"{path.name} ends inside a line (cut short after it was downloaded)"
        return None

    def _may_process_failed(self, batch: BatchState) -> bool:
        allowed = self._opts.process_failed_batches
        if allowed < 0 or self._usage.processed_failed < allowed:
            self._usage.processed_failed += 1
            return True
        return False

    def process_batch(self, batch: BatchState, handler: Callable[[BatchResult], None]) -> BatchResult:
        """Collect ``batch``, hand it to ``handler`` (the task), then commit retries, totals and cleanup."""
        result = self.collect(batch)
        refusal = same_refusal(result.infos.values())
        if refusal is not None:
            self._give_back_refused(batch, result, refusal)
        handler(result)
        self._finalize(batch, result)
        return result

    def _give_back_refused(self, batch: BatchState, result: BatchResult, refusal: ErrorInfo) -> NoReturn:
        """Every request got the same refusal: the configuration is wrong, not the requests. Put the batch
        back as if never sent (no sample marked failed, no retry used) and stop with the likely cause."""
        data = refusal.data
        first = next(iter(result.infos.values()))
        model = first.item.req.payload.get("model")
        why = advice(
            ErrorKind(data["kind"]),
            data["status"],
            data["body"],
            path=self._endpoint.path.removeprefix("/v1"),
            base_url=self._api_base_url(),
            key_hint=self._key_hint(),
            model=model if isinstance(model, str) else None,
        )
        self._unpush(batch)
        self._commit()
        for path in (self._layout.batch_results(batch.id), self._layout.batch_errors(batch.id)):
            path.unlink(missing_ok=True)
        self._cleanup_remote()
        raise ServerRefusedError(
            f"Batch {batch.id}: all {len(result.infos)} requests got the same refusal, so none was marked failed "
            f"and no retry was used: {why}.",
            data["status"],
        )

    def collect(self, batch: BatchState) -> BatchResult:
        """Read a finished batch's local files into a BatchResult (no state is changed).

        The result files are read in one pass, each line classified as it is read; only the most recent
        response bodies stay in memory (see ``result_bodies``), so a big batch never holds all of them.
        """
        input_path = self._layout.batch_input(batch.id)
        sent = read_raw_lines(input_path)  # in the order of the info file: both are written from one list
        source_name = str(input_path)
        direct = batch.status == BatchStatus.DIRECT
        missing_is_free = batch.remote.status in ("expired", "cancelled", "missing")
        failed = batch.remote.status == "failed"
        requests: dict[str, tuple[GPTRequestItem, GPTRequestInfo, int | None, dict[str, str] | None]] = {}
        info_path = self._layout.batch_info(batch.id)
        for info_offset, head in read_jsonl(info_path):
            try:
                rec = QueueRecord.from_head(head)
            except (KeyError, TypeError) as exc:
                raise corrupt_line_error(
                    info_path, info_offset, ValueError(f"not a request's info (no {exc})")
                ) from None
            custom_id = custom_id_for(rec.id)
            offset, sent_line = next(sent, (-1, b""))
            if not _is_line_of(sent_line, custom_id):
                raise corrupt_line_error(input_path, offset, ValueError(f"expected the line of {custom_id}"))
            req = StoredGPTRequest(meta=rec.meta, retry_num=rec.retry_num, line=sent_line, source=(source_name, offset))
            item = GPTRequestItem(rec.id, req)
            # The predictions made when the request was added, carried to its results and its retries
            req_info = GPTRequestInfo(rec.size, rec.tokens_input, rec.tokens_output, rec.cost_batch, rec.cost_direct)
            requests[custom_id] = (item, req_info, rec.num_outputs, rec.parse)
        if len(requests) != batch.num_requests:  # e.g. an info file emptied or cut at a line end from outside
            raise TaskFileError(
                f"{info_path} lists {len(requests)} requests, but batch {batch.id} was written with "
                f"{batch.num_requests}: it was changed outside gpt_batch_api. Nothing was processed. Restore it, or "
                f"{WIPE_REQUESTS_FIX}.",
                str(info_path),
            )
        stats = ResultStats()
        answered = {} if failed else self._classify_lines(batch, requests, stats, missing_is_free)
        infos: dict[int, ResultInfo] = {}
        for custom_id, (item, req_info, n, spec) in requests.items():
            if failed:
                info = ResultInfo(item=item, req_info=req_info, max_retries=self._opts.max_retries)
                info.err_info = ErrorInfo(True, "BatchError", "BatchFailed", "the whole batch failed on the remote")
                info.retry = self._opts.retry_fatal_requests and info.retries_left
            else:
                found = answered.get(custom_id)
                info = found if found is not None else self._classify(None, item, req_info, n, spec, missing_is_free)
            info.parse_spec = spec
            infos[item.id] = info
            self._account(info, stats)
        stats.true_cost = self._coster.input_cost_of(
            stats.prompt_tokens, stats.cached_tokens, batch=not direct
        ) + self._coster.output_cost(stats.completion_tokens, batch=not direct)
        stats.num_requests = len(infos)
        _count_kinds(stats, infos.values())
        self._report(batch, infos.values(), direct)
        return BatchResult(
            batch_id=batch.id,
            direct=direct,
            remote_status=None if direct else batch.remote.status,
            infos=infos,
            stats=stats,
        )

    def _classify_lines(
        self,
        batch: BatchState,
        requests: dict[str, tuple[GPTRequestItem, GPTRequestInfo, int | None, dict[str, str] | None]],
        stats: ResultStats,
        missing_is_free: bool,
    ) -> dict[str, ResultInfo]:
        """Classify the first result line of each request (output file, then error file), adding its usage to
        ``stats``; each body stays readable from its line (see ``result_bodies``)."""
        answered: dict[str, ResultInfo] = {}
        malformed = 0
        for path in (self._layout.batch_results(batch.id), self._layout.batch_errors(batch.id)):
            bodies = ResultBodies(path)
            for offset, size, line in _read_result_lines(path):
                custom_id = line.get("custom_id") if line is not None else None
                if not isinstance(custom_id, str):
                    malformed += 1
                    continue
                if custom_id in answered or custom_id not in requests:
                    continue
                info = answered[custom_id] = self._classify(line, *requests[custom_id], missing_is_free)
                if info.resp_info is not None:
                    self._add_usage(info.resp_info.usage, stats)
                    info.resp_info.read_from(bodies, offset, size)
        if malformed:
            log.warning("Batch %d: %d malformed result line(s); those requests count as missing", batch.id, malformed)
        return answered

    def _classify(
        self,
        line: dict[str, Any] | None,
        item: GPTRequestItem,
        req_info: GPTRequestInfo,
        n: int | None,
        spec: dict[str, str] | None,
        missing_is_free: bool,
    ) -> ResultInfo:
        return classify(
            line,
            item,
            req_info,
            self._endpoint.num_outputs(item.req.payload) if n is None else n,
            self._endpoint,
            spec,
            max_retries=self._opts.max_retries,
            retry_fatal=self._opts.retry_fatal_requests,
            missing_is_free=missing_is_free,
        )

    @staticmethod
    def _add_usage(usage: dict[str, Any], stats: ResultStats) -> None:
        if usage:
            prompt, cached, output, reasoning = usage_tokens(usage)
            stats.prompt_tokens += prompt
            stats.cached_tokens += cached
            stats.completion_tokens += output
            stats.reasoning_tokens += reasoning

    def _account(self, info: ResultInfo, stats: ResultStats) -> None:
        """Add one result's tokens and outcome to ``stats`` (the batch's cost is priced from the sums)."""
        stats.predicted_input_tokens += info.req_info.tokens_input
        stats.assumed_output_tokens += info.req_info.tokens_output
        payload = info.item.req.payload
        stats.output_token_limit += self._estimator.payload_output_limit(payload, self._endpoint.path, warn=False)
        err = info.err_info
        if err is not None and not err.counts_as_retry:  # expired/cancelled/vanished batch: not the request's fault
            stats.num_expired += 1
        if err is not None and err.subtype == "MissingResult":
            stats.num_missing += 1
        if err is not None:
            stats.error_subtypes[err.subtype] = stats.error_subtypes.get(err.subtype, 0) + 1
        for warn in info.warn_infos:
            stats.warning_subtypes[warn.subtype] = stats.warning_subtypes.get(warn.subtype, 0) + 1

    def _report(self, batch: BatchState, infos: Any, direct: bool) -> None:
        warnings = LogSummarizer(log, self._opts.show_warnings)
        errors = LogSummarizer(log, self._opts.show_errors)
        verbose = self._opts.direct_verbose if direct else "never"
        for info in infos:
            for warn in info.warn_infos:
                warnings.log(logging.WARNING, warn.subtype, f"Batch {batch.id} request {info.req_id}: {warn.msg}")
            err = info.err_info
            # Expired/cancelled lines and the requests of a vanished batch are reported once per batch elsewhere.
            per_batch = err is not None and (
                err.subtype in ("batch_expired", "batch_cancelled")
                or (err.subtype == "MissingResult" and batch.remote.status == "missing")
            )
            if err is not None and not per_batch:
                errors.log(
                    logging.ERROR if err.fatal else logging.WARNING,
                    err.subtype,
                    f"Batch {batch.id} request {info.req_id}: {err.subtype}: {err.msg}",
                )
            if (
                verbose == "always"
                or (verbose == "warn" and (info.warn_infos or info.err_info))
                or (verbose == "error" and info.err_info)
            ):
                body = info.resp_info.body if info.resp_info is not None else None
                log.info(
                    "Request %d: %s\nResponse: %s",
                    info.req_id,
                    json.dumps(info.item.req.payload, ensure_ascii=False)[:4000],
                    json.dumps(body, ensure_ascii=False)[:4000],
                )
        warnings.flush()
        errors.flush()

    def _finalize(self, batch: BatchState, result: BatchResult) -> None:
        S = self._state()
        stats, totals = result.stats, S.totals
        _count_kinds(stats, result.infos.values())  # again: the task may have rejected answers
        for info in result.infos.values():
            if info.err_info is not None and info.retry:
                self._queue_retry(info)
                stats.num_retries += 1
        totals.processed_requests += stats.num_requests
        totals.succeeded += stats.num_success + stats.num_warnings
        totals.failed += sum(1 for i in result.infos.values() if i.err_info is not None and not i.retry)
        totals.retried += stats.num_retries
        for subtype, count in stats.error_subtypes.items():
            totals.errors_by_type[subtype] = totals.errors_by_type.get(subtype, 0) + count
        totals.prompt_tokens += stats.prompt_tokens
        totals.completion_tokens += stats.completion_tokens
        totals.cached_tokens += stats.cached_tokens
        totals.reasoning_tokens += stats.reasoning_tokens
        totals.assumed_output_tokens += stats.assumed_output_tokens
        if result.direct:
            totals.true_cost_direct += stats.true_cost
        else:
            totals.true_cost_batch += stats.true_cost
        stats.predicted_cost = batch.cost
        self._check_predictions(batch, stats)
        passed = (
            stats.num_requests == 0
            or (stats.pass_ratio >= self._opts.min_pass_ratio and (stats.num_success + stats.num_warnings) > 0)
            or stats.num_expired == stats.num_requests
        )
        if passed:
            S.num_pass_failures = 0
        elif stats.num_requests >= MIN_PASS_SAMPLE:
            S.num_pass_failures += 1
        # else: a few requests (e.g. the small direct batches at the end of a run) say too little about the
        # requests as a whole to stop the run; their failures are retried or counted like any other.
        S.history = [*S.history, self._history_entry(batch, result)][-HISTORY_LENGTH:]
        S.batches = [b for b in S.batches if b.id != batch.id]
        self._delete_on_commit(p for p in self._layout.batch_files(batch.id) if p.exists())
        if batch.remote.backend:
            S.remote_cleanup.append(batch.remote)
        crash_point("process_before_commit")
        self._commit(with_task=True)
        crash_point("process_after_commit")
        self._events.emit(BATCH_PROCESSED, batch_id=batch.id, stats=stats.to_json())
        log.info(
            "Processed batch %d: %d requests, %d ok, %d warnings, %d retryable, %d fatal, %d retried, cost %.4f",
            batch.id,
            stats.num_requests,
            stats.num_success,
            stats.num_warnings,
            stats.num_retryable,
            stats.num_fatal,
            stats.num_retries,
            stats.true_cost,
        )
        self._cleanup_remote()
        if S.num_pass_failures >= self._opts.max_pass_failures:
            raise ProcessingError(
                f"{S.num_pass_failures} consecutive batches did not pass (pass ratio below "
                f"--min_pass_ratio {self._opts.min_pass_ratio}). {_error_summary(batch, result)} Fix the cause "
                "(the requests, or the task's checks of the answers); then rerun (raise --max_pass_failures or lower "
                "--min_pass_ratio to tolerate this)."
            )

    def _queue_retry(self, info: ResultInfo) -> None:
        S = self._state()
        new_id = S.next_request_id
        S.next_request_id += 1
        body = info.item.req.payload
        line_obj = {
            "custom_id": custom_id_for(new_id),
            "method": "POST",
            "url": self._endpoint.path,
            "body": body,
        }
        req = info.req_info
        self._enqueue(
            fastjson.dumps(line_obj),
            req_id=new_id,
            retry_num=info.next_retry_num,
            tokens_input=req.tokens_input,
            tokens_output=req.tokens_output,
            cost_batch=req.cost_batch,
            cost_direct=req.cost_direct,
            parse=info.parse_spec,
            num_outputs=self._endpoint.num_outputs(body),
            meta=info.meta,
        )

    def _check_predictions(self, batch: BatchState, stats: ResultStats) -> None:
        if stats.prompt_tokens and stats.predicted_input_tokens:
            ratio = stats.predicted_input_tokens / stats.prompt_tokens
            factor = self._opts.warn_predicted_input_factor
            if ratio > factor or ratio < 1 / factor:
                log.warning(
                    "Batch %d: predicted %d input tokens but the API counted %d (see tokens_test)",
                    batch.id,
                    stats.predicted_input_tokens,
                    stats.prompt_tokens,
                )
        if stats.completion_tokens and stats.assumed_output_tokens:
            ratio = stats.assumed_output_tokens / stats.completion_tokens
            factor = self._opts.warn_assumed_completion_factor
            if ratio > factor or ratio < 1 / factor:
                # The completion ratio is the share of max_completion_tokens used (not generated / assumed).
                limit = max(1, stats.output_token_limit)
                assumed_ratio, fitted = stats.assumed_output_tokens / limit, stats.completion_tokens / limit
                log.warning(
                    "Batch %d: assumed %d output tokens (completion ratio %.2f) but %d were generated: a completion "
                    "ratio of %.2f fits this batch. Set it for better cost predictions: assumed_completion_ratio=%.2f "
                    "(in the demo: --no_run --reinit_meta --completion_ratio %.2f)",
                    batch.id,
                    stats.assumed_output_tokens,
                    assumed_ratio,
                    stats.completion_tokens,
                    fitted,
                    fitted,
                    fitted,
                )

    def _history_entry(self, batch: BatchState, result: BatchResult) -> dict[str, Any]:
        stats = result.stats
        return {
            "batch_id": batch.id,
            "direct": result.direct,
            "remote_status": result.remote_status,
            "num_requests": stats.num_requests,
            "num_success": stats.num_success + stats.num_warnings,
            "num_retries": stats.num_retries,
            "num_fatal": stats.num_fatal,
            "prompt_tokens": stats.prompt_tokens,
            "completion_tokens": stats.completion_tokens,
            "true_cost": stats.true_cost,
            "predicted_cost": stats.predicted_cost,
            "processed_at": time.time(),
        }


def _error_summary(batch: BatchState, result: BatchResult) -> str:
    """The most common errors of ``batch`` (the task's own rejections included), each with one example: the
    errors of rejected answers are not logged one by one, so the stop must name them."""
    counts: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for info in result.infos.values():
        if info.err_info is not None:
            kind = f"{info.err_info.type}/{info.err_info.subtype}"
            counts[kind] += 1
            examples.setdefault(kind, str(info.err_info.msg)[:200])
    if not counts:
        return f"Batch {batch.id} had no errors, but too few answers succeeded."
    top = "; ".join(f"{kind} x{n} (e.g. {examples[kind]!r})" for kind, n in counts.most_common(3))
    return f"Most common errors in batch {batch.id}: {top}."
