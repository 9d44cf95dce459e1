"""The remote side of batches: push exactly once, poll, download, cancel and delete, through a ``BatchBackend``.

Exactly once: before anything is sent, a batch is marked PUSHING (committed). What the backend prepares (an
uploaded file) is committed before the create call; the remote batch carries a tag naming the task and the
local batch, and the create call is never retried blindly. If it fails in a way that may hide a created batch
(no answer, a 5xx, a garbled answer), or the process dies before the state records the remote id, the batch
is looked up by its tag (``BatchBackend.find``) and adopted instead of being created again; while a backend
cannot tell candidates apart (Anthropic: several running batches of the same size), the batch stays PUSHING
and nothing is submitted again. The engine names no provider: provider SDKs live in ``backends/``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from .backends.base import BatchBackend, BatchTag, CandidatesUnresolved, ForeignResults, RemoteBatch, RemoteStatus
from .batch_files import check_batch_file
from .budget import Budget, amounts_of
from .errors import (
    APIError,
    AuthenticationError,
    BatchAPIUnavailableError,
    ConfigError,
    QuotaExceededError,
)
from .events import BATCH_FINISHED, BATCH_PUSHED, REMOTE_PROGRESS, EventBus
from .limits import Amounts, Limits
from .requester_options import RequesterOptions
from .requester_state import BatchState, BatchStatus, RemoteInfo, RequesterState
from .server_answers import result_file_problem
from .store.atomic import crash_point
from .store.layout import TaskLayout

__all__ = ["RemoteBatches"]

log = logging.getLogger(__name__)

CREATE_ATTEMPTS = 5
CREATE_RETRY_DELAY_S = 1.0  # the first pause between create attempts; doubled after each
DOWNLOAD_ATTEMPTS = 3
DOWNLOAD_RETRY_DELAY_S = 0.5  # pause before the second download attempt; then one more step each time
# Polling a batch may fail for a while (a gateway's 502s, an HTML page): keep polling, and stop with advice
# only when it has failed POLL_FAILURES times in a row over at least POLL_GIVE_UP_S seconds.
POLL_FAILURES = 10
POLL_GIVE_UP_S = 600.0
UNKNOWN_STATUS_GIVE_UP_S = 3600.0  # a status we do not know, seen that long, stops the run with advice
T = TypeVar("T")


def _worth_waiting_out(exc: APIError) -> bool:
    """A failed poll that the next poll may not see: a 5xx, 429, no connection, or a garbled answer."""
    if isinstance(exc, QuotaExceededError | AuthenticationError):
        return False
    return exc.transient


def remote_info(remote: RemoteBatch, previous: RemoteInfo | None = None) -> RemoteInfo:
    """The persisted form of a backend's view; what ``previous`` knew of the push (the ``handles`` from
    ``prepare``, unless replaced, and where it was sent) is kept."""
    handles = previous.handles if previous is not None else None
    return RemoteInfo(
        backend=remote.backend,
        batch_id=remote.batch_id,
        status=remote.status.value,
        provider_status=remote.provider_status,
        succeeded=remote.succeeded,
        failed=remote.failed,
        total=remote.total,
        handles={**(handles or {}), **remote.handles},
        errors=list(remote.errors),
        congested=remote.congested,
        certain=remote.certain,
        created_at=remote.created_at or None,
        sent_backend=previous.sent_backend if previous is not None else None,
        sent_server=previous.sent_server if previous is not None else None,
    )


def remote_view(info: RemoteInfo) -> RemoteBatch:
    """The backend's view of a persisted remote info."""
    try:
        status = RemoteStatus(info.status or "pending")
    except ValueError:  # "missing"
        status = RemoteStatus.FAILED
    return RemoteBatch(
        backend=info.backend or "",
        batch_id=info.batch_id or "",
        status=status,
        provider_status=info.provider_status or "",
        total=info.total,
        succeeded=info.succeeded,
        failed=info.failed,
        created_at=info.created_at or 0.0,
        congested=info.congested,
        errors=list(info.errors),
        handles=dict(info.handles),
        certain=info.certain,
    )


class RemoteBatches:
    """The task's batches on the remote, through one ``BatchBackend`` (see the module docstring)."""

    def __init__(
        self,
        *,
        opts: RequesterOptions,
        limits: Limits,
        layout: TaskLayout,
        state: Callable[[], RequesterState],
        budget: Budget,
        events: EventBus,
        backend: Callable[[], BatchBackend],
        server: Callable[[], str],
        commit: Callable[[], None],
        stop_check: Callable[[], bool],
        interruptible: Callable[[], AbstractContextManager[Any]],
    ) -> None:
        self._opts = opts
        self._limits = limits
        self._layout = layout
        self._state = state  # the requester state is replaced when it is loaded: read it through this
        self._budget = budget
        self._events = events
        self._backend = backend  # made on first use (a dry run never makes one: see dryrun.py)
        self._server = server  # the API server this run talks to (server_identity)
        self._commit = commit
        self._stop_check = stop_check
        self._interruptible = interruptible
        self.congested_since: float | None = None  # token_limit_exceeded seen; push again when a batch ends
        self.congestion_tokens: int | None = None  # prompt tokens in flight that fit, learned from refusals
        self._poll_failures: dict[int, tuple[int, float]] = {}  # batch id -> (failed polls in a row, first)
        self._unknown_statuses: dict[int, tuple[str, float]] = {}  # batch id -> (unknown status, first seen)

    def _api(self, call: Callable[[], T]) -> T:
        """A backend call; the first Ctrl+C need not wait for a slow server (every call is resumable)."""
        with self._interruptible():
            return call()

    def _tag(self, batch: BatchState) -> BatchTag:
        return BatchTag(self._state().task_uid, batch.id)

    # ------------------------------------------------------------------ push

    def push_blocker(self, batch: BatchState) -> str | None:
        """Why ``batch`` cannot be pushed now (the option that limits it), or None."""
        if self.congested_since is not None:
            return "token_limit_exceeded (waiting for running batches to finish)"
        remote = self._state().batches_in(BatchStatus.PUSHING, BatchStatus.REMOTE)
        in_flight = sum(other.tokens_input for other in remote)
        if self.congestion_tokens is not None and in_flight and in_flight + batch.tokens_input > self.congestion_tokens:
            return f"token_limit_exceeded (about {self.congestion_tokens} tokens fit in flight)"
        if len(remote) >= self._limits.max_remote_batches:
            return "max_remote_batches"
        on_remote = Amounts()
        for other in remote:
            on_remote.add(other.num_requests, other.tokens_input, other.cost, other.size)
        return self._budget.blocker(amounts_of(batch), remote=on_remote)

    def push_batches(self) -> int:
        """Push local batches while the remote, session and task limits allow; returns how many were pushed."""
        pushed = 0
        for batch in self._pushable():
            self._push(batch)
            pushed += 1
        return pushed

    def _pushable(self) -> Iterator[BatchState]:
        """The local batches, in order, while the remote, session and task limits allow each one (checked when
        it is reached: pushing the one before changes what is in flight)."""
        for batch in self._state().batches_in(BatchStatus.LOCAL):
            if self._stop_check():
                return
            reason = self.push_blocker(batch)
            self._budget.note_blocked(reason)
            if reason is not None:
                return
            yield batch

    def _push(self, batch: BatchState) -> None:
        check_batch_file(self._layout, batch)
        batch.move_to(BatchStatus.PUSHING)
        batch.push_started_at = time.time()
        self._commit()
        crash_point("push_after_mark")
        path, tag = self._layout.batch_input(batch.id), self._tag(batch)
        if not batch.remote.handles:
            batch.remote.handles = self._api(lambda: self._backend().prepare(path, tag))
        # Where the create goes, committed before it is sent: a batch exists only there (see sent_elsewhere).
        batch.remote.sent_backend, batch.remote.sent_server = self._backend().name, self._server()
        self._commit()
        crash_point("push_after_upload")
        try:
            remote = self._create_remote_batch(batch)
        except CandidatesUnresolved as exc:
            log.warning("Batch %d: %s It stays pushing; nothing is submitted twice.", batch.id, exc)
            return
        crash_point("push_after_create")
        self._adopt(batch, remote)
        self._commit()
        self._events.emit(BATCH_PUSHED, batch_id=batch.id, remote_id=remote.batch_id, num_requests=batch.num_requests)
        log.info("Pushed batch %d as %s (%d requests)", batch.id, remote.batch_id, batch.num_requests)

    def _create_remote_batch(self, batch: BatchState) -> RemoteBatch:
        path, tag = self._layout.batch_input(batch.id), self._tag(batch)
        delay = CREATE_RETRY_DELAY_S
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                return self._api(lambda: self._backend().submit(path, tag, batch.num_requests, batch.remote.handles))
            except APIError as error:
                if not _worth_waiting_out(error):
                    raise
                # No answer, a 5xx or a garbled one may hide a batch that was created: look it up first.
                found = self._find_remote_batch(batch)
                if found is not None:
                    log.info("Batch %d was created despite an error (%s): adopting %s", batch.id, error, found.batch_id)
                    return found
                if attempt == CREATE_ATTEMPTS:
                    raise
                log.warning("Creating batch %d failed (%s); retrying in %.0f s", batch.id, error, delay)
                with self._interruptible():
                    time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _find_remote_batch(self, batch: BatchState) -> RemoteBatch | None:
        """The remote batch created for ``batch`` (found by its tag), if any; raises CandidatesUnresolved."""
        since = batch.push_started_at or 0.0
        known = frozenset(b.remote.batch_id for b in self._state().batches if b.remote.batch_id and b.id != batch.id)
        return self._api(lambda: self._backend().find(self._tag(batch), batch.num_requests, since, known))

    def _adopt(self, batch: BatchState, remote: RemoteBatch) -> None:
        batch.move_to(BatchStatus.REMOTE)
        batch.remote = remote_info(remote, batch.remote)
        self._budget.charge(batch)

    def sent_elsewhere(self, batch: BatchState) -> str | None:
        """Where ``batch`` was sent, if that is another backend or API server than this run's; else None."""
        info = batch.remote
        if info.sent_backend and info.sent_backend != self._backend().name:
            return f"{info.sent_backend} ({info.sent_server or 'its server'})"
        if info.sent_server and info.sent_server != self._server():
            return info.sent_server
        return None

    def _refuse_if_sent_elsewhere(self, batch: BatchState) -> None:
        """Stop, changing nothing, when ``batch`` is not found because it was sent to another server: taking it
        for gone would send its requests again while that server still runs them."""
        elsewhere = self.sent_elsewhere(batch)
        if elsewhere is None:
            return
        raise ConfigError(
            f"Batch {batch.id} ({batch.remote.batch_id or 'pushed'}) was sent to {elsewhere}, but this run talks to "
            f"{self._server()}, which does not know it. Nothing was changed. Rerun with the server it was sent to "
            "(--client_base_url, or the *_BASE_URL of the first run) to finish it; if that server is gone for good, "
            "drop it with --wipe_requests (its requests are sent again)."
        )

    def resolve_pushing(self) -> None:
        """Settle the batches whose push was cut short (a crash, or candidates the backend could not tell
        apart): adopt the remote batch if it exists, else discard what was prepared and make it local again."""
        for batch in self._state().batches_in(BatchStatus.PUSHING):
            try:
                remote = self._find_remote_batch(batch)
            except BatchAPIUnavailableError:
                remote = None
            except CandidatesUnresolved as exc:
                log.warning("Batch %d: %s It stays pushing; nothing is submitted twice.", batch.id, exc)
                continue
            if remote is not None:
                log.info(
                    "Batch %d was pushed before an interruption or a lost answer: adopting remote batch %s",
                    batch.id,
                    remote.batch_id,
                )
                self._adopt(batch, remote)
            else:
                self._refuse_if_sent_elsewhere(batch)
                try:
                    self._api(functools.partial(self._backend().discard, self._tag(batch), batch.remote.handles))
                except APIError as exc:
                    log.warning("Could not delete what batch %d uploaded (%s); it is harmless", batch.id, exc)
                batch.move_to(BatchStatus.LOCAL)
                batch.push_started_at = None
                batch.remote = RemoteInfo()
            self._commit()

    # ------------------------------------------------------------------ poll and download

    def update_remote(self) -> int:
        """Poll the running remote batches; download the ones that ended. Returns how many ended."""
        if self._state().batches_in(BatchStatus.PUSHING):
            self.resolve_pushing()  # candidates a backend could not tell apart may have ended meanwhile
        ended = 0
        for batch in self._state().batches_in(BatchStatus.REMOTE):
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
                batch.move_to(BatchStatus.FINISHED)
                self._commit()
                ended += 1
                continue
            assert isinstance(remote, RemoteBatch)
            batch.remote = remote_info(remote, batch.remote)
            self._note_status(batch)
            if remote.status.terminal and self._finish(batch):
                ended += 1
        self._events.emit(REMOTE_PROGRESS, batches=self.remote_progress())
        if ended and self.congested_since is not None:
            log.info("A remote batch ended: pushing again after token_limit_exceeded")
            self.congested_since = None
        return ended

    def _poll(self, batch: BatchState) -> RemoteBatch | str | None:
        """The remote batch, "missing" if the server has none such, or None after a failure worth waiting out
        (a 5xx, no connection, an answer that is no batch); stops with advice when failures go on for long."""
        failures = self._poll_failures
        try:
            remote = self._api(lambda: self._backend().status(remote_view(batch.remote)))
        except (APIError, KeyError) as exc:
            if isinstance(exc, KeyError):
                # A 404 from a gateway must not make us buy the batch again: believe it only if the batch is
                # also absent from the list of batches.
                try:
                    found = self._find_remote_batch(batch)
                except (BatchAPIUnavailableError, CandidatesUnresolved):  # no list either: the routes are gone
                    found = None
                if found is None:
                    self._refuse_if_sent_elsewhere(batch)
                    failures.pop(batch.id, None)
                    return "missing"
                exc = APIError(f"poll batch {batch.id}: the server answered 404 for {batch.remote.batch_id}", 404)
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
        unknown = self._unknown_statuses
        if batch.remote.status != RemoteStatus.UNKNOWN:
            unknown.pop(batch.id, None)
            return
        status = batch.remote.provider_status or ""
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
                "status": b.remote.provider_status or b.remote.status,
                "completed": b.remote.succeeded,
                "failed": b.remote.failed,
                "total": b.remote.total or b.num_requests,
                "age_s": now - (b.remote.created_at or b.created_at),
            }
            for b in self._state().batches_in(BatchStatus.REMOTE, BatchStatus.FINISHED)
        ]

    def _finish(self, batch: BatchState) -> bool:
        """Download an ended batch; False if it was refused for congestion (it did not run, so it frees no
        room: counting it as ended would lift the congestion wait it just caused), or if it turned out not to
        be ours (adopted from circumstantial evidence: it is pushed again)."""
        info = batch.remote
        if info.status == RemoteStatus.FAILED and info.congested:
            self._requeue_congested(batch)
            return False
        try:
            self._download_results(batch)
        except ForeignResults as exc:
            log.warning("Batch %d: %s; it was adopted by mistake and is pushed again", batch.id, exc)
            self.unpush(batch, keep_remote=True)
            self._commit()
            return False
        info.finished_at = time.time()
        batch.move_to(BatchStatus.FINISHED)
        self._commit()
        crash_point("remote_after_download")
        self._events.emit(BATCH_FINISHED, batch_id=batch.id, status=info.status)
        log.info(
            "Batch %d ended on the remote: %s (%d completed, %d failed)",
            batch.id,
            info.provider_status or info.status,
            info.succeeded,
            info.failed,
        )
        return True

    def _download_results(self, batch: BatchState) -> None:
        """Download the result files of ``batch`` to the task directory and check them against the batch's own
        counts and the line format; try again when one is not a result file. A file that is only short is
        accepted when two downloads agree (the provider's file really lacks lines: those requests are retried
        as missing)."""
        info = batch.remote
        files = (
            (self._layout.batch_results(batch.id), info.succeeded),
            (self._layout.batch_errors(batch.id), info.failed),
        )
        problem, last_digest = "", b""
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            for path, _ in files:
                path.unlink(missing_ok=True)
            try:
                download = functools.partial(self._backend().download, remote_view(info), self._tag(batch))
                self._api(functools.partial(download, files[0][0], files[1][0]))
            except APIError as exc:
                problem = str(exc)
            else:
                found, short_only, digest = None, True, b""
                for path, expected in files:
                    if not path.exists():
                        if expected > 0:
                            found, short_only = f"{path.name}: no file although the batch reports {expected}", False
                        continue
                    found_here, short_here = result_file_problem(path, expected=expected, total=info.total)
                    if found_here is not None:
                        found, short_only = found_here, short_only and short_here
                    with open(path, "rb") as file:
                        digest += hashlib.file_digest(file, "sha256").digest()
                if found is None:
                    return
                if short_only and digest == last_digest:
                    log.warning(
                        "Batch %d: %s; two downloads agree, so the missing requests are retried", batch.id, found
                    )
                    return
                last_digest, problem = (digest if short_only else b""), f"download of batch {batch.id}: {found}"
            if attempt < DOWNLOAD_ATTEMPTS:
                log.warning("%s; downloading again", problem)
                with self._interruptible():
                    time.sleep(min(DOWNLOAD_RETRY_DELAY_S * attempt, 2.0))
        for path, _ in files:
            path.unlink(missing_ok=True)
        raise APIError(
            f"{problem}. The results of batch {batch.id} ({info.batch_id}) could not be downloaded intact "
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
            for other in self._state().batches_in(BatchStatus.REMOTE, BatchStatus.FINISHED)  # finished: in this poll
            if other.id != batch.id and other.remote.status not in (RemoteStatus.PENDING, RemoteStatus.FAILED)
        )
        if accepted:
            self.congestion_tokens = min(accepted, self.congestion_tokens or accepted)
        self.unpush(batch)
        self.congested_since = time.time()
        self._commit()
        self.cleanup_remote()

    def unpush(self, batch: BatchState, *, keep_remote: bool = False) -> None:
        """Undo a push whose requests got no usable answer: the batch is local again (a direct one unstarted),
        out of the pushed totals and the session's spending, its remote side marked for deletion (unless
        ``keep_remote``: a batch adopted by mistake belongs to someone else). The caller commits."""
        info = batch.remote
        if info.backend and not keep_remote and info.certain:
            self._state().remote_cleanup.append(info)
        if batch.push_started_at is not None or batch.status != BatchStatus.DIRECT:
            self._budget.refund(batch)
        if batch.status != BatchStatus.DIRECT:
            batch.move_to(BatchStatus.LOCAL)
        batch.push_started_at = None
        batch.remote = RemoteInfo()

    def congestion_expired(self) -> None:
        """With nothing running on the remote, congestion cannot clear by itself: retry after a pause."""
        if self.congested_since is None or self._state().batches_in(BatchStatus.REMOTE):
            return
        if time.time() - self.congested_since >= self._opts.remote_update_interval:
            self.congested_since = None

    def cleanup_remote(self) -> None:
        """Delete what a committed state marked as garbage on the remote (files, ended batches)."""
        S = self._state()
        if not S.remote_cleanup:
            return
        for info in list(S.remote_cleanup):
            try:
                self._api(functools.partial(self._backend().delete, remote_view(info)))
            except APIError as exc:
                log.warning("Could not delete remote %s (%s); will try again later", info.batch_id or info.handles, exc)
                return
        S.remote_cleanup = []
        self._commit()

    def cancel(self, batch: BatchState) -> None:
        """Cancel ``batch`` on the remote (for --wipe_requests; a push cut short is settled first: the batch may
        exist) and mark its remote side for deletion. The caller commits."""
        elsewhere = self.sent_elsewhere(batch)
        if elsewhere is not None and batch.status in (BatchStatus.PUSHING, BatchStatus.REMOTE):
            log.warning(
                "Batch %d (%s) was sent to %s and is not cancelled by this run: cancel it there, or it runs and is "
                "paid for while its requests are sent again.",
                batch.id,
                batch.remote.batch_id or "its remote id was never known",
                elsewhere,
            )
            return
        if batch.status == BatchStatus.PUSHING:
            remote = self._find_remote_batch(batch)
            if remote is not None:
                self._adopt(batch, remote)
        if batch.remote.batch_id and batch.status == BatchStatus.REMOTE:
            try:
                self._api(lambda: self._backend().cancel(remote_view(batch.remote)))
            except APIError as exc:
                log.warning("Could not cancel remote batch %s: %s", batch.remote.batch_id, exc)
        if batch.remote.backend:
            self._state().remote_cleanup.append(batch.remote)
