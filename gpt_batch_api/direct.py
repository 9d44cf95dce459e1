"""A continuous flow of concurrent direct API calls; every answer is journaled before anyone sees it.

The calls run as asyncio tasks of one event loop in a background thread, through a ``DirectTransport``
(``direct_transports``: OpenAI over one aiohttp session, any ``AsyncOpenAI``-like client, or ``AsyncAnthropic``),
which returns the status, headers and JSON body of each answer; what they mean is decided here, the same way
for every provider. One thread juggling every socket costs well under half the CPU per call of a thread per
call (which spent its time contending for the GIL and the connection pool's lock), and that CPU is the limit
against a local server answering in milliseconds.

The flow is not cut into rounds: the requester submits direct batches (its unit of processing) and the loop
keeps ``concurrency`` calls in flight across them; a free slot takes the next unsent request at once, while
the calling thread processes finished batches, runs task code and commits. The loop itself appends each answer
to its batch's results journal (one ``write``, so a kill of the process cannot lose it), fsyncs the journals
in groups (at most ``FSYNC_INTERVAL`` apart), and reports a batch complete only once every answer of it is
fsynced: the task never sees an answer that a power loss could take back. A SIGKILL re-buys only the calls in
flight at that instant.

Retries live here, not in the SDK: each call is made with ``max_retries=0`` and retried by us on 408/409/
429/5xx (Anthropic's 529 ``overloaded_error`` included) and connection errors with exponential backoff
(honouring ``retry-after``), up to ``max_attempts``. A call that still fails becomes an error line (the
requester then decides, per request, whether it is retried in a later batch). A connection failure counts as
an attempt only if the server answered other calls meanwhile: during an outage nothing is an attempt, and an
outage that outlasts ``max_attempts`` backoffs stops the run (the unanswered requests are sent by the next
run). A rejected API key, ``insufficient_quota`` and a 404 for the URL or the model (``error_kinds``) stop the
run at once, after the answers in flight are recorded.

Pacing (``ratelimit.RateLimitGate``): from the ``x-ratelimit-*`` (OpenAI) or ``anthropic-ratelimit-*`` headers
when the server sends them; without them (local servers), the number of calls in flight backs off on
429/503/529 and recovers (AIMD).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import logging
import os
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .api_errors import status_error, unreachable
from .direct_transports import (
    Answer,
    DirectTransport,
    MalformedAnswer,
    NoAnswer,
    PageAnswer,
    SDKTransport,
    StreamedAnswer,
    async_client_like,
)
from .error_kinds import ErrorKind, advice, error_fields, error_kind
from .errors import APIError, ServerRefusedError
from .ratelimit import MAX_PAUSE_S, RateLimitGate, has_ratelimit_headers
from .redact import redact
from .store import fastjson
from .store.atomic import DISK_ERRNOS, crash_point, disk_error

__all__ = ["STOP_AT_ONCE_S", "DirectExecutor", "DirectSummary", "async_client_like"]

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 429})
OVERLOAD_STATUS = frozenset({429, 503, 529})  # saturated, said without rate-limit headers (529: Anthropic's)
ABORT_POLL_S = 0.05  # how often a call that is waiting (backoff, rate-limit pause) looks for a stop
FSYNC_INTERVAL = 0.2  # journals are fsynced in groups at most this far apart (bounds what a power loss takes)
PAGES_IN_A_ROW_STOP = 10  # a proxy's passing error page is retried; this many in a row with nothing else stop
STOP_AT_ONCE_S = 0.8  # after a second Ctrl+C, answers in flight are awaited this long, then abandoned


@dataclasses.dataclass
class DirectSummary:
    """Counts of one executor's session (written by the loop thread)."""

    num_ok: int = 0
    num_error_lines: int = 0
    num_transport_retries: int = 0
    num_timed: int = 0  # successful calls, whose latencies follow
    latency_max: float = 0.0  # seconds
    first_sent: float = 0.0  # time.monotonic() of the session's first call

    def timed(self, sent: float, latency: float) -> None:
        self.num_timed += 1
        self.latency_max = max(self.latency_max, latency)
        if not self.first_sent:
            self.first_sent = sent

    def tail_horizon(self, now: float) -> int:
        """About how many calls the flow answers while its slowest call so far is answered (the session's
        rate times that latency): a direct batch cut within this many requests of the end of the run may still
        wait for a slow call when everything else is done. 0 before any answer."""
        elapsed = now - self.first_sent
        if not self.num_timed or elapsed <= 0:
            return 0
        return round(self.num_timed / elapsed * self.latency_max)


class _Fatal(Exception):
    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class _Journal:
    """One submitted direct batch: its results journal (an open descriptor) and how many answers it awaits."""

    __slots__ = ("answered", "awaited", "batch_id", "dirty", "fd", "path")

    def __init__(self, batch_id: int, path: Path, fd: int, awaited: int) -> None:
        self.batch_id, self.path, self.fd, self.awaited = batch_id, path, fd, awaited
        self.answered = 0
        self.dirty = False  # written since the last fsync

    @property
    def complete(self) -> bool:
        return self.answered >= self.awaited


def _as_disk_error(path: Path, exc: OSError) -> BaseException:
    return disk_error(path, exc) if exc.errno in DISK_ERRNOS else exc


class DirectExecutor:
    """Keeps at most ``concurrency`` direct calls in flight over every submitted batch (see the module docstring).

    ``make_transport()`` returns the ``DirectTransport`` (or an ``AsyncOpenAI``-like client, sent through the
    SDK); it is called once, on the executor's event loop (aiohttp sessions belong to the loop that made them).
    One executor serves a whole session (its connections stay open); ``close()`` it at the end, which waits for
    the answers in flight and closes the transport. The calling thread uses ``submit``, ``completed``,
    ``wait``, ``check`` and ``close``; the rest runs on the loop.
    """

    def __init__(
        self,
        make_transport: Callable[[], DirectTransport | Any],
        *,
        concurrency: int = 16,
        stop_check: Callable[[], bool] | None = None,
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self.make_transport = make_transport
        self.concurrency = max(1, concurrency)
        self.stop_check = stop_check or (lambda: False)
        self.max_attempts = max(1, max_attempts)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.gate = RateLimitGate(self.concurrency)
        self.summary = DirectSummary()
        self.submitted: set[int] = set()  # batch ids handed to the flow (calling thread only)
        self._outstanding: set[int] = set()  # submitted, not yet returned by completed() (calling thread only)
        self._abort = threading.Event()  # stop sending; calls waiting to retry give up
        self._changed = threading.Event()  # a batch completed or the flow failed
        self._completed: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._fatal: BaseException | None = None
        self._last_answer = -1.0  # time.monotonic() of the last HTTP answer of any call
        self._pages_in_a_row = 0  # web pages answered with 200 since the last other answer (see PageAnswer)
        # Owned by the loop thread (the calling thread only reads their sizes):
        self._unsent: collections.deque[tuple[_Journal, str, str, Any]] = collections.deque()
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._journals: dict[int, _Journal] = {}
        self._sync_wake: asyncio.Event | None = None
        self._syncer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._transport: DirectTransport | None = None

    # ------------------------------------------------------------------ the event loop

    def _start(self) -> asyncio.AbstractEventLoop:
        if self._loop is not None:
            return self._loop
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="gpt-direct", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            self._transport = asyncio.run_coroutine_threadsafe(self._setup(), loop).result()
        except BaseException:
            self.close(grace=0)  # no half-started executor: the next run starts afresh
            raise
        return loop

    async def _setup(self) -> DirectTransport:
        self._sync_wake = asyncio.Event()
        self._syncer = asyncio.get_running_loop().create_task(self._sync_journals())
        made = self.make_transport()
        return made if isinstance(made, DirectTransport) else SDKTransport(made)

    # ------------------------------------------------------------------ the calling thread's side

    @property
    def unsent(self) -> int:
        """Requests submitted and not sent yet."""
        return len(self._unsent)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def busy(self) -> bool:
        """Whether a submitted batch was not yet returned by ``completed()``."""
        return bool(self._outstanding)

    def progress(self) -> list[tuple[int, int, int]]:
        """``(batch id, answered, awaited)`` of each submitted batch not complete yet."""
        journals = tuple(self._journals.values())  # one C-level copy: the loop thread may change the dict
        return [(j.batch_id, j.answered, j.awaited) for j in journals]

    def submit(self, batch_id: int, journal: Path, endpoint: str, requests: Iterable[tuple[str, Any]]) -> None:
        """Send ``requests`` (``(custom_id, body)``) of direct batch ``batch_id``, appending each answer to
        ``journal``; ``completed()`` reports the batch once every one is answered and fsynced."""
        pending = list(requests)
        self.submitted.add(batch_id)
        self._outstanding.add(batch_id)
        if not pending:
            self._completed.put(batch_id)
            self._changed.set()
            return
        loop = self._start()
        try:
            fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as exc:
            raise _as_disk_error(journal, exc) from None
        entry = _Journal(batch_id, journal, fd, len(pending))
        assert self._transport is not None
        path = self._transport.route(endpoint)
        loop.call_soon_threadsafe(self._accept, entry, [(entry, custom_id, path, body) for custom_id, body in pending])

    def completed(self) -> list[int]:
        """Batches completed (every answer journaled and fsynced) since the last call, in order of completion."""
        done: list[int] = []
        while True:
            try:
                batch_id = self._completed.get_nowait()
            except queue.Empty:
                return done
            self._outstanding.discard(batch_id)
            done.append(batch_id)

    def wait(self, timeout: float) -> None:
        """Block until a batch completes, the flow fails, or ``timeout`` passes."""
        if self._completed.empty() and self._fatal is None:
            self._changed.wait(timeout)
        self._changed.clear()

    def check(self) -> None:
        """Raise the error that stopped the flow (a rejected key, no quota, an unreachable server, a full disk)."""
        if self._fatal is not None:
            raise self._fatal

    def close(self, grace: float | None = None) -> None:
        """Stop sending; wait for the answers in flight (``grace`` seconds at most; None: as long as they take),
        record and fsync them, then close the transport and the loop. A Ctrl+C during the wait (the second one of
        a run) shortens it to ``STOP_AT_ONCE_S``; a third abandons what is left at once."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._abort.set()
        interrupted: BaseException | None = None
        deadline = None if grace is None else time.monotonic() + grace
        while True:
            try:
                self._drain(deadline)
                break
            except KeyboardInterrupt as exc:
                if interrupted is not None:
                    break
                interrupted = exc
                deadline = min(deadline or float("inf"), time.monotonic() + STOP_AT_ONCE_S)
        self._shutdown(loop, thread, quick=interrupted is not None or bool(self._in_flight))
        if interrupted is not None:
            raise interrupted

    def _drain(self, deadline: float | None) -> None:
        if self._in_flight:
            limit = "" if deadline is None else f" (for up to {max(0.0, deadline - time.monotonic()):.1f} s)"
            log.warning("Stopping: recording the %d answers in flight%s", len(self._in_flight), limit)
        while self._in_flight and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.02)
        if self._in_flight:
            log.warning("Abandoned %d calls that did not answer in time (the next run sends them)", self.in_flight)

    def _shutdown(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread, *, quick: bool) -> None:
        self._loop = self._thread = None
        transport, self._transport = self._transport, None
        try:
            asyncio.run_coroutine_threadsafe(self._finish(transport), loop).result(timeout=0.25 if quick else 5)
        except Exception as exc:  # closing must not hide the run's outcome
            log.debug("Closing the direct API flow: %s", exc)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=0.25 if quick else 5)
        if not thread.is_alive():
            loop.close()

    async def _finish(self, transport: DirectTransport | None) -> None:
        """On the loop: abandon what is left, fsync and close every journal, close the transport."""
        self._unsent.clear()
        for task in list(self._in_flight):
            task.cancel()
        if self._syncer is not None:
            self._syncer.cancel()
        for entry in list(self._journals.values()):
            self._close_journal(entry, sync=True)
        if transport is not None:
            await transport.aclose()

    # ------------------------------------------------------------------ the loop's side

    def _accept(self, entry: _Journal, items: list[tuple[_Journal, str, str, Any]]) -> None:
        self._journals[entry.batch_id] = entry
        self._unsent.extend(items)
        self._pump()

    def _pump(self) -> None:
        """Start calls until ``concurrency`` (or the back-off window) are in flight."""
        limit = self.gate.window()
        while self._unsent and len(self._in_flight) < limit and not self._abort.is_set():
            if self.stop_check():  # Ctrl+C: no new calls; those in flight are answered and recorded
                self._abort.set()
                self._changed.set()
                return
            entry, custom_id, path, body = self._unsent.popleft()
            task = asyncio.get_running_loop().create_task(self._call(path, custom_id, body))
            self._in_flight.add(task)
            task.add_done_callback(functools.partial(self._answered, entry))

    def _answered(self, entry: _Journal, task: asyncio.Task[Any]) -> None:
        self._in_flight.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self._fail(error.error if isinstance(error, _Fatal) else error)
        elif (line := task.result()) is not None:  # None: abandoned while waiting because of a stop
            self._record(entry, line)
        self._pump()

    def _record(self, entry: _Journal, line: dict[str, Any]) -> None:
        if entry.fd < 0:
            return  # the flow was shut down before this answer came
        data = fastjson.dumps(line) + b"\n"
        try:
            while data:  # one write in practice; a torn last line is dropped by recover_jsonl on restart
                data = data[os.write(entry.fd, data) :]
        except OSError as exc:
            self._fail(_as_disk_error(entry.path, exc))
            return
        crash_point("direct_after_result")
        entry.answered += 1
        entry.dirty = True
        response = line.get("response")
        if line.get("error") is None and response is not None and response.get("status_code") == 200:
            self.summary.num_ok += 1
        else:
            self.summary.num_error_lines += 1
        if entry.complete and self._sync_wake is not None:
            self._sync_wake.set()  # fsync it now: the task is waiting for this batch

    def _fail(self, error: BaseException) -> None:
        if self._fatal is None:
            self._fatal = error
        self._abort.set()
        self._changed.set()

    async def _sync_journals(self) -> None:
        """fsync the journals written to, in groups (in a worker thread: an fsync may take milliseconds), and
        report each complete batch once its answers are on disk."""
        loop = asyncio.get_running_loop()
        assert self._sync_wake is not None
        while True:
            try:
                await asyncio.wait_for(self._sync_wake.wait(), FSYNC_INTERVAL)
            except TimeoutError:
                pass
            self._sync_wake.clear()
            for entry in [e for e in self._journals.values() if e.dirty]:
                entry.dirty = False
                try:
                    await loop.run_in_executor(None, os.fsync, entry.fd)
                except OSError as exc:
                    self._fail(_as_disk_error(entry.path, exc))
            for entry in [e for e in self._journals.values() if e.complete and not e.dirty]:
                self._close_journal(entry, sync=False)
                if self._fatal is None:
                    self._completed.put(entry.batch_id)
                    self._changed.set()

    def _close_journal(self, entry: _Journal, *, sync: bool) -> None:
        self._journals.pop(entry.batch_id, None)
        fd, entry.fd = entry.fd, -1
        try:
            if sync:
                os.fsync(fd)
        except OSError as exc:
            log.warning("Could not fsync %s: %s", entry.path.name, exc)
        finally:
            os.close(fd)

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

    async def _call(self, path: str, custom_id: str, body: Any) -> dict[str, Any] | None:
        transport = self._transport
        assert transport is not None
        attempt = 0  # attempts that count: the server answered, or answered other calls while this one failed
        outage = 0  # connection failures in a row while no call got an answer
        while True:
            paused = self.gate.delay()  # the shared rate-limit budget is short: let it refill first
            if paused > 0 and await self._wait_unless_aborted(paused):
                return None
            sent = time.monotonic()
            try:
                answer = await transport.send(path, body)
            except NoAnswer as exc:  # refused, dropped, timed out
                if self._last_answer > sent:  # other calls got answers meanwhile: this one was slow or unlucky
                    attempt, outage = attempt + 1, 0
                    if attempt >= self.max_attempts:
                        return _error_line(custom_id, exc.code, exc.detail)
                else:  # nothing got through: an outage, not this request's fault (no attempt used)
                    outage += 1
                    if outage >= self.max_attempts:
                        # Still unreachable after every backoff: stop without recording an answer (which would
                        # use up its retries); a rerun sends it again.
                        raise _Fatal(_unreachable(transport, path, exc)) from None
                delay = self._backoff(attempt + outage)
            except StreamedAnswer as exc:  # every answer would be: stop rather than buy each one max_attempts times
                why = (
                    f"the server at {redact(transport.base_url)} answered a direct call to {path} with {exc}, although "
                    "no stream was asked for (a proxy or a server setting that forces stream=true?). Make it answer "
                    "plain JSON, then rerun the same command"
                )
                raise _Fatal(ServerRefusedError(f"Stopped before marking any request failed: {why}.")) from None
            except MalformedAnswer as exc:  # a 200 whose JSON body was cut or empty (e.g. a proxy dropped it)
                self._last_answer = time.monotonic()
                self._pages_in_a_row = self._pages_in_a_row + 1 if isinstance(exc, PageAnswer) else 0
                if self._pages_in_a_row >= PAGES_IN_A_ROW_STOP:  # a portal or a web UI, not a passing proxy error
                    why = (
                        f"the server at {redact(transport.base_url)} answered {self._pages_in_a_row} direct calls to "
                        f"{path} in a row with a web page, not an API answer (the last: {exc}). Check "
                        "--client_base_url (the API's base URL, usually ending in /v1, with no login page or portal "
                        "in between), then rerun the same command"
                    )
                    raise _Fatal(ServerRefusedError(f"Stopped before marking any request failed: {why}.")) from None
                attempt += 1
                if attempt >= self.max_attempts:
                    return _error_line(custom_id, "malformed_response", f"the answer was not valid JSON: {exc}")
                delay = self._backoff(attempt)
            else:
                self._last_answer = time.monotonic()
                self._pages_in_a_row = 0
                status, headers, answer_body = answer.status, answer.headers, answer.body
                if 200 <= status < 300:
                    self.gate.observe(headers, answer_body.get("usage") if isinstance(answer_body, dict) else None)
                    self.gate.answered(self._last_answer - sent)
                    self.summary.timed(sent, self._last_answer - sent)
                    return _line(custom_id, 200, answer_body)
                attempt, outage = attempt + 1, 0
                self.gate.observe(headers)
                self._stop_if_fatal(transport, path, answer, body)
                if status in OVERLOAD_STATUS and not has_ratelimit_headers(headers):
                    self.gate.overloaded(status)  # a server saturated: fewer calls in flight
                retryable = status in RETRYABLE_STATUS or status >= 500
                if not retryable or attempt >= self.max_attempts:
                    error_body = answer_body if answer_body is not None else {"error": f"HTTP {status}, empty body"}
                    return _line(custom_id, status, error_body)
                retry_after = _retry_after(headers)
                if status == 429 and retry_after:
                    self.gate.pause(retry_after, "HTTP 429 rate limit")  # the budget is shared by every call
                delay = retry_after or self._backoff(attempt)
            self.summary.num_transport_retries += 1  # only the event loop's thread counts
            if await self._wait_unless_aborted(delay):
                return None

    def _stop_if_fatal(self, transport: DirectTransport, path: str, answer: Answer, body: Any) -> None:
        """Raise ``_Fatal`` for an answer that every other call would get too: a rejected key, no credit, a
        URL or a model the server does not know."""
        kind = error_kind(answer.status, answer.body)
        if kind not in (ErrorKind.AUTH, ErrorKind.QUOTA, ErrorKind.URL, ErrorKind.MODEL):
            return
        status, what = answer.status, f"direct call to {path}"
        error: Exception
        if kind in (ErrorKind.AUTH, ErrorKind.QUOTA):
            _, _, message = error_fields(answer.body)
            error = status_error(what, status, answer.body, message, transport.words)
        else:
            model = body.get("model") if isinstance(body, dict) and isinstance(body.get("model"), str) else None
            base_url = redact(transport.base_url)
            why = advice(
                kind, status, answer.body, path=path, base_url=base_url, model=model, key_hint=transport.words.key_hint
            )
            error = ServerRefusedError(f"Stopped before marking any request failed: {why}.", status)
        raise _Fatal(error)

    def _backoff(self, attempt: int) -> float:
        return float(min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0))


def _unreachable(transport: DirectTransport, path: str, exc: NoAnswer) -> APIError:
    return unreachable(f"direct call to {path}", transport.base_url, exc.detail, transport.words)


def _retry_after(headers: Any) -> float | None:
    """The seconds a ``retry-after(-ms)`` header asks for, at most ``MAX_PAUSE_S``; None if absent or not a
    number of seconds (``nan``, ``inf`` or a negative from an odd server would wait forever, or not at all)."""
    try:
        value = headers.get("retry-after-ms")
        if value is not None:
            seconds = float(value) / 1000
        else:
            value = headers.get("retry-after")
            if value is None:
                return None
            seconds = float(value)
    except (AttributeError, TypeError, ValueError):
        return None
    if not 0 <= seconds <= MAX_PAUSE_S:  # NaN fails this too
        return MAX_PAUSE_S if seconds > MAX_PAUSE_S else None
    return seconds


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
