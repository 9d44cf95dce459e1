"""Concurrent direct API calls that record every answer in the Batch API's result-line shape.

The calls run as asyncio tasks of one event loop in a background thread, through ``AsyncOpenAI`` over aiohttp
(the SDK's ``aiohttp`` extra; its default httpx transport if that is missing). One thread juggling every socket
costs well under half the CPU per call of a thread per call (which spent its time contending for the GIL and
the connection pool's lock), and that CPU is the limit against a local server answering in milliseconds. The
calling thread decides what to send and records the answers, so Ctrl+C (which Python delivers to the main
thread) and the caller's journal need no locking.

Retries live here, not in the SDK: each call is made with ``max_retries=0`` and retried by us on 408/409/
429/5xx and connection errors with exponential backoff (honouring ``retry-after``), up to
``max_attempts``. A call that still fails becomes an error line (the requester then decides, per request,
whether it is retried in a later batch). Some errors stop the run at once, after in-flight answers are
recorded: a rejected API key, ``insufficient_quota``, a 404 for the URL or the model (``error_kinds``), and
a server that answered nothing while a request used up its attempts (unreachable: recording an error would
only burn the request's retries).

Calls are paced from the ``x-ratelimit-*`` headers (``ratelimit.RateLimitGate``): when the minute's budget
would not cover the calls in flight, new calls wait for it to refill, and a 429 pauses every call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import dataclasses
import functools
import logging
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import openai

from .error_kinds import ErrorKind, advice, error_kind
from .errors import AuthenticationError, ConfigError, QuotaExceededError, ServerRefusedError
from .ratelimit import RateLimitGate
from .remote import describe_connection_error, translate_api_error
from .store import fastjson

__all__ = ["DirectExecutor", "DirectSummary", "async_client_like"]

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 429})
ABORT_POLL_S = 0.05  # how often a call that is waiting (backoff, rate-limit pause) looks for a stop


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


def async_client_like(client: Any) -> Any:
    """An ``AsyncOpenAI`` with the settings of the sync ``openai.OpenAI`` ``client`` (key, organization,
    project, base URL, timeout, custom headers and query), over aiohttp when the SDK's extra is installed."""
    if type(client) is not openai.OpenAI:
        raise ConfigError(
            f"The direct API needs an async client, and one cannot be derived from a {type(client).__name__}: "
            "pass make_async_client= too (e.g. lambda: openai.AsyncAzureOpenAI(...))."
        )
    kwargs: dict[str, Any] = {
        "api_key": client.api_key,
        "organization": client.organization,
        "project": client.project,
        "base_url": client.base_url,
        "timeout": client.timeout,
        "max_retries": 0,
        "default_headers": getattr(client, "_custom_headers", None),
        "default_query": getattr(client, "_custom_query", None),
    }
    aiohttp_client = getattr(openai, "DefaultAioHttpClient", None)
    if aiohttp_client is not None:
        try:
            kwargs["http_client"] = aiohttp_client(timeout=client.timeout)
        except RuntimeError:  # the SDK was installed without its aiohttp extra: its default transport
            pass
    return openai.AsyncOpenAI(**kwargs)


class DirectExecutor:
    """Runs ``(custom_id, body)`` requests against one endpoint with at most ``concurrency`` calls at once.

    ``make_client()`` returns the ``AsyncOpenAI``-like client; it is called once, on the executor's event loop
    (aiohttp sessions belong to the loop that made them). Reuse one executor for many runs (its connections
    stay open) and ``close()`` it at the end, which closes the client too.
    """

    def __init__(
        self,
        make_client: Callable[[], Any],
        *,
        concurrency: int = 16,
        stop_check: Callable[[], bool] | None = None,
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self.make_client = make_client
        self.concurrency = max(1, concurrency)
        self.stop_check = stop_check or (lambda: False)
        self.max_attempts = max(1, max_attempts)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._abort = threading.Event()
        self._retries = 0
        self.gate = RateLimitGate(self.concurrency)
        self._last_answer = -1.0  # time.monotonic() of the last HTTP answer of any call
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Any = None

    # ------------------------------------------------------------------ the event loop

    def _start(self) -> asyncio.AbstractEventLoop:
        if self._loop is not None:
            return self._loop
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="gpt-direct", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            self._client = asyncio.run_coroutine_threadsafe(self._make_client(), loop).result()
        except BaseException:
            self.close()  # no half-started executor: the next run starts afresh
            raise
        return loop

    async def _make_client(self) -> Any:
        client = self.make_client()
        return client.with_options(max_retries=0) if hasattr(client, "with_options") else client

    def close(self) -> None:
        """Close the client's connections and stop the event loop (a no-op if it never ran)."""
        loop, thread, client = self._loop, self._thread, self._client
        self._loop = self._thread = self._client = None
        if loop is None or thread is None:
            return
        try:
            if client is not None:
                asyncio.run_coroutine_threadsafe(client.close(), loop).result(timeout=5)
        except Exception as exc:  # closing sockets must not hide the run's outcome
            log.debug("Closing the direct API client: %s", exc)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()

    # ------------------------------------------------------------------ a run

    def run(
        self,
        endpoint: str,
        requests: Iterable[tuple[str, dict[str, Any]]],
        on_result: Callable[[dict[str, Any]], None],
        on_progress: Callable[[int, int], None] | None = None,
    ) -> DirectSummary:
        """Send ``requests``; ``on_result(line)`` is called in this thread for each answer or error line."""
        path = endpoint.removeprefix("/v1")
        pending = list(requests)
        loop = self._start()
        self._abort.clear()
        self._retries = 0
        summary = DirectSummary()
        started = time.monotonic()
        fatal: Exception | None = None
        todo = iter(pending)
        in_flight: set[cf.Future[dict[str, Any] | None]] = set()
        finished: queue.SimpleQueue[cf.Future[dict[str, Any] | None]] = queue.SimpleQueue()

        def stop() -> None:
            summary.stopped = True
            self._abort.set()

        def fill() -> None:
            while len(in_flight) < self.concurrency and fatal is None and not summary.stopped:
                if self.stop_check():
                    stop()
                    return
                nxt = next(todo, None)
                if nxt is None:
                    return
                future = asyncio.run_coroutine_threadsafe(self._call(path, *nxt), loop)
                in_flight.add(future)
                future.add_done_callback(finished.put)

        def record(future: cf.Future[dict[str, Any] | None]) -> None:
            nonlocal fatal
            try:
                line = future.result()
            except _Fatal as exc:
                if fatal is None:
                    fatal = exc.error
                    self._abort.set()
                line = None
            if line is not None:  # None: abandoned while waiting because of a stop
                on_result(line)
                if line.get("error") or (line.get("response") or {}).get("status_code") != 200:
                    summary.num_error_lines += 1
                else:
                    summary.num_ok += 1
                if on_progress is not None:
                    on_progress(summary.num_ok + summary.num_error_lines, len(pending))
            in_flight.discard(future)  # only once recorded: an interrupt before this records it again

        try:
            fill()
            while in_flight:
                try:
                    record(finished.get(timeout=0.5))
                except queue.Empty:
                    if self.stop_check() and not summary.stopped:
                        stop()
                    continue
                fill()
        except BaseException:
            # A second Ctrl+C (KeyboardInterrupt) stops at once, but the calls already sent are paid for: wait
            # for their answers and record them so they are not bought again. (A further Ctrl+C abandons them.)
            self._abort.set()
            if in_flight:
                log.warning("Stopping at once: recording the %d answers already in flight", len(in_flight))
            try:
                for future in list(in_flight):
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

    # ------------------------------------------------------------------ one request (on the event loop)

    async def _wait_unless_aborted(self, seconds: float) -> bool:
        """Sleep ``seconds``; True (early) if the run is stopping."""
        deadline = time.monotonic() + seconds
        while not self._abort.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(left, ABORT_POLL_S))
        return True

    async def _call(self, path: str, custom_id: str, body: dict[str, Any]) -> dict[str, Any] | None:
        attempt = 0
        first_sent = time.monotonic()
        while True:
            attempt += 1
            paused = self.gate.delay()  # the shared rate-limit budget is short: let it refill first
            if paused > 0 and await self._wait_unless_aborted(paused):
                return None
            try:
                response = await self._client.post(path, body=body, cast_to=_http_response_class())
                self._last_answer = time.monotonic()
                answer = fastjson.loads(response.content)
                self.gate.observe(response.headers, answer.get("usage") if isinstance(answer, dict) else None)
                return _line(custom_id, 200, answer)
            except openai.APIStatusError as exc:
                self._last_answer = time.monotonic()
                self.gate.observe(exc.response.headers)
                error = translate_api_error(exc, f"direct call to {path}", str(self._client.base_url))
                if isinstance(error, AuthenticationError | QuotaExceededError):
                    raise _Fatal(error) from None
                kind = error_kind(exc.status_code, exc.body)
                if kind in (ErrorKind.URL, ErrorKind.MODEL):  # every other call would get the same: stop now
                    model = body.get("model") if isinstance(body.get("model"), str) else None
                    why = advice(
                        kind, exc.status_code, exc.body, path=path, base_url=str(self._client.base_url), model=model
                    )
                    raise _Fatal(
                        ServerRefusedError(f"Stopped before marking any request failed: {why}.", exc.status_code)
                    ) from None
                status = exc.status_code
                retryable = status in RETRYABLE_STATUS or status >= 500
                if not retryable or attempt >= self.max_attempts:
                    return _line(custom_id, status, exc.body if exc.body is not None else {"error": exc.message})
                retry_after = _retry_after(exc.response)
                if status == 429 and retry_after:
                    self.gate.pause(retry_after, "HTTP 429 rate limit")  # the budget is shared by every call
                delay = retry_after or self._backoff(attempt)
            except openai.APIConnectionError as exc:  # no answer (a timeout is one of these)
                if attempt >= self.max_attempts:
                    if self._last_answer >= first_sent:  # other calls get through: this one was slow or unlucky
                        return _error_line(custom_id, *describe_connection_error(exc))
                    # Nothing got through while this request tried: the server is unreachable, not the request
                    # at fault. Stop without recording an answer (which would use up its retries); a rerun
                    # sends it again.
                    error = translate_api_error(exc, f"direct call to {path}", str(self._client.base_url))
                    raise _Fatal(error) from None
                delay = self._backoff(attempt)
            except ValueError as exc:  # a 200 whose JSON body was cut or empty (e.g. a proxy dropped it)
                if attempt >= self.max_attempts:
                    return _error_line(custom_id, "malformed_response", f"the answer was not valid JSON: {exc}")
                delay = self._backoff(attempt)
            self._retries += 1  # only the event loop's thread counts
            if await self._wait_unless_aborted(delay):
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
