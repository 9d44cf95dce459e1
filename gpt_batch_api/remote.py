"""The remote side of batches: push exactly once, poll, download, cancel and delete.

Exactly once: before uploading, a batch is marked PUSHING (committed). The remote batch carries metadata
naming the task and the local batch, and the create call is made with the SDK's own retries off. If the
create times out, or the process dies before the state records the remote id, the remote batch is looked
up by that metadata and adopted instead of being created again; an uploaded file that never became a
batch is deleted.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import openai

from .downloads import download_file
from .error_kinds import STOPS_RUN, ErrorKind, error_kind
from .errors import (
    APIError,
    AuthenticationError,
    BatchAPIUnavailableError,
    QuotaExceededError,
    StopRequested,
    TaskFileError,
)
from .events import BATCH_FINISHED, BATCH_PUSHED, LIMIT_REACHED, REMOTE_PROGRESS
from .limits import Amounts
from .redact import redact
from .requester_base import RequesterBase
from .requester_state import BatchState, BatchStatus, RemoteInfo
from .server_answers import KNOWN_BATCH_STATUSES, MalformedAnswerError, checked_answer, malformed, result_file_problem
from .store.atomic import crash_point

__all__ = ["RemoteMixin", "describe_connection_error", "translate_api_error"]

log = logging.getLogger(__name__)

TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
META_TASK = "gpt_batch_api_task"
META_BATCH = "gpt_batch_api_batch"
CREATE_ATTEMPTS = 5
CREATE_RETRY_DELAY_S = 1.0  # the first pause between create attempts; doubled after each
DOWNLOAD_ATTEMPTS = 3
DOWNLOAD_RETRY_DELAY_S = 0.5  # pause before the second download attempt; then one more step each time
# Polling a batch may fail for a while (a gateway's 502s, an HTML page): keep polling, and stop with advice
# only when it has failed POLL_FAILURES times in a row over at least POLL_GIVE_UP_S seconds.
POLL_FAILURES = 10
POLL_GIVE_UP_S = 600.0
UNKNOWN_STATUS_GIVE_UP_S = 3600.0  # a status we do not know, seen that long, stops the run with advice
SDK_PARSE_ERRORS = (ValueError, AttributeError, TypeError)  # what the SDK raises on a body that is not JSON
T = TypeVar("T")


def translate_api_error(exc: Exception, what: str, base_url: str | None = None) -> Exception:
    """Our error for an SDK error, with a message that names the fix (read by ``error_kind``: a gateway
    may answer a quota or key problem with another status), and no credentials of the base URL."""
    error = _translate_api_error(exc, what, base_url)
    if isinstance(error, APIError):
        error.args = (redact(str(error)),)
    return error


def _translate_api_error(exc: Exception, what: str, base_url: str | None = None) -> Exception:
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
        transient = exc.status_code >= 500 or exc.status_code in (408, 409, 429)
        advice = (
            " The server may be overloaded or failing: nothing is lost, rerun the same command later."
            if transient
            else ""
        )
        return APIError(f"{what} failed with HTTP {exc.status_code}: {exc.message}.{advice}", exc.status_code)
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
    if timed_out:
        return "timeout", f"no answer in time ({type(root).__name__}: {root})"
    return "connection_error", f"connection failed ({type(root).__name__}: {root})"


def _worth_waiting_out(exc: APIError) -> bool:
    """A failed poll that the next poll may not see: a 5xx, 429, no connection, or a garbled answer."""
    if isinstance(exc, QuotaExceededError | AuthenticationError):
        return False
    transient = openai.APIConnectionError | openai.InternalServerError | openai.RateLimitError
    return isinstance(exc, MalformedAnswerError) or isinstance(exc.__cause__, transient)


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
    _poll_failures: dict[int, tuple[int, float]]  # batch id -> (failed polls in a row, monotonic time of the first)
    _unknown_statuses: dict[int, tuple[str, float]]  # batch id -> (unknown status, monotonic time first seen)

    def _api(self, what: str, call: Callable[[], T], kind: type | None = None) -> T:
        """``call()`` (an SDK call); its failures as our errors, and an answer that is no ``kind`` refused."""
        try:
            with self.interruptible():  # a slow server: the first Ctrl+C need not wait (every call is resumable)
                answer = call()
        except openai.OpenAIError as exc:
            if isinstance(exc.__cause__, StopRequested):  # the SDK wraps what interrupted its HTTP call
                raise exc.__cause__ from None
            raise self._api_error(exc, what) from exc
        except SDK_PARSE_ERRORS as exc:
            raise malformed(what, f"{type(exc).__name__}: {exc}") from None
        return checked_answer(what, answer, kind) if kind is not None else answer

    def _api_error(self, exc: Exception, what: str) -> Exception:
        if isinstance(exc, openai.NotFoundError) and what.startswith(("upload", "create batch", "list batches")):
            if not str(self.client.base_url).rstrip("/").endswith("/v1"):  # most often the URL, not the server
                return BatchAPIUnavailableError(
                    f"{what}: the URL answers 404 for /files. Check --client_base_url "
                    f"{redact(str(self.client.base_url))}: does it end in /v1? (A local server without a Batch "
                    "API needs --force_direct as well.)",
                    404,
                )
            return BatchAPIUnavailableError(
                f"{what}: the server at {redact(str(self.client.base_url))} has no Files/Batches API (HTTP 404). Local "
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
            message = f"Not sending more requests for now: {self.opts.option_text(reason)} reached"
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
        path, info_path = self.layout.batch_input(batch.id), self.layout.batch_info(batch.id)
        size = path.stat().st_size if path.exists() else -1
        problem = None
        if size != batch.size:
            problem = f"{path} has {max(size, 0)} bytes but was written with {batch.size}"
        else:  # C-speed counts: every line is one request of ours, and the info file lists each of them
            data = path.read_bytes()
            n = batch.num_requests
            if not data.startswith(b'{"custom_id":"') or data.count(b'\n{"custom_id":"') != n - 1:
                problem = f"{path} does not hold the {n} request lines it was written with"
            elif not info_path.exists() or info_path.read_bytes().count(b"\n") != n:
                problem, path = f"{info_path} does not list the {n} requests of batch {batch.id}", info_path
        if problem is not None:
            raise TaskFileError(
                f"{problem}: it was changed outside gpt_batch_api. Nothing was uploaded. Restore the file, or drop "
                "the pending batches with --wipe_requests (answered samples are kept).",
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
                    f"upload of batch {batch.id}", lambda: self._upload(batch, file), openai.types.FileObject
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

    def _upload(self, batch: BatchState, file: Any) -> Any:
        """Upload the batch file. A first try without the SDK's retries: an answer that no retry can change
        (quota, key, URL) stops at once rather than after the SDK's back-off; anything else is tried again
        with them."""
        name = self._remote_filename(batch)
        try:
            return self.client.with_options(max_retries=0).files.create(file=(name, file), purpose="batch")
        except openai.APIStatusError as exc:
            if error_kind(exc.status_code, exc.body) in STOPS_RUN:
                raise
        except openai.APIConnectionError:
            pass
        file.seek(0)
        return self.client.files.create(file=(name, file), purpose="batch")

    def _create_remote_batch(self, batch: BatchState) -> Any:
        client = self.client.with_options(max_retries=0)  # an SDK retry could create a second batch
        delay = CREATE_RETRY_DELAY_S
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            what = f"create batch {batch.id}"
            try:
                return self._api(
                    what,
                    lambda: client.batches.create(
                        input_file_id=batch.remote.file_id,
                        endpoint=self.endpoint.path,
                        completion_window="24h",
                        metadata=self._metadata(batch),
                    ),
                    openai.types.Batch,
                )
            except (APIError, openai.OpenAIError) as error:
                exc = error.__cause__ if isinstance(error.__cause__, openai.OpenAIError) else error
                # A garbled answer may hide a batch that was created: look it up like after a timeout.
                transient = isinstance(
                    exc, openai.APIConnectionError | openai.InternalServerError | MalformedAnswerError
                )
                if isinstance(exc, openai.RateLimitError):
                    transient = error_kind(exc.status_code, exc.body) != ErrorKind.QUOTA
                if not transient:
                    raise error
                found = self._find_remote_batch(batch)
                if found is not None:
                    log.info("Batch %d was created despite an error (%s): adopting %s", batch.id, exc, found.id)
                    return found
                if attempt == CREATE_ATTEMPTS:
                    raise error
                log.warning("Creating batch %d failed (%s); retrying in %.0f s", batch.id, exc, delay)
                with self.interruptible():
                    time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _find_remote_batch(self, batch: BatchState) -> Any | None:
        """The remote batch created for ``batch`` (found by metadata), if any."""
        since = (batch.push_started_at or 0) - 600  # clock skew margin
        wanted = self._metadata(batch)
        page = self._api("list batches", lambda: self.client.batches.list(limit=100))
        while True:
            data = getattr(page, "data", None)
            if not isinstance(data, list):
                raise malformed("list batches", f"got {type(page).__name__}")
            for remote in data:
                checked_answer("list batches", remote, openai.types.Batch)
                if not isinstance(remote.created_at, int | float) or remote.created_at < since:
                    return None
                metadata = remote.metadata if isinstance(remote.metadata, dict) else {}
                if all(metadata.get(k) == v for k, v in wanted.items()):
                    return remote
            if not data or not page.has_next_page():
                return None
            page = self._api("list batches", page.get_next_page)

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
            orphans = {f.id for f in self.client.files.list(purpose="batch") if getattr(f, "filename", None) == name}
        except (openai.NotFoundError, openai.APIConnectionError, *SDK_PARSE_ERRORS):
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
            remote = self._poll(batch)
            if remote is None:
                continue
            if remote == "missing":
                log.warning(
                    "Remote batch %s of batch %d is gone from the server (deleted there, or a local server that "
                    "restarted without its state): its %d requests are sent again, without using their retries",
                    batch.remote.batch_id,
                    batch.id,
                    batch.num_requests,
                )
                batch.remote.status = "missing"
                batch.status = BatchStatus.FINISHED
                self.commit()
                ended += 1
                continue
            self._update_remote_info(batch, remote)
            self._note_status(batch)
            if remote.status in TERMINAL_STATUSES and self._finish(batch):
                ended += 1
        self.events.emit(REMOTE_PROGRESS, batches=self.remote_progress())
        if ended and self.congested_since is not None:
            log.info("A remote batch ended: pushing again after token_limit_exceeded")
            self.congested_since = None
        return ended

    def _poll(self, batch: BatchState) -> Any:
        """The remote batch, "missing" if the server has none such, or None after a failure worth waiting out
        (a 5xx, no connection, an answer that is no batch); stops with advice when failures go on for long."""
        what = f"poll batch {batch.id}"
        failures = self._poll_failures
        try:
            remote = self._api(what, lambda: self.client.batches.retrieve(batch.remote.batch_id), openai.types.Batch)
        except APIError as exc:
            cause = exc.__cause__
            if isinstance(cause, openai.NotFoundError):
                # A 404 from a gateway must not make us buy the batch again: believe it only if the batch is
                # also absent from the list of batches.
                try:
                    found = self._find_remote_batch(batch)
                except BatchAPIUnavailableError:  # no list either: the batch routes are gone, not a gateway's 404
                    found = None
                if found is None:
                    failures.pop(batch.id, None)
                    return "missing"
            elif not _worth_waiting_out(exc):
                raise
            count, since = failures.get(batch.id, (0, time.monotonic()))
            failures[batch.id] = (count + 1, since)
            if count + 1 >= POLL_FAILURES and time.monotonic() - since >= POLL_GIVE_UP_S:
                raise APIError(
                    f"{exc} Polling batch {batch.id} ({batch.remote.batch_id}) has failed {count + 1} times in a row "
                    f"for {time.monotonic() - since:.0f} s. The batch is kept as it is and nothing is bought again: "
                    "check the server or --client_base_url, then rerun the same command."
                ) from None
            log.warning("%s (failure %d in a row; polling again later)", exc, count + 1)
            return None
        failures.pop(batch.id, None)
        return remote

    def _note_status(self, batch: BatchState) -> None:
        """Log a batch status we do not know once; stop with advice if the batch keeps it for long."""
        status = batch.remote.status or ""
        unknown = self._unknown_statuses
        if status in KNOWN_BATCH_STATUSES:
            unknown.pop(batch.id, None)
            return
        first_seen = unknown.get(batch.id, (status, time.monotonic()))
        if first_seen[0] != status:
            first_seen = (status, time.monotonic())
        if batch.id not in unknown or unknown[batch.id][0] != status:
            log.warning(
                "Batch %d (%s) has the status %r, which gpt_batch_api does not know; it is treated as still running.",
                batch.id,
                batch.remote.batch_id,
                status,
            )
        unknown[batch.id] = first_seen
        if time.monotonic() - first_seen[1] >= UNKNOWN_STATUS_GIVE_UP_S:
            raise APIError(
                f"Batch {batch.id} ({batch.remote.batch_id}) has had the unknown status {status!r} for "
                f"{time.monotonic() - first_seen[1]:.0f} s. Check it on the provider's dashboard; rerun the same "
                "command to keep waiting, or rerun with --wipe_requests to cancel it and send its requests again "
                "(this buys them again)."
            )

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
        if info.completed > 0 and not info.output_file_id:
            raise APIError(
                f"Batch {batch.id} ({info.batch_id}) is {info.status} with {info.completed} answered requests, but "
                "the server names no output file. The batch is kept as it is and nothing is bought again: rerun "
                "the same command later to look again. If the provider has lost the answers, rerun with "
                "--wipe_requests to send the unanswered requests again (this buys them again)."
            )
        for file_id, path, expected in (
            (info.output_file_id, self.layout.batch_results(batch.id), info.completed),
            (info.error_file_id, self.layout.batch_errors(batch.id), info.failed),
        ):
            if file_id:  # streamed to the task directory: a 200 MB result file is never held in memory
                self._download_results(batch, file_id, path, expected)
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

    def _download_results(self, batch: BatchState, file_id: str, path: Path, expected: int) -> None:
        """Download a result file of ``batch`` to ``path`` and check it against the batch's own counts and the
        line format; try again when it is not a result file. A file that is only short is accepted when two
        downloads agree (the provider's file really lacks lines: those requests are retried as missing)."""
        what = f"download of file {file_id} of batch {batch.id}"
        problem, last_digest = "", b""
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            try:
                self._api(what, functools.partial(download_file, self.client, file_id, path))
            except APIError as exc:
                problem = str(exc)
            else:
                found, short_only = result_file_problem(path, expected=expected, total=batch.remote.total)
                if found is None:
                    return
                with open(path, "rb") as file:
                    digest = hashlib.file_digest(file, "sha256").digest()
                if short_only and digest == last_digest:
                    log.warning(
                        "Batch %d: %s; two downloads agree, so the missing requests are retried", batch.id, found
                    )
                    return
                last_digest, problem = (digest if short_only else b""), f"{what}: {found}"
                path.unlink(missing_ok=True)
            if attempt < DOWNLOAD_ATTEMPTS:
                log.warning("%s; downloading again", problem)
                with self.interruptible():
                    time.sleep(min(DOWNLOAD_RETRY_DELAY_S * attempt, 2.0))
        raise APIError(
            f"{problem}. The results of batch {batch.id} ({batch.remote.batch_id}) could not be downloaded intact "
            f"after {DOWNLOAD_ATTEMPTS} tries. The batch is kept as it is and nothing is bought again: rerun the same "
            "command later to download it again. If the provider has lost the file, rerun with --wipe_requests to "
            "send the unanswered requests again (this buys them again)."
        )

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
