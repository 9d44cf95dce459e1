"""The remote side of batches: push exactly once, poll, download, cancel and delete.

Exactly once: before uploading, a batch is marked PUSHING (committed). The remote batch carries metadata
naming the task and the local batch, and the create call is made with the SDK's own retries off. If the
create times out, or the process dies before the state records the remote id, the remote batch is looked
up by that metadata and adopted instead of being created again; an uploaded file that never became a
batch is deleted.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import openai

from .error_kinds import ErrorKind, error_kind
from .errors import APIError, AuthenticationError, BatchAPIUnavailableError, QuotaExceededError, TaskFileError
from .events import BATCH_FINISHED, BATCH_PUSHED, LIMIT_REACHED, REMOTE_PROGRESS
from .limits import Amounts
from .requester_base import RequesterBase
from .requester_state import BatchState, BatchStatus, RemoteInfo
from .store.atomic import atomic_write_bytes, crash_point

__all__ = ["RemoteMixin", "describe_connection_error", "translate_api_error"]

log = logging.getLogger(__name__)

TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
META_TASK = "gpt_batch_api_task"
META_BATCH = "gpt_batch_api_batch"
CREATE_ATTEMPTS = 5
T = TypeVar("T")


def translate_api_error(exc: Exception, what: str, base_url: str | None = None) -> Exception:
    """Our error for an SDK error, with a message that names the fix (read by ``error_kind``: a gateway
    may answer a quota or key problem with another status)."""
    if isinstance(exc, openai.APIStatusError):
        kind = error_kind(exc.status_code, exc.body)
        if kind == ErrorKind.AUTH:
            return AuthenticationError(
                f"{what}: the API key was rejected ({exc.status_code}: {exc.message}). Check OPENAI_API_KEY or "
                "--openai_api_key (through a gateway: the gateway's key).",
                exc.status_code,
            )
        if kind == ErrorKind.QUOTA:
            return QuotaExceededError(
                f"{what}: the account is out of credit (insufficient_quota). Add credit or raise the usage limit "
                "on the OpenAI billing page (or the gateway's budget), then rerun the same command.",
                exc.status_code,
            )
        return APIError(f"{what} failed with HTTP {exc.status_code}: {exc.message}", exc.status_code)
    if isinstance(exc, openai.APIConnectionError):
        _, detail = describe_connection_error(exc)
        return APIError(
            f"{what}: cannot reach the API server{f' at {base_url}' if base_url else ''} ({detail}). Check the "
            "network or --client_base_url, then rerun the same command (nothing is lost)."
        )
    return exc


def describe_connection_error(exc: Exception) -> tuple[str, str]:
    """``("timeout" | "connection_error", message)`` for a call that got no answer.

    The innermost cause decides and is named in the message: the SDK's aiohttp transport reports every
    connection failure (refused, dropped) as "Request timed out."
    """
    root: BaseException = exc
    while (cause := root.__cause__ or root.__context__) is not None and cause is not exc:
        root = cause
    if root is exc:
        return ("timeout" if isinstance(exc, openai.APITimeoutError) else "connection_error"), str(exc)
    timed_out = isinstance(root, TimeoutError) or type(root).__name__.endswith("Timeout")
    return ("timeout" if timed_out else "connection_error"), f"{exc} ({type(root).__name__}: {root})"


def _error_code(exc: openai.APIStatusError) -> str | None:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return error.get("code")
    return getattr(exc, "code", None)


class RemoteMixin(RequesterBase):
    """Push, poll and download for GPTRequester (see the module docstring)."""

    _last_block_reason: str | None = None

    def _api(self, what: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except openai.OpenAIError as exc:
            raise self._api_error(exc, what) from exc

    def _api_error(self, exc: Exception, what: str) -> Exception:
        if isinstance(exc, openai.NotFoundError) and what.startswith(("upload", "create batch", "list batches")):
            return BatchAPIUnavailableError(
                f"{what}: the server at {self.client.base_url} has no Files/Batches API (HTTP 404). Local "
                "OpenAI-compatible servers (Ollama, vLLM, llama.cpp) only offer the direct API: rerun with "
                "--force_direct.",
                404,
            )
        return translate_api_error(exc, what, str(self.client.base_url))

    def _remote_filename(self, batch: BatchState) -> str:
        return f"{self.layout.prefix}_batch_{batch.id:06d}_{self.S.task_uid}.jsonl"

    def _metadata(self, batch: BatchState) -> dict[str, str]:
        return {META_TASK: self.S.task_uid, META_BATCH: str(batch.id)}

    # ------------------------------------------------------------------ push

    def push_blocker(self, batch: BatchState) -> str | None:
        """Why ``batch`` cannot be pushed now (the option that limits it), or None."""
        if self.congested_since is not None:
            return "token_limit_exceeded (waiting for running batches to finish)"
        remote = self.S.batches_in(BatchStatus.PUSHING, BatchStatus.REMOTE)
        in_flight = sum(other.tokens_input for other in remote)
        if self.congestion_tokens is not None and in_flight and in_flight + batch.tokens_input > self.congestion_tokens:
            return f"token_limit_exceeded (about {self.congestion_tokens} tokens fit in flight)"
        if len(remote) >= self.limits.max_remote_batches:
            return "max_remote_batches"
        this = Amounts(batch.num_requests, batch.tokens_input, batch.cost, batch.size)
        on_remote = Amounts()
        for other in remote:
            on_remote.add(other.num_requests, other.tokens_input, other.cost, other.size)
        return self.spend_blocker(this, remote=on_remote)

    def spend_blocker(self, this: Amounts, *, remote: Amounts | None = None) -> str | None:
        """The option (remote, session or task limit) that spending ``this`` would exceed, or None."""
        ts, ms = self.limits.max_token_safety, self.limits.max_mb_safety
        totals = self.S.totals
        task = Amounts(totals.pushed_requests, totals.pushed_tokens, totals.pushed_cost, 0)
        checks = [(self.limits.session, self.session), (self.limits.task, task)]
        if remote is not None:
            checks.insert(0, (self.limits.remote, remote))
        for limit, used in checks:
            exceeded = limit.exceeded_by(used + this, ts, ms)
            if exceeded:
                return exceeded
        return None

    def note_blocked(self, reason: str | None) -> None:
        if reason is not None and reason != self._last_block_reason:
            message = f"Not sending more requests for now: limit {reason} reached"
            log.info(message)
            self.events.emit(LIMIT_REACHED, limit=reason, message=message)
        self._last_block_reason = reason

    def push_batches(self) -> int:
        """Push local batches while the remote, session and task limits allow; returns how many were pushed."""
        if self.opts.force_direct:
            self._convert_local_to_direct()  # e.g. batches cut by an earlier run without --force_direct
            return 0
        pushed = 0
        for batch in self.S.batches_in(BatchStatus.LOCAL):
            if self.stop_check():
                break
            reason = self.push_blocker(batch)
            self.note_blocked(reason)
            if reason is not None:
                break
            if self.dryrun:
                log.info("Dry run: would push batch %d (%d requests)", batch.id, batch.num_requests)
                continue
            self._push(batch)
            pushed += 1
        return pushed

    def _check_batch_file(self, batch: BatchState) -> None:
        """Refuse to upload (and pay for) a local batch file that was damaged since it was written."""
        path = self.layout.batch_input(batch.id)
        size = path.stat().st_size if path.exists() else -1
        if size != batch.size:
            raise TaskFileError(
                f"{path} has {max(size, 0)} bytes but was written with {batch.size}: it was truncated or changed "
                "outside gpt_batch_api. Nothing was uploaded. Restore the file, or drop the pending batches with "
                "--wipe_requests.",
                str(path),
            )

    def _push(self, batch: BatchState) -> None:
        self._check_batch_file(batch)
        batch.status = BatchStatus.PUSHING
        batch.push_started_at = time.time()
        self.commit()
        crash_point("push_after_mark")
        if batch.remote.file_id is None:
            with open(self.layout.batch_input(batch.id), "rb") as file:
                uploaded = self._api(
                    f"upload of batch {batch.id}",
                    lambda: self.client.files.create(file=(self._remote_filename(batch), file), purpose="batch"),
                )
            batch.remote.file_id = uploaded.id
            self.commit()
            crash_point("push_after_upload")
        remote = self._create_remote_batch(batch)
        crash_point("push_after_create")
        self._adopt(batch, remote)
        self.commit()
        self.events.emit(BATCH_PUSHED, batch_id=batch.id, remote_id=remote.id, num_requests=batch.num_requests)
        log.info("Pushed batch %d as %s (%d requests)", batch.id, remote.id, batch.num_requests)

    def _create_remote_batch(self, batch: BatchState) -> Any:
        client = self.client.with_options(max_retries=0)  # an SDK retry could create a second batch
        delay = 1.0
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                return client.batches.create(
                    input_file_id=batch.remote.file_id,
                    endpoint=self.endpoint.path,
                    completion_window="24h",
                    metadata=self._metadata(batch),
                )
            except openai.OpenAIError as exc:
                what = f"create batch {batch.id}"
                transient = isinstance(exc, openai.APIConnectionError | openai.InternalServerError)
                if isinstance(exc, openai.RateLimitError):
                    transient = error_kind(exc.status_code, exc.body) != ErrorKind.QUOTA
                if not transient:
                    raise self._api_error(exc, what) from exc
                found = self._find_remote_batch(batch)
                if found is not None:
                    log.info("Batch %d was created despite an error (%s): adopting %s", batch.id, exc, found.id)
                    return found
                if attempt == CREATE_ATTEMPTS:
                    raise self._api_error(exc, what) from exc
                log.warning("Creating batch %d failed (%s); retrying in %.0f s", batch.id, exc, delay)
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _find_remote_batch(self, batch: BatchState) -> Any | None:
        """The remote batch created for ``batch`` (found by metadata), if any."""
        since = (batch.push_started_at or 0) - 600  # clock skew margin
        wanted = self._metadata(batch)
        for remote in self._api("list batches", lambda: self.client.batches.list(limit=100)):
            if remote.created_at < since:
                break
            metadata = remote.metadata or {}
            if all(metadata.get(k) == v for k, v in wanted.items()):
                return remote
        return None

    def _adopt(self, batch: BatchState, remote: Any) -> None:
        batch.status = BatchStatus.REMOTE
        batch.remote.batch_id = remote.id
        batch.remote.file_id = remote.input_file_id
        batch.remote.created_at = float(remote.created_at)
        self._update_remote_info(batch, remote)
        totals = self.S.totals
        totals.pushed_requests += batch.num_requests
        totals.pushed_tokens += batch.tokens_input
        totals.pushed_cost += batch.cost
        totals.pushed_batches += 1
        self.session.add(batch.num_requests, batch.tokens_input, batch.cost, batch.size)

    def resolve_pushing(self) -> None:
        """After a crash mid-push: adopt the remote batch if it exists, else delete the orphan file and re-push."""
        for batch in self.S.batches_in(BatchStatus.PUSHING):
            try:
                remote = self._find_remote_batch(batch)
            except BatchAPIUnavailableError:
                remote = None
            if remote is not None:
                log.info(
                    "Batch %d was pushed before the interruption: adopting remote batch %s",
                    batch.id,
                    remote.id,
                )
                self._adopt(batch, remote)
            else:
                self._delete_orphan_uploads(batch)
                batch.status = BatchStatus.LOCAL
                batch.push_started_at = None
                batch.remote = RemoteInfo()
            self.commit()

    def _delete_orphan_uploads(self, batch: BatchState) -> None:
        name = self._remote_filename(batch)
        try:
            orphans = {f.id for f in self.client.files.list(purpose="batch") if f.filename == name}
        except (openai.NotFoundError, openai.APIConnectionError):
            orphans = set()
        if batch.remote.file_id:
            orphans.add(batch.remote.file_id)
        for file_id in orphans:
            log.info("Deleting uploaded file %s of batch %d: it never became a batch", file_id, batch.id)
            self._delete_remote_file(file_id)

    def _delete_remote_file(self, file_id: str) -> None:
        try:
            self.client.files.delete(file_id)
        except openai.NotFoundError:
            pass

    # ------------------------------------------------------------------ poll and download

    def _update_remote_info(self, batch: BatchState, remote: Any) -> None:
        info = batch.remote
        info.status = remote.status
        counts = remote.request_counts
        if counts is not None:
            info.completed, info.failed, info.total = counts.completed, counts.failed, counts.total
        info.output_file_id = remote.output_file_id
        info.error_file_id = remote.error_file_id
        errors = getattr(remote.errors, "data", None) or []
        info.errors = [{"code": e.code, "message": e.message, "line": e.line} for e in errors]

    def update_remote(self) -> int:
        """Poll the running remote batches; download the ones that ended. Returns how many ended."""
        if self.dryrun:
            return 0
        ended = 0
        for batch in self.S.batches_in(BatchStatus.REMOTE):
            try:
                remote = self.client.batches.retrieve(batch.remote.batch_id)
            except openai.NotFoundError:
                log.warning(
                    "Remote batch %s of batch %d no longer exists (deleted by someone else): its "
                    "requests will be retried",
                    batch.remote.batch_id,
                    batch.id,
                )
                batch.remote.status = "missing"
                batch.status = BatchStatus.FINISHED
                self.commit()
                ended += 1
                continue
            except openai.OpenAIError as exc:
                raise translate_api_error(exc, f"poll batch {batch.id}", str(self.client.base_url)) from exc
            self._update_remote_info(batch, remote)
            if remote.status in TERMINAL_STATUSES and self._finish(batch):
                ended += 1
        self.events.emit(REMOTE_PROGRESS, batches=self.remote_progress())
        if ended and self.congested_since is not None:
            log.info("A remote batch ended: pushing again after token_limit_exceeded")
            self.congested_since = None
        return ended

    def remote_progress(self) -> list[dict[str, Any]]:
        now = time.time()
        return [
            {
                "batch_id": b.id,
                "remote_id": b.remote.batch_id,
                "status": b.remote.status,
                "completed": b.remote.completed,
                "failed": b.remote.failed,
                "total": b.remote.total or b.num_requests,
                "age_s": now - (b.remote.created_at or b.created_at),
            }
            for b in self.S.batches_in(BatchStatus.REMOTE, BatchStatus.FINISHED)
        ]

    def _finish(self, batch: BatchState) -> bool:
        """Download an ended batch; False if it was refused for congestion (it did not run, so it frees no
        room: counting it as ended would lift the congestion wait it just caused)."""
        info = batch.remote
        if info.status == "failed" and any(e.get("code") == "token_limit_exceeded" for e in info.errors):
            self._requeue_congested(batch)
            return False
        for file_id, path in (
            (info.output_file_id, self.layout.batch_results(batch.id)),
            (info.error_file_id, self.layout.batch_errors(batch.id)),
        ):
            if file_id:
                content = self._api(
                    f"download of batch {batch.id}", functools.partial(self.client.files.content, file_id)
                )
                atomic_write_bytes(path, content.read())
        info.finished_at = time.time()
        batch.status = BatchStatus.FINISHED
        self.commit()
        crash_point("remote_after_download")
        self.events.emit(BATCH_FINISHED, batch_id=batch.id, status=info.status)
        log.info(
            "Batch %d ended on the remote: %s (%d completed, %d failed)",
            batch.id,
            info.status,
            info.completed,
            info.failed,
        )
        return True

    def _requeue_congested(self, batch: BatchState) -> None:
        """token_limit_exceeded is congestion, not failure: keep the batch local and push it again later."""
        log.warning(
            "Batch %d was refused with token_limit_exceeded (the organisation's enqueued-token limit). It stays "
            "local and will be pushed again once a running batch finishes; lower --max_remote_ktokens to avoid "
            "this.",
            batch.id,
        )
        # What was running when the batch was refused is about what fits: push no more than that at once
        # (without this, every batch cut meanwhile is pushed the moment one ends, and most are refused).
        accepted = sum(
            other.tokens_input
            for other in self.S.batches_in(BatchStatus.REMOTE, BatchStatus.FINISHED)  # finished: in this poll
            if other.id != batch.id and other.remote.status not in ("validating", "failed")
        )
        if accepted:
            self.congestion_tokens = min(accepted, self.congestion_tokens or accepted)
        self.unpush(batch)
        self.congested_since = time.time()
        self.commit()
        self.cleanup_remote()

    def unpush(self, batch: BatchState) -> None:
        """Undo a push whose requests got no usable answer: the batch is local again (a direct one unstarted),
        out of the pushed totals and the session's spending, its remote files marked for deletion. The
        caller commits."""
        info = batch.remote
        self.S.remote_cleanup.extend(f for f in (info.file_id, info.output_file_id, info.error_file_id) if f)
        if batch.push_started_at is not None or batch.status != BatchStatus.DIRECT:
            totals = self.S.totals
            totals.pushed_requests -= batch.num_requests
            totals.pushed_tokens -= batch.tokens_input
            totals.pushed_cost -= batch.cost
            if batch.status == BatchStatus.DIRECT:
                totals.direct_batches -= 1
            else:
                totals.pushed_batches -= 1
            self.session.add(-batch.num_requests, -batch.tokens_input, -batch.cost, -batch.size)
        if batch.status != BatchStatus.DIRECT:
            batch.status = BatchStatus.LOCAL
        batch.push_started_at = None
        batch.remote = RemoteInfo()

    def congestion_expired(self) -> None:
        """With nothing running on the remote, congestion cannot clear by itself: retry after a pause."""
        if self.congested_since is None or self.S.batches_in(BatchStatus.REMOTE):
            return
        if time.time() - self.congested_since >= self.opts.remote_update_interval:
            self.congested_since = None

    def cleanup_remote(self) -> None:
        """Delete remote files that a committed state marked as garbage."""
        if self.dryrun or not self.S.remote_cleanup:
            return
        for file_id in list(self.S.remote_cleanup):
            try:
                self._delete_remote_file(file_id)
            except openai.OpenAIError as exc:
                log.warning("Could not delete remote file %s (%s); will try again later", file_id, exc)
                return
        self.S.remote_cleanup = []
        self.commit()

    def cancel_remote(self, batch: BatchState) -> None:
        """Cancel a remote batch (for --wipe_requests) and mark its files for deletion."""
        if batch.remote.batch_id and batch.status == BatchStatus.REMOTE:
            try:
                self.client.batches.cancel(batch.remote.batch_id)
            except openai.OpenAIError as exc:
                log.warning("Could not cancel remote batch %s: %s", batch.remote.batch_id, exc)
        for file_id in (batch.remote.file_id, batch.remote.output_file_id, batch.remote.error_file_id):
            if file_id:
                self.S.remote_cleanup.append(file_id)
