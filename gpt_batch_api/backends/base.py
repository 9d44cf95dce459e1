"""The seam between the engine and a batch provider: ``BatchBackend``.

The engine keeps its queue, local batch files, limits, commits and crash recovery; a backend only moves a
local batch file to a provider and its answers back. The engine names no provider: it holds
``RemoteBatch`` values (backend name + opaque ids + neutral status and counts) and calls these methods.

Local batch files are in the engine's format: one JSON line per request,
``{"custom_id", "method", "url", "body"}`` (OpenAI's batch input format). Result files a backend writes are
in the engine's result format: one JSON line per answered request,
``{"custom_id", "response": {"status_code", "body"}, "error"}`` (OpenAI's output format); a request the
provider did not finish gets ``"error": {"code": "batch_expired" | "batch_cancelled", "message"}``.

Exactly once: every submission carries a ``BatchTag`` naming the task and the local batch. Before the
engine submits a batch again after a crash or a lost answer, it asks ``find(tag)``; a backend must make
that answer reliable (OpenAI: batch metadata; Anthropic: tagged ``custom_id``s, see docs/DESIGN.md).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "BatchBackend",
    "BatchTag",
    "CandidatesUnresolved",
    "DownloadSummary",
    "ForeignResults",
    "InputTokenCounter",
    "RemoteBatch",
    "RemoteStatus",
    "TokenCounts",
]


class RemoteStatus(enum.StrEnum):
    """A provider's batch status in the engine's words."""

    PENDING = "pending"  # accepted, not started (OpenAI: validating)
    RUNNING = "running"
    ENDING = "ending"  # finishing or cancelling: answers not downloadable yet
    COMPLETED = "completed"  # every request answered (some answers may be errors)
    EXPIRED = "expired"  # the completion window ended: finished answers are delivered, the rest are not
    CANCELLED = "cancelled"  # finished answers are delivered, the rest are not
    FAILED = "failed"  # refused as a whole (validation, or the enqueued-token limit: see ``congested``)
    UNKNOWN = "unknown"  # a provider word the backend does not know: treated as running (``provider_status``)

    @property
    def terminal(self) -> bool:
        return self in (RemoteStatus.COMPLETED, RemoteStatus.EXPIRED, RemoteStatus.CANCELLED, RemoteStatus.FAILED)


@dataclasses.dataclass(frozen=True)
class BatchTag:
    """Who a remote batch belongs to: the task's uid and the local batch number."""

    task_uid: str
    batch_id: int

    @property
    def token(self) -> str:
        """A short identity usable in ids (``[A-Za-z0-9]``, 24 characters)."""
        return f"t{self.task_uid[:16]}b{self.batch_id:06d}"


@dataclasses.dataclass
class RemoteBatch:
    """What the engine persists and reads about one remote batch."""

    backend: str
    batch_id: str
    status: RemoteStatus
    provider_status: str  # the provider's own word, for logs and the status report
    total: int = 0
    succeeded: int = 0
    failed: int = 0  # errored, expired and cancelled requests (once known)
    created_at: float = 0.0
    congested: bool = False  # FAILED because the provider's enqueued-token limit was reached: push again later
    errors: list[str] = dataclasses.field(default_factory=list)  # why a FAILED batch was refused
    handles: dict[str, str] = dataclasses.field(default_factory=dict)  # opaque ids the backend needs later
    certain: bool = True  # False: found by ``find`` from circumstantial evidence (see ``find``)


@dataclasses.dataclass(frozen=True)
class DownloadSummary:
    lines: int  # result lines written (answers and error lines)
    succeeded: int


class CandidatesUnresolved(Exception):
    """``find`` saw several remote batches that could be this one and cannot tell them apart yet.

    The engine must not submit the batch again; it asks ``find`` later (candidates that end become certain).
    """


class ForeignResults(Exception):
    """A batch adopted without certainty turned out, once its results were readable, not to be ours."""


@runtime_checkable
class BatchBackend(Protocol):
    """One provider's batch API. Methods raise ``gpt_batch_api.errors.APIError`` (or a subclass) for an
    answer that is not usable, with a message naming the fix; never a provider SDK exception."""

    name: str
    max_requests: int  # per batch
    max_bytes: int  # per batch input

    def prepare(self, batch_file: Path, tag: BatchTag) -> dict[str, str]:
        """Send what must be on the provider before a batch is created (OpenAI: upload the input file).

        Returns the handles that ``submit`` needs; the engine commits them, so that a crash after this call
        does not send the file again. A crash in the middle may leave an upload the engine never heard of:
        ``discard`` finds it by ``tag``. ``{}`` for a provider that takes the requests in the create call.
        """
        ...

    def submit(
        self, batch_file: Path, tag: BatchTag, num_requests: int, handles: dict[str, str] | None = None
    ) -> RemoteBatch:
        """Create a remote batch of the requests in ``batch_file`` (prepared as ``handles``), tagged with ``tag``.

        Once it returns, the remote batch exists and will run. A crash or a lost answer in the middle may
        leave a remote batch that the caller never heard of: an ``APIError`` with ``transient`` set says the
        batch may exist, and before calling ``submit`` again for the same tag the caller calls ``find``.
        ``submit`` itself never retries the create call.
        """
        ...

    def discard(self, tag: BatchTag, handles: dict[str, str]) -> None:
        """Delete what ``prepare`` left for ``tag`` that never became a batch (call only after ``find`` said
        None). Best effort: failures are logged, not raised."""
        ...

    def find(
        self, tag: BatchTag, num_requests: int, since: float, exclude: frozenset[str] = frozenset()
    ) -> RemoteBatch | None:
        """The remote batch submitted for ``tag`` at or after ``since`` (a Unix time), or None if there is none.
        ``exclude``: ids of remote batches the caller already knows to be others' (its other batches).

        A certain answer has ``certain=True``. A backend whose provider keeps no tag on the batch may return
        the only plausible candidate with ``certain=False`` (its results confirm it later, see ``download``),
        and raises ``CandidatesUnresolved`` when several are plausible. Reads only; safe to repeat.
        """
        ...

    def status(self, remote: RemoteBatch) -> RemoteBatch:
        """A fresh view of ``remote``. A batch deleted by someone else raises ``KeyError``. Reads only."""
        ...

    def download(self, remote: RemoteBatch, tag: BatchTag, results: Path, errors: Path) -> DownloadSummary:
        """Write the answers of an ended batch to ``results`` and its error lines to ``errors`` (each written
        atomically, or absent when there is nothing to write), in the engine's result format.

        Idempotent: a crash in the middle leaves at most complete files that a repeat overwrites. Raises
        ``ForeignResults`` if ``remote`` was adopted without certainty and its lines are not ``tag``'s.
        """
        ...

    def cancel(self, remote: RemoteBatch) -> None:
        """Ask the provider to stop ``remote``; answers already finished stay downloadable. Idempotent."""
        ...

    def delete(self, remote: RemoteBatch) -> None:
        """Delete ``remote`` and whatever the backend uploaded for it. Idempotent (gone is fine)."""
        ...


@dataclasses.dataclass
class TokenCounts:
    """Exact input tokens per request body (None: not counted, the caller keeps its estimate)."""

    counts: list[int | None]
    failure: str | None = None  # why the first uncounted body was not counted


@runtime_checkable
class InputTokenCounter(Protocol):
    """A backend that can count a request's input tokens exactly, at no cost (Anthropic's count_tokens).

    Optional: the engine offers ``exact_input_tokens`` only with backends that implement it.
    """

    def count_input_tokens(
        self, bodies: list[dict[str, Any]], concurrency: int, stop_check: Callable[[], bool] = lambda: False
    ) -> TokenCounts:
        """The input tokens of each request body (its Messages params), ``concurrency`` calls at a time.

        A body the provider cannot count (refused, rate-limited or unreachable after retries) gets None;
        a rejected key raises ``AuthenticationError``; ``stop_check()`` turning true (Ctrl+C) abandons the
        counts in flight at once with ``StopRequested``. Nothing is bought and nothing is written.
        """
        ...
