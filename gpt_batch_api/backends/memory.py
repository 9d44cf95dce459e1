"""An in-memory ``BatchBackend``: the test double of the seam (httpx's ``MockTransport`` habit).

Batches live in a dict and end ``run_s`` seconds after creation (0: at once). Knobs for fast tests of the
engine's push, adoption and congestion logic: ``lose_next_creates`` (the batch is created, then the answer is
lost), ``expire_next`` (half of the requests expire), ``congest_next`` (refused for the enqueued-token
limit). ``answer(body)`` gives each request's response body. Tags are kept on the batch, so ``find`` is
certain, as with OpenAI's metadata.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from ..errors import APIError
from ..store.atomic import atomic_write_bytes
from .base import BatchTag, DownloadSummary, ForeignResults, RemoteBatch, RemoteStatus

__all__ = ["InMemoryBatchBackend"]


def echo_answer(body: dict[str, Any]) -> dict[str, Any]:
    return {"object": "echo", "request": body}


@dataclasses.dataclass
class _StoredBatch:
    id: str
    tag: BatchTag
    lines: list[dict[str, Any]]
    created_at: float
    expire: bool
    congested: bool
    cancelled: bool = False


class InMemoryBatchBackend:
    """``BatchBackend`` whose provider is a dict (see the module docstring)."""

    name = "memory"

    def __init__(
        self,
        answer: Callable[[dict[str, Any]], dict[str, Any]] = echo_answer,
        *,
        run_s: float = 0.0,
        max_requests: int = 50_000,
        max_bytes: int = 200 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.answer = answer
        self.run_s = run_s
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.clock = clock
        self.batches: dict[str, _StoredBatch] = {}
        self.lose_next_creates = 0
        self.expire_next = 0
        self.congest_next = 0
        self.creates = 0  # batches ever created (a test of exactly-once counts these)
        self._ids = itertools.count(1)

    def prepare(self, batch_file: Path, tag: BatchTag) -> dict[str, str]:
        return {}

    def discard(self, tag: BatchTag, handles: dict[str, str]) -> None:
        pass

    def submit(
        self, batch_file: Path, tag: BatchTag, num_requests: int, handles: dict[str, str] | None = None
    ) -> RemoteBatch:
        data = Path(batch_file).read_bytes()
        if len(data) > self.max_bytes:
            raise APIError(f"batch file {batch_file} is {len(data)} bytes, over the {self.max_bytes} limit", 400)
        lines = [orjson.loads(line) for line in data.splitlines() if line.strip()]
        if len(lines) != num_requests or len(lines) > self.max_requests:
            raise APIError(f"batch file {batch_file} holds {len(lines)} requests, expected {num_requests}", 400)
        batch = _StoredBatch(
            f"mem_{next(self._ids)}", tag, lines, self.clock(), self.expire_next > 0, self.congest_next > 0
        )
        self.expire_next = max(0, self.expire_next - 1)
        self.congest_next = max(0, self.congest_next - 1)
        self.batches[batch.id] = batch
        self.creates += 1
        if self.lose_next_creates > 0:
            self.lose_next_creates -= 1
            raise APIError(
                f"create batch {tag.batch_id}: the connection was lost before the answer (simulated)", transient=True
            )
        return self._view(batch)

    def find(
        self, tag: BatchTag, num_requests: int, since: float, exclude: frozenset[str] = frozenset()
    ) -> RemoteBatch | None:
        for batch in reversed(list(self.batches.values())):
            if batch.tag == tag and batch.created_at >= since - 600:
                return self._view(batch)
        return None

    def status(self, remote: RemoteBatch) -> RemoteBatch:
        return self._view(self._get(remote.batch_id))

    def download(self, remote: RemoteBatch, tag: BatchTag, results: Path, errors: Path) -> DownloadSummary:
        batch = self._get(remote.batch_id)
        if batch.tag != tag:
            if not remote.certain:
                raise ForeignResults(f"batch {batch.id} is not batch {tag.batch_id}'s")
            raise APIError(f"batch {batch.id} belongs to {batch.tag}, not {tag}")
        view = self._view(batch)
        if not view.status.terminal or view.status is RemoteStatus.FAILED:
            raise APIError(f"batch {batch.id} has no results: it is {view.status}")
        answers, failures = bytearray(), bytearray()
        succeeded = 0
        for index, line in enumerate(batch.lines):
            unfinished = (batch.expire or batch.cancelled) and index >= len(batch.lines) // 2
            if unfinished:
                code = "batch_cancelled" if batch.cancelled else "batch_expired"
                entry: dict[str, Any] = {"custom_id": line["custom_id"], "error": {"code": code, "message": code}}
                failures.extend(orjson.dumps(entry) + b"\n")
                continue
            response = {"status_code": 200, "body": self.answer(line["body"])}
            answers.extend(orjson.dumps({"custom_id": line["custom_id"], "response": response}) + b"\n")
            succeeded += 1
        for path, data in ((results, answers), (errors, failures)):
            if data:
                atomic_write_bytes(path, bytes(data))
        return DownloadSummary(lines=len(batch.lines), succeeded=succeeded)

    def cancel(self, remote: RemoteBatch) -> None:
        batch = self.batches.get(remote.batch_id)
        if batch is not None and not self._view(batch).status.terminal:
            batch.cancelled = True

    def delete(self, remote: RemoteBatch) -> None:
        self.batches.pop(remote.batch_id, None)

    def _get(self, batch_id: str) -> _StoredBatch:
        batch = self.batches.get(batch_id)
        if batch is None:
            raise KeyError(batch_id)
        return batch

    def _view(self, batch: _StoredBatch) -> RemoteBatch:
        total = len(batch.lines)
        ended = self.clock() >= batch.created_at + self.run_s
        if batch.congested:
            status = RemoteStatus.FAILED
        elif batch.cancelled:
            status = RemoteStatus.CANCELLED
        elif not ended:
            status = RemoteStatus.RUNNING
        else:
            status = RemoteStatus.EXPIRED if batch.expire else RemoteStatus.COMPLETED
        unfinished = total - total // 2 if status in (RemoteStatus.EXPIRED, RemoteStatus.CANCELLED) else 0
        done = status.terminal and status is not RemoteStatus.FAILED
        return RemoteBatch(
            backend=self.name,
            batch_id=batch.id,
            status=status,
            provider_status=status.value,
            total=total,
            succeeded=total - unfinished if done else 0,
            failed=unfinished,
            created_at=batch.created_at,
            congested=batch.congested,
            errors=["token_limit_exceeded: the enqueued-token limit is reached (simulated)"] if batch.congested else [],
        )
