"""The Batch API: create, retrieve, list and cancel, with OpenAI's lifecycle computed from timestamps.

A batch is validating for ``validating_s``, in progress for ``in_progress_s`` and finalizing for
``finalizing_s`` (times fixed when it is created); no thread drives it. Its status is worked out whenever it
is looked at, and its output and error files are produced the first time it is seen in a final status.
Validation, injected failure and the enqueued-token limit are decided at creation and revealed when
validation ends, as OpenAI does.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import random
import threading
import time
from typing import Any

from .batch_input import validate_lines
from .common import ApiError, new_id
from .config import SimulatorConfig
from .direct_api import ENDPOINTS, Answerer
from .files_api import FileStore, paginate
from .tokens import chat_prompt_tokens, embedding_input_tokens, responses_input_tokens

__all__ = ["BatchStore"]

ACTIVE = ("validating", "in_progress", "finalizing")


@dataclasses.dataclass
class _Plan:
    """What will happen to a batch, decided when it is created."""

    errors: list[dict[str, Any]] | None  # set: the batch fails when validation ends
    expire: bool
    error_line_rate: float
    missing_line_rate: float
    malformed_line_rate: float
    seed: int
    validating_s: float
    in_progress_s: float
    finalizing_s: float


@dataclasses.dataclass
class _Batch:
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: float
    model: str | None
    requests: list[tuple[str, dict[str, Any]]]
    prompt_tokens: int
    plan: _Plan
    cancelled_at: float | None = None
    final: dict[str, Any] | None = None  # fields of the final status, once its files exist
    producing: bool = False


class BatchStore:
    """All batches ever created. Methods take the simulator's lock themselves."""

    def __init__(self, config: SimulatorConfig, files: FileStore, answerer: Answerer, lock: threading.Lock) -> None:
        self.config = config
        self.files = files
        self.answerer = answerer
        self.lock = lock
        self.batches: dict[str, _Batch] = {}

    # --- routes ---------------------------------------------------------------------------------------

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        config = self.config
        endpoint, window = body.get("endpoint"), body.get("completion_window")
        if endpoint not in ENDPOINTS:
            raise ApiError(
                400, f"Invalid 'endpoint': {endpoint!r}; expected one of {list(ENDPOINTS)}.", param="endpoint"
            )
        if window != "24h":
            raise ApiError(
                400, f"Invalid 'completion_window': {window!r}; only '24h' is supported.", param="completion_window"
            )
        metadata = _check_metadata(body.get("metadata"))
        with self.lock:
            stored = self.files.files.get(str(body.get("input_file_id")))
            if stored is None:
                raise ApiError(
                    400, f"Invalid 'input_file_id': no file {body.get('input_file_id')!r}.", param="input_file_id"
                )
            if stored.purpose != "batch":
                raise ApiError(
                    400, f"The file {stored.id} has purpose {stored.purpose!r}, not 'batch'.", param="input_file_id"
                )
            data = stored.data
        requests, model, errors = validate_lines(data, endpoint)
        tokens = 0
        if not errors:
            for _, request_body in requests:
                tokens += _prompt_tokens(endpoint, request_body)
        with self.lock:
            now = time.time()
            if not errors and config.fail_next_batches > 0:
                config.fail_next_batches -= 1
                errors = [
                    {"code": "invalid_request", "message": "Simulated validation failure.", "param": None, "line": 1}
                ]
            if not errors and config.enqueued_token_limit and model is not None:
                enqueued = self._enqueued_tokens(model, now)
                if enqueued + tokens > config.enqueued_token_limit:
                    errors = [_token_limit_error(model, config.enqueued_token_limit)]
            expire = not errors and config.expire_next_batches > 0
            if expire:
                config.expire_next_batches -= 1
            plan = _Plan(
                errors or None,
                expire,
                config.error_line_rate,
                config.missing_line_rate,
                config.malformed_line_rate,
                config.seed * 7919 + len(self.batches),
                config.validating_s,
                config.in_progress_s,
                config.finalizing_s,
            )
            batch = _Batch(new_id("batch_"), stored.id, endpoint, window, metadata, now, model, requests, tokens, plan)
            self.batches[batch.id] = batch
            return self._view(batch, now)

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        return self._refresh(self._get(batch_id))

    def cancel(self, batch_id: str) -> dict[str, Any]:
        batch = self._get(batch_id)
        with self.lock:
            now = time.time()
            status = self._status(batch, now)
            if status in ("cancelling", "cancelled"):
                return self._view(batch, now)
            if status not in ACTIVE:
                raise ApiError(409, f"Cannot cancel a batch with status '{status}'.", code="batch_not_cancellable")
            batch.cancelled_at = now
            return self._view(batch, now)

    def list(self, query: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            newest_first = list(reversed(self.batches.values()))
        page, has_more = paginate(newest_first, query, default_limit=20, max_limit=100)
        data = [self._refresh(batch) for batch in page]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }

    def all(self) -> builtins.list[dict[str, Any]]:
        with self.lock:
            batches = list(self.batches.values())
        return [self._refresh(batch) for batch in batches]

    # --- lifecycle ------------------------------------------------------------------------------------

    def _get(self, batch_id: str) -> _Batch:
        with self.lock:
            batch = self.batches.get(batch_id)
        if batch is None:
            raise ApiError(404, f"No batch found with id '{batch_id}'.", param="batch_id")
        return batch

    def _times(self, batch: _Batch) -> tuple[float, float, float]:
        plan = batch.plan
        validated = batch.created_at + plan.validating_s
        processed = validated + plan.in_progress_s
        return validated, processed, processed + plan.finalizing_s

    def _status(self, batch: _Batch, now: float) -> str:
        """The status at ``now``, before files exist (final statuses are only reported once they do)."""
        if batch.final is not None:
            return str(batch.final["status"])
        validated, processed, finished = self._times(batch)
        if batch.plan.errors is not None:
            return "validating" if now < validated else "failed"
        if batch.cancelled_at is not None:
            return "cancelling" if now < batch.cancelled_at + batch.plan.finalizing_s else "cancelled"
        if now < validated:
            return "validating"
        if now < processed:
            return "in_progress"
        if now < finished:
            return "finalizing"
        return "expired" if batch.plan.expire else "completed"

    def _enqueued_tokens(self, model: str, now: float) -> int:
        return sum(
            b.prompt_tokens
            for b in self.batches.values()
            if b.model == model and b.plan.errors is None and self._status(b, now) in ACTIVE
        )

    def _done_fraction(self, batch: _Batch, status: str) -> float:
        if status == "completed":
            return 1.0
        if status == "expired":
            return 0.5
        validated, processed, _ = self._times(batch)
        if batch.cancelled_at is None or batch.cancelled_at <= validated:
            return 0.0
        if batch.cancelled_at >= processed:
            return 1.0
        return (batch.cancelled_at - validated) / batch.plan.in_progress_s

    def _refresh(self, batch: _Batch) -> dict[str, Any]:
        """The API object of ``batch``; produces its files the first time it is seen in a final status."""
        with self.lock:
            now = time.time()
            status = self._status(batch, now)
            start = batch.final is None and status in ("completed", "expired", "cancelled", "failed")
            if not start or batch.producing:
                return self._view(batch, now)
            batch.producing = True
        try:
            final = self._produce(batch, status)  # outside the lock: may take a while for large batches
        finally:
            with self.lock:
                batch.producing = False
        with self.lock:
            outputs = final.pop("files")
            for kind, data in outputs:
                if data:
                    stored = self.files.add(f"{batch.id}_{kind}.jsonl", "batch_output", data)
                    final[f"{kind}_file_id"] = stored.id
            batch.final = final
            return self._view(batch, time.time())

    def _produce(self, batch: _Batch, status: str) -> dict[str, Any]:
        validated, processed, finished = self._times(batch)
        if status == "failed":
            return {"status": status, "failed_at": int(validated), "files": []}
        plan = batch.plan
        rng = random.Random(plan.seed)
        order = list(range(len(batch.requests)))
        rng.shuffle(order)
        if len(order) > 1 and order == sorted(order):
            order = order[1:] + order[:1]  # always a different order than the input, as the real API often is
        done = round(len(order) * self._done_fraction(batch, status))
        reason = "batch_expired" if status == "expired" else "batch_cancelled"
        output: list[str] = []
        errors: list[dict[str, Any]] = []
        completed = failed = 0
        usage = {"input_tokens": 0, "cached_tokens": 0, "output_tokens": 0}
        for position, index in enumerate(order):
            custom_id, body = batch.requests[index]
            line_id = new_id("batch_req_")
            if position >= done:
                message = f"This request could not be executed before the batch was {status}."
                errors.append(
                    {
                        "id": line_id,
                        "custom_id": custom_id,
                        "response": None,
                        "error": {"code": reason, "message": message},
                    }
                )
                failed += 1
                continue
            draw = rng.random()
            if draw < plan.missing_line_rate:
                completed += 1  # counted as done by the batch, yet absent from both files
                continue
            if draw < plan.missing_line_rate + plan.error_line_rate:
                status_code = 500
                answer: dict[str, Any] = _server_error()
            else:
                try:
                    answer, _ = self.answerer.answer(batch.endpoint, body)
                    status_code = 200
                    _add_usage(usage, answer.get("usage") or {})
                except ApiError as exc:
                    status_code, answer = exc.status, exc.body
            response = {"status_code": status_code, "request_id": new_id("req_"), "body": answer}
            line = {"id": line_id, "custom_id": custom_id, "response": response, "error": None}
            if status_code != 200:
                errors.append(line)
                failed += 1
                continue
            completed += 1
            text = json.dumps(line)
            if rng.random() < plan.malformed_line_rate:
                text = text[: len(text) // 2]  # a torn line: custom_id still visible, JSON invalid
            output.append(text)
        end = {"completed": finished, "expired": finished, "cancelled": (batch.cancelled_at or 0) + plan.finalizing_s}
        final: dict[str, Any] = {
            "status": status,
            f"{status}_at": int(end[status]),
            "request_counts": {"total": len(order), "completed": completed, "failed": failed},
            "usage": {
                "input_tokens": usage["input_tokens"],
                "input_tokens_details": {"cached_tokens": usage["cached_tokens"]},
                "output_tokens": usage["output_tokens"],
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": usage["input_tokens"] + usage["output_tokens"],
            },
            "files": [("output", _jsonl(output)), ("error", _jsonl(json.dumps(e) for e in errors))],
        }
        return final

    def _view(self, batch: _Batch, now: float) -> dict[str, Any]:
        """The OpenAI batch object at ``now``."""
        validated, processed, finished = self._times(batch)
        status = self._status(batch, now)
        if batch.final is None and status in ("completed", "expired", "cancelled"):
            status = "cancelling" if status == "cancelled" else "finalizing"  # its files are being written
        total = len(batch.requests) if batch.plan.errors is None else 0
        view: dict[str, Any] = {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "model": batch.model,
            "errors": None,
            "input_file_id": batch.input_file_id,
            "completion_window": batch.completion_window,
            "status": status,
            "output_file_id": None,
            "error_file_id": None,
            "created_at": int(batch.created_at),
            "in_progress_at": None,
            "expires_at": int(batch.created_at) + 24 * 3600,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": int(batch.cancelled_at) if batch.cancelled_at is not None else None,
            "cancelled_at": None,
            "request_counts": {"total": total, "completed": 0, "failed": 0},
            "usage": None,
            "metadata": batch.metadata,
        }
        if batch.plan.errors is not None:
            if status == "failed":
                view["errors"] = {"object": "list", "data": batch.plan.errors}
            view.update({k: v for k, v in (batch.final or {}).items() if k != "request_counts"})
            return view
        if now >= validated and (batch.cancelled_at is None or batch.cancelled_at > validated):
            view["in_progress_at"] = int(validated)
        if status == "finalizing" or (now >= processed and not batch.plan.expire and batch.cancelled_at is None):
            view["finalizing_at"] = int(min(processed, now))  # set whenever the status says finalizing
        if status == "in_progress" and batch.plan.in_progress_s > 0:
            view["request_counts"]["completed"] = int(total * (now - validated) / batch.plan.in_progress_s)
        elif status == "finalizing":
            view["request_counts"]["completed"] = total
        if batch.final is not None:
            view.update(batch.final)
        return view


def _prompt_tokens(endpoint: str, body: dict[str, Any]) -> int:
    try:
        if endpoint == "/v1/chat/completions":
            return chat_prompt_tokens(body)
        if endpoint == "/v1/responses":
            return responses_input_tokens(body)
        return embedding_input_tokens(body)
    except (TypeError, AttributeError, ValueError):
        return 0  # a malformed body is answered with a 400 line later; it enqueues nothing


def _check_metadata(metadata: Any) -> dict[str, str] | None:
    if metadata is None:
        return None
    ok = isinstance(metadata, dict) and len(metadata) <= 16
    ok = ok and all(
        isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512 for k, v in metadata.items()
    )
    if not ok:
        raise ApiError(
            400,
            "Invalid 'metadata': at most 16 string keys (<= 64 chars) with string values (<= 512 chars).",
            param="metadata",
        )
    return dict(metadata)


def _token_limit_error(model: str, limit: int) -> dict[str, Any]:
    message = (
        f"Enqueued token limit reached for {model} in organization org-simulator. Limit: {limit:,} enqueued tokens. "
        "Please try again once some in_progress batches have been completed."
    )
    return {"code": "token_limit_exceeded", "message": message, "param": None, "line": None}


def _server_error() -> dict[str, Any]:
    message = "The server had an error while processing your request. Sorry about that!"
    return {"error": {"message": message, "type": "server_error", "param": None, "code": "server_error"}}


def _add_usage(total: dict[str, int], usage: dict[str, Any]) -> None:
    total["input_tokens"] += usage.get("prompt_tokens", usage.get("input_tokens", 0))
    total["output_tokens"] += usage.get("completion_tokens", usage.get("output_tokens", 0))
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    total["cached_tokens"] += details.get("cached_tokens", 0)


def _jsonl(lines: Any) -> bytes:
    text = "\n".join(lines)
    return (text + "\n").encode() if text else b""
