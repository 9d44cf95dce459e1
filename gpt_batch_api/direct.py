"""Concurrent direct API calls that record every answer in the Batch API's result-line shape.

Retries live here, not in the SDK: each call is made with ``max_retries=0`` and retried by us on 408/409/
429/5xx and connection errors with exponential backoff (honouring ``retry-after``), up to
``max_attempts``. A call that still fails becomes an error line (the requester then decides, per request,
whether it is retried in a later batch). Some errors stop the run at once, after in-flight answers are
recorded: a rejected API key, ``insufficient_quota``, and a server that answered nothing while a request
used up its attempts (unreachable: recording an error would only burn the request's retries).

Calls are paced from the ``x-ratelimit-*`` headers (``ratelimit.RateLimitGate``): when the minute's budget
would not cover the calls in flight, new calls wait for it to refill, and a 429 pauses every worker.

Results are handed to ``on_result`` in the calling thread, so the caller's journal needs no locking.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import functools
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import openai

from .errors import AuthenticationError, QuotaExceededError
from .ratelimit import RateLimitGate
from .remote import translate_api_error
from .store import fastjson

__all__ = ["DirectExecutor", "DirectSummary"]

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 429})


@dataclasses.dataclass
class DirectSummary:
    num_ok: int = 0
    num_error_lines: int = 0
    num_transport_retries: int = 0
    stopped: bool = False
    seconds: float = 0.0


class _Fatal(Exception):
    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class DirectExecutor:
    """Runs ``(custom_id, body)`` requests against one endpoint with bounded concurrency."""

    def __init__(
        self,
        client: Any,
        *,
        concurrency: int = 16,
        stop_check: Callable[[], bool] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self.client = client.with_options(max_retries=0)
        self.concurrency = max(1, concurrency)
        self.stop_check = stop_check or (lambda: False)
        self.on_progress = on_progress
        self.max_attempts = max(1, max_attempts)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._abort = threading.Event()
        self._retries = 0
        self._retries_lock = threading.Lock()
        self.gate = RateLimitGate(self.concurrency)
        self._last_answer = -1.0  # time.monotonic() of the last HTTP answer of any call (shared by threads)

    def run(
        self,
        endpoint: str,
        requests: Iterable[tuple[str, dict[str, Any]]],
        on_result: Callable[[dict[str, Any]], None],
    ) -> DirectSummary:
        path = endpoint.removeprefix("/v1")
        pending = list(requests)
        summary = DirectSummary()
        started = time.monotonic()
        fatal: Exception | None = None
        todo = iter(pending)
        in_flight: set[cf.Future[dict[str, Any] | None]] = set()
        with cf.ThreadPoolExecutor(self.concurrency, thread_name_prefix="gpt-direct") as pool:

            def fill() -> None:
                while len(in_flight) < self.concurrency and fatal is None and not summary.stopped:
                    if self.stop_check():
                        summary.stopped = True
                        self._abort.set()
                        return
                    nxt = next(todo, None)
                    if nxt is None:
                        return
                    in_flight.add(pool.submit(self._call, path, *nxt))

            def record(future: cf.Future[dict[str, Any] | None]) -> None:
                nonlocal fatal
                try:
                    line = future.result()
                except _Fatal as exc:
                    if fatal is None:
                        fatal = exc.error
                        self._abort.set()
                    line = None
                if line is not None:  # None: abandoned while backing off because of a stop
                    on_result(line)
                    if line.get("error") or (line.get("response") or {}).get("status_code") != 200:
                        summary.num_error_lines += 1
                    else:
                        summary.num_ok += 1
                    if self.on_progress is not None:
                        self.on_progress(summary.num_ok + summary.num_error_lines, len(pending))
                in_flight.discard(future)  # only once recorded: an interrupt before this records it again

            try:
                fill()
                while in_flight:
                    finished, _ = cf.wait(in_flight, timeout=0.5, return_when=cf.FIRST_COMPLETED)
                    for future in finished:
                        record(future)
                    if not finished and self.stop_check() and not summary.stopped:
                        summary.stopped = True
                        self._abort.set()
                    fill()
            except BaseException:
                # A second Ctrl+C (KeyboardInterrupt) stops at once, but the calls already sent are paid for
                # and the pool waits for them anyway: record their answers so they are not bought again.
                # (A further Ctrl+C while waiting abandons them.)
                self._abort.set()
                if in_flight:
                    log.warning("Stopping at once: recording the %d answers already in flight", len(in_flight))
                try:
                    for future in list(in_flight):
                        if future.done() or not future.cancel():
                            record(future)
                except Exception as exc:  # e.g. the disk failed: the original error is the one to report
                    log.warning("Could not record the answers in flight: %s", exc)
                raise
        summary.num_transport_retries = self._retries
        summary.seconds = time.monotonic() - started
        if fatal is not None:
            raise fatal
        if summary.num_ok + summary.num_error_lines < len(pending):
            summary.stopped = True
        return summary

    # ------------------------------------------------------------------ one request

    def _call(self, path: str, custom_id: str, body: dict[str, Any]) -> dict[str, Any] | None:
        attempt = 0
        first_sent = time.monotonic()
        while True:
            attempt += 1
            paused = self.gate.delay()  # the shared rate-limit budget is short: let it refill first
            if paused > 0 and self._abort.wait(paused):
                return None
            try:
                response = self.client.post(path, body=body, cast_to=_http_response_class())
                self._last_answer = time.monotonic()
                answer = fastjson.loads(response.content)
                self.gate.observe(response.headers, answer.get("usage") if isinstance(answer, dict) else None)
                return _line(custom_id, 200, answer)
            except openai.APIStatusError as exc:
                self._last_answer = time.monotonic()
                self.gate.observe(exc.response.headers)
                error = translate_api_error(exc, f"direct call to {path}", str(self.client.base_url))
                if isinstance(error, AuthenticationError | QuotaExceededError):
                    raise _Fatal(error) from None
                status = exc.status_code
                retryable = status in RETRYABLE_STATUS or status >= 500
                if not retryable or attempt >= self.max_attempts:
                    return _line(custom_id, status, exc.body if exc.body is not None else {"error": exc.message})
                retry_after = _retry_after(exc.response)
                if status == 429 and retry_after:
                    self.gate.pause(retry_after, "HTTP 429 rate limit")  # the budget is shared by every worker
                delay = retry_after or self._backoff(attempt)
            except openai.APITimeoutError as exc:  # one slow request: its own retries, then an error line
                if attempt >= self.max_attempts:
                    return _error_line(custom_id, "timeout", str(exc))
                delay = self._backoff(attempt)
            except openai.APIConnectionError as exc:
                if attempt >= self.max_attempts:
                    if self._last_answer >= first_sent:  # other calls get through: a flaky connection
                        return _error_line(custom_id, "connection_error", str(exc))
                    # Nothing got through while this request tried: the server is unreachable, not the request
                    # at fault. Stop without recording an answer (which would use up its retries); a rerun
                    # sends it again.
                    error = translate_api_error(exc, f"direct call to {path}", str(self.client.base_url))
                    raise _Fatal(error) from None
                delay = self._backoff(attempt)
            except ValueError as exc:  # a 200 whose JSON body was cut or empty (e.g. a proxy dropped it)
                if attempt >= self.max_attempts:
                    return _error_line(custom_id, "malformed_response", f"the answer was not valid JSON: {exc}")
                delay = self._backoff(attempt)
            with self._retries_lock:
                self._retries += 1
            if self._abort.wait(delay):
                return None

    def _backoff(self, attempt: int) -> float:
        return min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


@functools.cache
def _http_response_class() -> type:
    """The SDK's HTTP response class (httpx2 in openai 3, httpx before): as ``cast_to``, the SDK returns the
    response itself, so the rate-limit headers can be read and the body parsed with orjson."""
    from openai import _base_client

    module = getattr(_base_client, "httpx2", None) or _base_client.httpx  # type: ignore[attr-defined]
    return module.Response  # type: ignore[no-any-return]


def _retry_after(response: Any) -> float | None:
    try:
        value = response.headers.get("retry-after-ms")
        if value is not None:
            return float(value) / 1000
        value = response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None


def _line(custom_id: str, status: int, body: Any) -> dict[str, Any]:
    return {
        "id": f"direct_{uuid.uuid4().hex[:20]}",
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": None, "body": body},
        "error": None,
    }


def _error_line(custom_id: str, code: str, message: str) -> dict[str, Any]:
    return {
        "id": f"direct_{uuid.uuid4().hex[:20]}",
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }
