"""The HTTP server and router: ``Simulator`` serves an OpenAI-compatible API on 127.0.0.1.

Standard-library ``ThreadingHTTPServer`` with HTTP/1.1 keep-alive (every answer has a Content-Length), one
daemon thread per connection, and one lock around the shared stores. Authentication and the quota check
apply to every route; injected 5xx/429/dropped connections and latency apply to the direct endpoints (and to
/files and /batches only with ``batch_api_faults``), so crash tests of the batch path stay deterministic.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
import urllib.parse
from collections import Counter
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .anthropic_api import AnthropicAPI, LostResponse
from .batches_api import BatchStore
from .common import ApiError, error_body, new_id
from .config import SimulatorConfig
from .direct_api import MODELS, Answerer, Responder, model_object
from .files_api import FileStore
from .persistence import SimulatorStateFile
from .ratelimit import RateLimiter

__all__ = ["Simulator"]

log = logging.getLogger(__name__)

STRAGGLER_DECK = 100  # --straggler_rate holds exactly over each run of this many direct calls
_DIRECT = {"/v1/chat/completions", "/v1/responses", "/v1/embeddings"}


class _Drop(Exception):
    """Close the connection without answering."""


class Simulator:
    """A local OpenAI-compatible server: Files, Batches, chat completions, responses, embeddings, models.

    ``config`` is kept (not copied) and may be changed while the server runs. ``responder(endpoint, body)``
    may return the content text (or a JSON-able dict) of chat and responses answers; None means default.
    Usable as a context manager, which starts and stops it. With ``state_path``, files and batches are kept
    in that JSON file and loaded from it, so a simulator started later continues where this one stopped.
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        port: int = 0,
        responder: Responder | None = None,
        host: str = "127.0.0.1",
        state_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.config = config if config is not None else SimulatorConfig()
        self.host, self.port = host, port
        self.lock = threading.Lock()
        self.files = FileStore()
        self.answerer = Answerer(lambda: self.config.seed, responder)
        self.batches = BatchStore(self.config, self.files, self.answerer, self.lock)
        self.limiter = RateLimiter()
        self.direct_requests = 0
        self.requests = 0  # every request received, on any route (a dry run must send none)
        self.faults_injected = 0  # 500s, 429s and dropped connections injected by the fault knobs
        self.direct_serving = 0  # direct calls being answered right now
        self.direct_statuses: Counter[int] = Counter()  # HTTP status of every direct answer
        self.anthropic = AnthropicAPI(self, self._inject_faults, self._random)
        self._rng = random.Random(self.config.seed)
        self._rng_generation = getattr(self.config, "seed_generation", 0)
        self._stragglers: list[bool] = []  # the rest of the current deck of STRAGGLER_DECK calls (see _straggler)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        # With a state file, files and batches outlive this process (see persistence.py).
        self.state_file = SimulatorStateFile(state_path) if state_path is not None else None
        if self.state_file is not None:
            self.state_file.load(self)

    # --- lifecycle ------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1`` (the real port once started)."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> Simulator:
        """Bind and serve in a daemon thread; returns self."""
        if self._server is not None:
            return self
        server = _Server((self.host, self.port), _Handler)
        server.simulator = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name=f"simulator:{self.port}"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection (clients then see connection errors)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self.lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def serve_until_interrupted(self, banner: str) -> None:
        """Start, print ``banner`` (``{base_url}`` filled in), serve until Ctrl+C, then stop."""
        self.start()
        print(banner.format(base_url=self.base_url), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        """``batches`` (every batch ever created, as API objects), ``files`` (stored now), ``direct_requests``,
        ``direct_statuses`` (direct answers by HTTP status), ``count_token_calls`` (Anthropic's count_tokens),
        ``requests`` (every request received, on any route)."""
        batches = self.batches.all()
        with self.lock:
            return {
                "batches": batches,
                "files": len(self.files.files),
                "direct_requests": self.direct_requests,
                "direct_statuses": dict(self.direct_statuses),
                "count_token_calls": self.anthropic.count_token_calls,
                "requests": self.requests,
            }

    # --- requests -------------------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Any, body: bytes) -> tuple[int, bytes, dict[str, str], str]:
        """Answer one request: ``(status, body bytes, extra headers, content type)``; raises _Drop."""
        with self.lock:
            self.requests += 1
        path, _, query_text = target.partition("?")
        path = path.rstrip("/")
        direct = method == "POST" and path in _DIRECT
        kind = self.config.server_kind
        extra: dict[str, str] = {}
        if kind == "openai" and path.startswith("/v1/messages"):
            return self._anthropic(method, path, query_text, headers, body)
        try:
            if kind != "openai" and not direct and not (method == "GET" and path.startswith("/v1/models")):
                return _local_not_found(kind, method, path)
            self._check_account(headers)
            if direct:
                status, payload, extra, content_type = self._direct(path, body)
                with self.lock:
                    self.direct_statuses[status] += 1
                return status, payload, extra if kind == "openai" else {}, content_type
            return self._route(method, path, query_text, headers, body)
        except ApiError as exc:
            if direct:
                with self.lock:
                    self.direct_statuses[exc.status] += 1
            if kind != "openai":  # local servers send no rate-limit headers and have their own error shape
                return exc.status, json.dumps(_local_error_body(kind, exc)).encode(), {}, "application/json"
            extra.update(exc.headers)
            if direct:
                if self.config.ratelimit_headers:
                    with self.limiter._lock:
                        extra = {**self.limiter._headers(self.config.rpm, self.config.tpm), **extra}
                else:
                    extra = {k: v for k, v in extra.items() if not k.startswith("x-ratelimit-")}
            return exc.status, json.dumps(exc.body).encode(), extra, "application/json"
        except _Drop:
            raise
        except Exception as exc:  # a simulator bug: answer 500 (and say so) rather than hang up
            log.exception("simulator error on %s %s", method, path)
            error = error_body(f"Simulator error: {type(exc).__name__}: {exc}", "server_error", "server_error")
            return 500, json.dumps(error).encode(), extra, "application/json"

    def _anthropic(
        self, method: str, path: str, query_text: str, headers: Any, body: bytes
    ) -> tuple[int, bytes, dict[str, str], str]:
        try:
            return self.anthropic.handle(method, path, query_text, headers, body)
        except ApiError as exc:
            return exc.status, json.dumps(exc.body).encode(), exc.headers, "application/json"
        except LostResponse:
            raise _Drop from None
        except _Drop:
            raise
        except Exception as exc:  # a simulator bug: answer 500 (and say so) rather than hang up
            log.exception("simulator error on %s %s", method, path)
            error = {"type": "error", "error": {"type": "api_error", "message": f"Simulator error: {exc}"}}
            return 500, json.dumps(error).encode(), {}, "application/json"

    def take_lost_create(self) -> bool:
        """Whether this batch create's answer is to be lost (``lose_next_create_responses``)."""
        with self.lock:
            lose = self.config.lose_next_create_responses > 0
            if lose:
                self.config.lose_next_create_responses -= 1
        return lose

    def _check_account(self, headers: Any) -> None:
        config = self.config
        if config.require_api_key is not None:
            given = (headers.get("Authorization") or "").removeprefix("Bearer ").strip()
            if given != config.require_api_key:
                shown = f"{given[:3]}***{given[-4:]}" if len(given) > 8 else "(none)" if not given else "***"
                raise ApiError(
                    401,
                    f"Incorrect API key provided: {shown}. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.",
                    code="invalid_api_key",
                )
        if config.insufficient_quota:
            raise ApiError(
                429,
                "You exceeded your current quota, please check your plan and billing details.",
                type_="insufficient_quota",
                code="insufficient_quota",
            )

    def _random(self) -> float:
        generation = getattr(self.config, "seed_generation", 0)
        if generation != self._rng_generation:  # a seed set at run time restarts the fault sequence
            self._rng_generation = generation
            self._rng.seed(self.config.seed)
        return self._rng.random()

    def _inject_faults(self) -> None:
        config = self.config
        if not (config.drop_connection_rate or config.http_500_rate or config.http_429_rate):
            return
        with self.lock:
            draw = self._random()
            if draw < config.drop_connection_rate + config.http_500_rate + config.http_429_rate:
                self.faults_injected += 1  # tests check that a fault knob did inject faults
        if draw < config.drop_connection_rate:
            raise _Drop
        draw -= config.drop_connection_rate
        if draw < config.http_500_rate:
            raise ApiError(
                500,
                "The server had an error while processing your request. Sorry about that!",
                type_="server_error",
                code="server_error",
            )
        draw -= config.http_500_rate
        if draw < config.http_429_rate:
            raise ApiError(
                429,
                "Rate limit reached (simulated). Please try again in 1s.",
                type_="requests",
                code="rate_limit_exceeded",
                headers={"retry-after": "1", "retry-after-ms": "1000"},
            )

    def _direct(self, endpoint: str, raw: bytes) -> tuple[int, bytes, dict[str, str], str]:
        with self.lock:
            self.direct_requests += 1
            others = self.direct_serving
            self.direct_serving += 1
        try:
            return self._answer_direct(endpoint, raw, others)
        finally:
            with self.lock:
                self.direct_serving -= 1

    def _latency_s(self, others: int) -> float:
        """This call's simulated latency: the base, jitter, a heavy tail and the load of the other calls."""
        config = self.config
        seconds = config.latency_ms + config.load_latency_ms * others
        if config.latency_jitter_ms or config.straggler_rate:
            with self.lock:
                jitter, straggler = self._random(), self._straggler()
            seconds += jitter * config.latency_jitter_ms + (config.straggler_ms if straggler else 0)
        return seconds / 1000

    def _straggler(self) -> bool:
        """Whether this call is a straggler: exactly ``straggler_rate`` of each run of ``STRAGGLER_DECK`` calls,
        at seeded random places. A draw per call would make the rate itself random (6.3% instead of 5% over the
        first 1,200 calls of seed 0), and a heavy-tail benchmark would measure the seed rather than the client."""
        if not self.config.straggler_rate:
            return False
        if not self._stragglers:
            count = round(self.config.straggler_rate * STRAGGLER_DECK)
            deck = [True] * count + [False] * (STRAGGLER_DECK - count)
            random.Random(self._random()).shuffle(deck)  # one draw of the seeded sequence per deck
            self._stragglers = deck
        return self._stragglers.pop()

    def _answer_direct(self, endpoint: str, raw: bytes, others: int) -> tuple[int, bytes, dict[str, str], str]:
        config = self.config
        if config.max_concurrent_calls and others >= config.max_concurrent_calls:
            raise ApiError(503, "The server is overloaded; try again later.", type_="server_error", code="overloaded")
        self._inject_faults()
        latency = self._latency_s(others)
        if latency:
            time.sleep(latency)
        body = _json_body(raw)
        malformed = False
        if config.malformed_json_rate > 0:
            with self.lock:
                malformed = self._random() < config.malformed_json_rate
        answer, prompt_tokens = self.answerer.answer(endpoint, body, malformed)
        requested = prompt_tokens
        for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
            if isinstance(body.get(key), int):
                requested += body[key] * (body.get("n") or 1 if isinstance(body.get("n"), int) else 1)
                break
        headers = self.limiter.admit(config.rpm, config.tpm, requested)
        if not config.ratelimit_headers:
            headers = {}
        return 200, json.dumps(answer).encode(), headers, "application/json"

    def _route(
        self, method: str, path: str, query_text: str, headers: Any, raw: bytes
    ) -> tuple[int, bytes, dict[str, str], str]:
        parts = path.split("/")[1:]  # "/v1/files/x/content" -> ["v1", "files", "x", "content"]
        if len(parts) < 2 or parts[0] != "v1":
            raise ApiError(404, f"Invalid URL ({method} {path})")
        resource, rest = parts[1], parts[2:]
        query = dict(urllib.parse.parse_qsl(query_text))
        if resource == "models" and method == "GET":
            return _ok(self._models(rest))
        config = self.config
        enabled = {"files": config.files_api_enabled, "batches": config.batches_api_enabled}
        if not enabled.get(resource):
            raise ApiError(404, f"Invalid URL ({method} {path})")
        if config.batch_api_faults:
            self._inject_faults()
        if resource == "files":
            answer = self._files(method, path, rest, query, headers, raw)
        else:
            answer = self._batches(method, path, rest, query, raw)
        if self.state_file is not None:
            self.state_file.save_if_changed(self)  # before answering: the client never holds an unsaved id
        return answer

    def _models(self, rest: list[str]) -> Any:
        if not rest:
            return {"object": "list", "data": [model_object(m, self.config.server_kind) for m in MODELS]}
        model = "/".join(rest)
        if model not in MODELS:
            raise ApiError(
                404,
                f"The model '{model}' does not exist or you do not have access to it.",
                code="model_not_found",
                param="model",
            )
        return model_object(model, self.config.server_kind)

    def _files(
        self, method: str, path: str, rest: list[str], query: dict[str, Any], headers: Any, raw: bytes
    ) -> tuple[Any, ...]:
        if method == "POST" and not rest:
            content_type = headers.get("Content-Type") or ""
            with self.lock:
                return _ok(self.files.upload(content_type, raw))
        if method == "GET" and not rest:
            with self.lock:
                return _ok(self.files.list(query))
        if method == "GET" and len(rest) == 1:
            with self.lock:
                return _ok(self.files.get(rest[0]).to_api())
        if method == "GET" and len(rest) == 2 and rest[1] == "content":
            with self.lock:
                data = self.files.get(rest[0]).data
            return 200, data, {}, "application/octet-stream"
        if method == "DELETE" and len(rest) == 1:
            with self.lock:
                return _ok(self.files.delete(rest[0]))
        raise ApiError(404, f"Invalid URL ({method} {path})")

    def _batches(self, method: str, path: str, rest: list[str], query: dict[str, Any], raw: bytes) -> tuple[Any, ...]:
        if method == "POST" and not rest:
            created = self.batches.create(_json_body(raw))
            if self.take_lost_create():
                raise _Drop
            return _ok(created)
        if method == "GET" and not rest:
            return _ok(self.batches.list(query))
        if method == "GET" and len(rest) == 1:
            return _ok(self.batches.retrieve(rest[0]))
        if method == "POST" and len(rest) == 2 and rest[1] == "cancel":
            return _ok(self.batches.cancel(rest[0]))
        raise ApiError(404, f"Invalid URL ({method} {path})")


def _local_not_found(kind: str, method: str, path: str) -> tuple[int, bytes, dict[str, str], str]:
    """What a vLLM (FastAPI) or Ollama (Go) server answers for a route it does not have."""
    if kind == "vllm":
        return 404, b'{"detail":"Not Found"}', {}, "application/json"
    return 404, b"404 page not found", {}, "text/plain"


def _local_error_body(kind: str, exc: ApiError) -> dict[str, Any]:
    """An error in vLLM's shape (flat, numeric code) or Ollama's (``error`` object, no code)."""
    message = exc.body["error"]["message"]
    if kind == "vllm":
        type_ = {400: "BadRequestError", 401: "Unauthorized", 404: "NotFoundError"}.get(
            exc.status, "InternalServerError"
        )
        return {"object": "error", "message": message, "type": type_, "param": None, "code": exc.status}
    return {"error": {"message": message, "type": "api_error", "param": None, "code": None}}


def _phrase(status: int) -> str:
    """The reason phrase; 529 (Anthropic's "overloaded") is not in the standard table."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Overloaded" if status == 529 else "Unknown"


def _ok(payload: Any) -> tuple[int, bytes, dict[str, str], str]:
    return 200, json.dumps(payload).encode(), {}, "application/json"


def _json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ApiError(
            400,
            "We could not parse the JSON body of your request. Send a JSON object with Content-Type: application/json.",
        )
    return body


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() closes the connections itself; idle keep-alive threads must not block it
    request_queue_size = 256
    simulator: Simulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up (or that we drop on purpose) are normal here, not worth a traceback


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "gpt-batch-api-simulator"
    sys_version = ""
    timeout = 120  # an idle keep-alive connection is closed after this many seconds
    server: _Server

    def setup(self) -> None:
        super().setup()
        sim = self.server.simulator
        with sim.lock:
            sim._connections.add(self.connection)

    def finish(self) -> None:
        sim = self.server.simulator
        with sim.lock:
            sim._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def handle_one_request(self) -> None:
        """Read one request and answer it. Headers are parsed by hand: the email parser that
        http.server uses costs more than all of the simulator's own work on a chat request."""
        try:
            line = self.rfile.readline(65537)
            if not line:
                self.close_connection = True
                return
            parts = line.decode("latin-1").split()
            if len(parts) != 3 or len(line) > 65536:
                self.close_connection = True
                self._write(
                    400, json.dumps(error_body("Malformed HTTP request line.", "invalid_request_error")).encode()
                )
                return
            method, self.path, version = parts
            self.command, self.request_version = method, version
            headers = _Headers()
            while True:
                raw = self.rfile.readline(65537)
                if raw in (b"\r\n", b"\n", b""):
                    break
                name, _, value = raw.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            self.headers = headers  # type: ignore[assignment]
            connection = headers.get("connection", "").lower()
            self.close_connection = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
            if headers.get("expect", "").lower() == "100-continue":
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self._serve(method)
        except (TimeoutError, ConnectionError):
            self.close_connection = True

    def _serve(self, method: str) -> None:
        body = self._read_body()
        try:
            status, payload, headers, content_type = self.server.simulator.handle(method, self.path, self.headers, body)
        except _Drop:
            self.close_connection = True
            return
        self._write(status, payload, headers, content_type)

    def _write(
        self, status: int, payload: bytes, headers: dict[str, str] | None = None, content_type: str = "application/json"
    ) -> None:
        lines = [
            f"HTTP/1.1 {status} {_phrase(status)}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(payload)}",
            f"x-request-id: {new_id('req_')}",
        ]
        lines.extend(f"{key}: {value}" for key, value in (headers or {}).items())
        if self.close_connection:
            lines.append("Connection: close")
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)


class _Headers(dict[str, Any]):
    """Request headers by lower-cased name; ``get`` ignores case like http.server's headers."""

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)
