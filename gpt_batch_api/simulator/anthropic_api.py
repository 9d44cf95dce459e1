"""The Anthropic routes of the simulator: ``/v1/messages``, ``/v1/messages/count_tokens`` and
``/v1/messages/batches`` (create, list, retrieve, cancel, results, delete).

Checked like Anthropic checks them: the key (``x-api-key`` or a bearer token) (when the simulator requires a key) and an
``anthropic-version`` header on every call. Errors have Anthropic's body shape. Direct calls carry
``anthropic-ratelimit-*`` headers (RFC 3339 reset times) from the same rate limiter as the OpenAI side, and
get the same injected faults, plus 529 ``overloaded_error`` (``http_529_rate``). ``lose_next_create_responses``
creates the next N batches and then drops the connection, as a create whose answer is lost on the wire.
"""

from __future__ import annotations

import datetime
import json
import re
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from .anthropic_batches import AnthropicBatchStore
from .anthropic_messages import AnthropicAnswerer, anthropic_error_body, check_params, claude_input_tokens
from .common import ApiError
from .ratelimit import RateLimiter

__all__ = ["AnthropicAPI", "LostResponse", "to_anthropic_error"]

Answer = tuple[int, bytes, dict[str, str], str]
_RESET = re.compile(r"^(?:(\d+)m)?(?:([\d.]+)s)?(?:(\d+)ms)?$")


class LostResponse(Exception):
    """The work was done; the connection must be closed without an answer."""


def to_anthropic_error(exc: ApiError) -> ApiError:
    """The same error with Anthropic's body (the OpenAI side's faults and rate limits raise OpenAI's)."""
    if exc.body.get("type") != "error":
        message = (exc.body.get("error") or {}).get("message") or str(exc)
        exc.body = anthropic_error_body(exc.status, message)
    return exc


def _reset_seconds(text: str) -> float:
    match = _RESET.match(text)
    if not match:
        return 0.0
    minutes, seconds, millis = match.groups()
    return int(minutes or 0) * 60 + float(seconds or 0) + int(millis or 0) / 1000


def anthropic_ratelimit_headers(openai_headers: dict[str, str]) -> dict[str, str]:
    """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` as Anthropic names and formats them."""
    headers = {}
    now = time.time()
    for kind in ("requests", "tokens"):
        for field in ("limit", "remaining"):
            value = openai_headers.get(f"x-ratelimit-{field}-{kind}")
            if value is not None:
                headers[f"anthropic-ratelimit-{kind}-{field}"] = value
        reset = openai_headers.get(f"x-ratelimit-reset-{kind}")
        if reset is not None:
            stamp = datetime.datetime.fromtimestamp(now + _reset_seconds(reset), datetime.UTC)
            headers[f"anthropic-ratelimit-{kind}-reset"] = stamp.isoformat(timespec="seconds").replace("+00:00", "Z")
    if "retry-after" in openai_headers:
        headers["retry-after"] = openai_headers["retry-after"]
    return headers


class AnthropicAPI:
    """Routes one Anthropic request; the ``Simulator`` owns the config, lock, limiter and fault injection."""

    def __init__(self, simulator: Any, inject_faults: Callable[[], None], draw: Callable[[], float]) -> None:
        self.sim = simulator
        self.inject_faults = inject_faults  # the OpenAI side's 500/429/dropped-connection knobs
        self.draw = draw  # the simulator's seeded random sequence (call under its lock)
        self.answerer = AnthropicAnswerer(simulator.answerer)
        self.batches = AnthropicBatchStore(
            simulator.config, self.answerer, simulator.lock, lambda: f"http://{simulator.host}:{simulator.port}"
        )
        self.limiter = RateLimiter()
        self.direct_requests = 0
        self.count_token_calls = 0

    def handle(self, method: str, path: str, query_text: str, headers: Any, raw: bytes) -> Answer:
        """Answer one request to a ``/v1/messages...`` path; raises ApiError (Anthropic's body) or LostResponse."""
        try:
            self._check_headers(headers)
            return self._route(method, path, dict(urllib.parse.parse_qsl(query_text)), raw)
        except ApiError as exc:
            raise to_anthropic_error(exc) from None

    def _check_headers(self, headers: Any) -> None:
        config = self.sim.config
        if config.require_api_key is not None:
            # SDKs send the key as x-api-key (older) or as a bearer token (newer); either is accepted.
            given = headers.get("x-api-key") or (headers.get("Authorization") or "").removeprefix("Bearer ").strip()
            if given != config.require_api_key:
                raise ApiError(401, "invalid x-api-key")
        if not headers.get("anthropic-version"):
            raise ApiError(400, "anthropic-version: header is required")
        if config.insufficient_quota:
            raise ApiError(
                400,
                "Your credit balance is too low to access the Anthropic API. "
                "Please go to Plans & Billing to upgrade or purchase credits.",
            )

    def _route(self, method: str, path: str, query: dict[str, str], raw: bytes) -> Answer:
        rest = path.split("/")[3:]  # "/v1/messages/batches/ID/results" -> ["batches", "ID", "results"]
        if method == "POST" and not rest:
            return self._message(raw)
        if method == "POST" and rest == ["count_tokens"]:
            with self.sim.lock:
                self.count_token_calls += 1
            self.inject_faults()  # the same fault knobs and latency as a direct call
            if self.sim.config.latency_ms:
                time.sleep(self.sim.config.latency_ms / 1000)
            return _ok(self.answerer.count_tokens(_json(raw)))
        if not rest or rest[0] != "batches":
            raise ApiError(404, f"Not found: {method} {path}")
        rest = rest[1:]
        if self.sim.config.batch_api_faults:
            self.inject_faults()
        store = self.batches
        if method == "POST" and not rest:
            answer = store.create(_json(raw), len(raw))
            if self.sim.take_lost_create():
                raise LostResponse
            return _ok(answer)
        if method == "GET" and not rest:
            return _ok(store.list(query))
        if method == "GET" and len(rest) == 1:
            return _ok(store.retrieve(rest[0]))
        if method == "DELETE" and len(rest) == 1:
            return _ok(store.delete(rest[0]))
        if method == "POST" and len(rest) == 2 and rest[1] == "cancel":
            return _ok(store.cancel(rest[0]))
        if method == "GET" and len(rest) == 2 and rest[1] == "results":
            return 200, store.results(rest[0]), {}, "application/binary"
        raise ApiError(404, f"Not found: {method} {path}")

    def _message(self, raw: bytes) -> Answer:
        config = self.sim.config
        with self.sim.lock:
            self.direct_requests += 1
        self.inject_faults()
        if config.http_529_rate:
            with self.sim.lock:
                overloaded = self.draw() < config.http_529_rate
            if overloaded:
                raise ApiError(529, "Overloaded")
        if config.latency_ms:
            time.sleep(config.latency_ms / 1000)
        params = check_params(_json(raw))
        try:  # tokens as Anthropic counts them against the limit: input plus the requested max_tokens
            tokens = claude_input_tokens(params) + params["max_tokens"]
            openai_headers = self.limiter.admit(config.rpm, config.tpm, tokens)
        except ApiError as exc:
            exc.headers = anthropic_ratelimit_headers(exc.headers)
            raise
        message, _ = self.answerer.message(params)
        return 200, json.dumps(message).encode(), anthropic_ratelimit_headers(openai_headers), "application/json"


def _ok(payload: Any) -> Answer:
    return 200, json.dumps(payload).encode(), {}, "application/json"


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError:
        raise ApiError(400, "The request body is not valid JSON.") from None
