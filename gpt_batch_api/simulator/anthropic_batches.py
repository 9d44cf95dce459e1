"""Anthropic's Message Batches API, simulated: create, retrieve, list, cancel, results and delete.

A batch is ``in_progress`` for ``validating_s + in_progress_s + finalizing_s`` of the simulator's config
(times fixed when it is created), then ``ended``; a cancelled batch is ``canceling`` for ``finalizing_s``.
Like the OpenAI side, no thread drives it: its state is worked out whenever it is looked at, and its
results are produced the first time it is seen ended. Per-request results are ``succeeded``, ``errored``
(``error_line_rate``: overloaded/api errors; an invalid request: invalid_request_error), ``canceled`` or
``expired`` (``expire_next_batches``: about half of the requests expire).
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime
import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from .anthropic_messages import AnthropicAnswerer, anthropic_error_body, is_custom_id
from .common import ApiError, new_id
from .config import SimulatorConfig

__all__ = ["AnthropicBatchStore", "MAX_BATCH_BYTES", "MAX_BATCH_REQUESTS"]

MAX_BATCH_REQUESTS = 100_000
MAX_BATCH_BYTES = 256 * 1024 * 1024
RESULTS_DAYS = 29  # results stay available this long after creation


def _invalid(status: int, message: str, error_type: str | None = None) -> ApiError:
    error = ApiError(status, message)
    error.body = anthropic_error_body(status, message, error_type)
    return error


def _iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return datetime.datetime.fromtimestamp(stamp, datetime.UTC).isoformat().replace("+00:00", "Z")


@dataclasses.dataclass
class _Batch:
    id: str
    created_at: float
    requests: list[tuple[str, Any]]
    expire: bool
    error_line_rate: float
    seed: int
    run_s: float
    cancel_s: float
    cancel_initiated_at: float | None = None
    results: bytes | None = None
    counts: dict[str, int] | None = None


class AnthropicBatchStore:
    """All message batches ever created. Methods take the simulator's lock themselves."""

    def __init__(
        self, config: SimulatorConfig, answerer: AnthropicAnswerer, lock: threading.Lock, origin: Callable[[], str]
    ) -> None:
        self.origin = origin  # "http://127.0.0.1:PORT": results_url is absolute, as Anthropic's is
        self.config = config
        self.answerer = answerer
        self.lock = lock
        self.batches: dict[str, _Batch] = {}
        self.created: list[tuple[str, str]] = []  # (batch id, first custom_id) of every batch ever created

    # --- routes ---------------------------------------------------------------------------------------

    def create(self, body: Any, size: int) -> dict[str, Any]:
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            raise _invalid(400, "requests: List should have at least 1 item after validation, not 0")
        if len(requests) > MAX_BATCH_REQUESTS:
            raise _invalid(400, f"requests: a batch holds at most {MAX_BATCH_REQUESTS} requests, got {len(requests)}")
        if size > MAX_BATCH_BYTES:
            raise _invalid(413, f"Request exceeds the maximum allowed number of bytes ({MAX_BATCH_BYTES}).")
        seen: set[str] = set()
        parsed = []
        for index, request in enumerate(requests):
            custom_id = request.get("custom_id") if isinstance(request, dict) else None
            if not isinstance(custom_id, str) or not is_custom_id(custom_id):
                raise _invalid(
                    400, f"requests.{index}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
                )
            if custom_id in seen:
                raise _invalid(400, f"requests.{index}.custom_id: duplicate custom_id {custom_id!r} in the batch")
            seen.add(custom_id)
            if not isinstance(request.get("params"), dict):
                raise _invalid(400, f"requests.{index}.params: Field required")
            parsed.append((custom_id, request["params"]))
        config = self.config
        with self.lock:
            expire = config.expire_next_batches > 0
            if expire:
                config.expire_next_batches -= 1
            batch = _Batch(
                new_id("msgbatch_"),
                time.time(),
                parsed,
                expire,
                config.error_line_rate,
                config.seed * 7919 + len(self.batches),
                config.validating_s + config.in_progress_s + config.finalizing_s,
                config.finalizing_s,
            )
            self.batches[batch.id] = batch
            self.created.append((batch.id, parsed[0][0]))
            return self._view(batch, batch.created_at)

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        batch = self._get(batch_id)
        self._produce_if_ended(batch)
        with self.lock:
            return self._view(batch, time.time())

    def cancel(self, batch_id: str) -> dict[str, Any]:
        batch = self._get(batch_id)
        with self.lock:
            now = time.time()
            if self._status(batch, now) == "in_progress":
                batch.cancel_initiated_at = now
            return self._view(batch, now)

    def delete(self, batch_id: str) -> dict[str, Any]:
        batch = self._get(batch_id)
        with self.lock:
            if self._status(batch, time.time()) != "ended":
                raise _invalid(
                    400, f"Batch {batch_id} cannot be deleted while in progress: cancel it and wait for it to end."
                )
            del self.batches[batch_id]
        return {"id": batch_id, "type": "message_batch_deleted"}

    def list(self, query: dict[str, str]) -> dict[str, Any]:
        try:
            limit = int(query.get("limit", "20"))
        except ValueError:
            raise _invalid(400, "limit: Input should be a valid integer") from None
        if not 1 <= limit <= 1000:
            raise _invalid(400, "limit: Input should be between 1 and 1000")
        with self.lock:
            newest_first = list(reversed(self.batches.values()))
        ids = [b.id for b in newest_first]
        start, end = 0, len(newest_first)
        if query.get("after_id"):  # the page after this id (older batches)
            start = ids.index(query["after_id"]) + 1 if query["after_id"] in ids else len(ids)
        if query.get("before_id"):  # the page before this id (newer batches)
            end = ids.index(query["before_id"]) if query["before_id"] in ids else 0
            start = max(start, end - limit)
        page = newest_first[start : min(end, start + limit)]
        has_more = (start + len(page) < end) if not query.get("before_id") else start > 0
        for batch in page:
            self._produce_if_ended(batch)
        with self.lock:
            now = time.time()
            data = [self._view(batch, now) for batch in page]
        return {
            "data": data,
            "has_more": has_more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }

    def results(self, batch_id: str) -> bytes:
        batch = self._get(batch_id)
        self._produce_if_ended(batch)
        if batch.results is None:
            raise _invalid(404, f"Batch {batch_id} has not ended yet: its results are not available.")
        return batch.results

    def all(self) -> builtins.list[dict[str, Any]]:
        """Every batch's API object (tests count batches with it)."""
        with self.lock:
            batches = list(self.batches.values())
        for batch in batches:
            self._produce_if_ended(batch)
        with self.lock:
            now = time.time()
            return [self._view(batch, now) for batch in batches]

    # --- lifecycle ------------------------------------------------------------------------------------

    def _get(self, batch_id: str) -> _Batch:
        with self.lock:
            batch = self.batches.get(batch_id)
        if batch is None:
            raise _invalid(404, f"No message batch found with id '{batch_id}'.")
        return batch

    def _ends_at(self, batch: _Batch) -> float:
        if batch.cancel_initiated_at is not None:
            return min(batch.created_at + batch.run_s, batch.cancel_initiated_at + batch.cancel_s)
        return batch.created_at + batch.run_s

    def _status(self, batch: _Batch, now: float) -> str:
        if batch.results is not None or now >= self._ends_at(batch):
            return "ended"
        return "in_progress" if batch.cancel_initiated_at is None else "canceling"

    def _produce_if_ended(self, batch: _Batch) -> None:
        with self.lock:
            if batch.results is not None or self._status(batch, time.time()) != "ended":
                return
        rng = random.Random(batch.seed)
        if batch.cancel_initiated_at is not None:
            done_share = (batch.cancel_initiated_at - batch.created_at) / batch.run_s if batch.run_s else 1.0
        else:
            done_share = 0.5 if batch.expire else 1.0
        lines, counts = [], {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        order = list(range(len(batch.requests)))
        rng.shuffle(order)  # results come in no particular order: readers must match them by custom_id
        done = int(done_share * len(order))
        for position, index in enumerate(order):
            custom_id, params = batch.requests[index]
            result = self._result(params, position < done, batch, rng)
            counts[result["type"]] += 1
            lines.append(json.dumps({"custom_id": custom_id, "result": result}))
        data = ("\n".join(lines) + "\n").encode()
        with self.lock:
            if batch.results is None:
                batch.results, batch.counts = data, counts

    def _result(self, params: Any, done: bool, batch: _Batch, rng: random.Random) -> dict[str, Any]:
        if not done:
            return {"type": "canceled" if batch.cancel_initiated_at is not None else "expired"}
        if batch.error_line_rate and rng.random() < batch.error_line_rate:
            kind = rng.choice(("overloaded_error", "api_error"))
            return {"type": "errored", "error": anthropic_error_body(500, "Simulated processing error.", kind)}
        try:
            message, _ = self.answerer.message(params, batch=True)
        except ApiError as exc:
            return {"type": "errored", "error": exc.body}
        return {"type": "succeeded", "message": message}

    def _view(self, batch: _Batch, now: float) -> dict[str, Any]:
        status = self._status(batch, now)
        if batch.counts is not None:
            counts = dict(batch.counts)
        else:
            total = len(batch.requests)
            share = min(1.0, max(0.0, (now - batch.created_at) / batch.run_s)) if batch.run_s else 1.0
            succeeded = int(total * share * (0.5 if batch.expire else 1.0))
            counts = {"processing": total - succeeded, "succeeded": succeeded, "errored": 0, "canceled": 0,
                      "expired": 0}  # fmt: skip
        ended = status == "ended"
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "created_at": _iso(batch.created_at),
            "expires_at": _iso(batch.created_at + 24 * 3600),
            "ended_at": _iso(self._ends_at(batch)) if ended else None,
            "cancel_initiated_at": _iso(batch.cancel_initiated_at),
            "archived_at": None,
            "results_url": f"{self.origin()}/v1/messages/batches/{batch.id}/results" if ended else None,
        }
