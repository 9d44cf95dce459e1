"""The direct transports: what the OpenAI (aiohttp) and Anthropic (AsyncAnthropic) transports send and return,
and the direct flow driven through each against the simulator on 127.0.0.1 (real HTTP, real SDKs)."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from gpt_batch_api.direct import DirectExecutor
from gpt_batch_api.direct_transports import (
    AnthropicDirectTransport,
    MalformedAnswer,
    NoAnswer,
    OpenAIDirectTransport,
    SDKTransport,
    direct_transport_factory,
)
from gpt_batch_api.error_kinds import ErrorKind, error_kind
from gpt_batch_api.errors import APIError, AuthenticationError, ConfigError, QuotaExceededError, ServerRefusedError
from gpt_batch_api.simulator import Simulator, SimulatorConfig

from .support.helpers import REPO, OneShotProxy

MODEL = "claude-haiku-4-5"
KEY = "sk-ant-test"


# ---------------------------------------------------------------------------------------------------- helpers


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers each POST with the status/body the test queued, recording the request."""

    answers: list[tuple[int, bytes]] = []
    seen: list[tuple[str, dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        status, payload = self.answers.pop(0) if self.answers else (200, b'{"ok": true}')
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-ratelimit-remaining-requests", "7")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder():
    _Recorder.answers, _Recorder.seen = [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, _Recorder
    server.shutdown()
    server.server_close()


def _send_all(make, calls: list[tuple[str, Any]]) -> list[Any]:
    """Make a transport with ``make()`` on a fresh loop and send ``calls``; answers or raised exceptions."""

    async def run() -> list[Any]:
        transport = make()
        out: list[Any] = []
        try:
            for path, body in calls:
                try:
                    out.append(await transport.send(transport.route(path), body))
                except (NoAnswer, MalformedAnswer) as exc:
                    out.append(exc)
        finally:
            await transport.aclose()
        return out

    return asyncio.run(run())


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_executor(
    tmp_path: Path, make, endpoint: str, bodies: list[Any], **options: Any
) -> tuple[DirectExecutor, list]:
    """Submit ``bodies`` as one direct batch; wait until it completes or the flow fails; the journal's lines."""
    journal = tmp_path / "journal.jsonl"
    options = {"backoff_base": 0.01, "backoff_max": 0.05, **options}
    executor = DirectExecutor(make, **options)
    try:
        executor.submit(1, journal, endpoint, [(f"r{i}", body) for i, body in enumerate(bodies)])
        deadline = time.monotonic() + 60
        done: list[int] = []
        while not done and executor._fatal is None and time.monotonic() < deadline:
            executor.wait(0.2)
            done = executor.completed()
    finally:
        executor.close(grace=5)
    lines = [json.loads(line) for line in journal.read_text().splitlines()] if journal.exists() else []
    return executor, lines


def _message(i: int, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 50, "messages": [{"role": "user", "content": f"Say {i}."}], **extra}


def _anthropic(sim: Simulator, key: str = KEY):
    return direct_transport_factory("anthropic", api_key=key, base_url=sim.base_url.removesuffix("/v1"))


# ---------------------------------------------------------------------------------------------------- OpenAI


def test_the_openai_transport_sends_the_clients_settings_with_aiohttp(recorder):
    server, handler = recorder
    client = openai.OpenAI(
        api_key="sk-test", organization="org-1", project="proj-1", timeout=7.5,
        base_url=f"http://127.0.0.1:{server.server_address[1]}/v1",
        default_headers={"X-Team": "nlp"}, default_query={"tier": "a"},
    )  # fmt: skip
    factory = direct_transport_factory("openai", client)
    handler.answers = [(200, b'{"id": "x", "usage": {"total_tokens": 3}}'), (400, b'{"error": {"code": "bad"}}')]
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "héllo"}]}
    ok, refused = _send_all(factory, [("/v1/chat/completions", body), ("/v1/chat/completions", body)])
    assert ok.status == 200 and ok.body == {"id": "x", "usage": {"total_tokens": 3}}
    assert ok.headers.get("X-RateLimit-Remaining-Requests") == "7", "headers are read case-insensitively"
    assert refused.status == 400 and refused.body == {"error": {"code": "bad"}}, "the whole error body"
    path, headers, sent = handler.seen[0]
    assert path == "/v1/chat/completions?tier=a"
    assert headers["authorization"] == "Bearer sk-test"
    assert (headers["openai-organization"], headers["openai-project"], headers["x-team"]) == ("org-1", "proj-1", "nlp")
    assert headers["content-type"] == "application/json"
    assert json.loads(sent) == body


def test_a_query_in_the_base_url_is_kept(recorder):
    server, handler = recorder
    client = openai.OpenAI(api_key="k", base_url=f"http://127.0.0.1:{server.server_address[1]}/v1?deployment=a")
    (ok,) = _send_all(direct_transport_factory("openai", client), [("/v1/chat/completions", {})])
    assert ok.status == 200 and handler.seen[0][0] == "/v1/chat/completions?deployment=a"


def test_the_factory_picks_aiohttp_for_plain_clients_and_the_sdk_otherwise():
    plain = openai.OpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1")

    async def made(factory) -> Any:
        transport = factory()
        await transport.aclose()
        return transport

    assert isinstance(asyncio.run(made(direct_transport_factory("openai", plain))), OpenAIDirectTransport)
    given = asyncio.run(
        made(direct_transport_factory("openai", plain, make_async_client=lambda: openai.AsyncOpenAI(api_key="k")))
    )
    assert type(given) is SDKTransport and given.client.max_retries == 0

    class TeamClient(openai.OpenAI):
        pass

    with pytest.raises(ConfigError, match="make_async_client="):
        asyncio.run(made(direct_transport_factory("openai", TeamClient(api_key="k", base_url="http://h/v1"))))
    with pytest.raises(ConfigError, match="Unknown provider 'mistral'"):
        direct_transport_factory("mistral", plain)


def test_no_answer_is_told_apart_from_a_cut_body(recorder):
    server, handler = recorder
    handler.answers = [(200, b'{"id": "cut')]
    client = openai.OpenAI(api_key="k", base_url=f"http://127.0.0.1:{server.server_address[1]}/v1")
    (cut,) = _send_all(direct_transport_factory("openai", client), [("/v1/chat/completions", {})])
    assert isinstance(cut, MalformedAnswer)

    refused_client = openai.OpenAI(api_key="k", base_url=f"http://127.0.0.1:{_closed_port()}/v1")
    (refused,) = _send_all(direct_transport_factory("openai", refused_client), [("/v1/chat/completions", {})])
    assert isinstance(refused, NoAnswer) and refused.code == "connection_error", refused

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    with silent:
        quiet = openai.OpenAI(api_key="k", base_url=f"http://127.0.0.1:{silent.getsockname()[1]}/v1", timeout=0.3)
        (late,) = _send_all(direct_transport_factory("openai", quiet), [("/v1/chat/completions", {})])
    assert isinstance(late, NoAnswer) and late.code == "timeout", late


def test_the_openai_transport_goes_through_the_proxy_of_the_environment(monkeypatch):
    client = openai.OpenAI(api_key="sk-test", base_url="http://api.example.invalid/v1", timeout=5.0)
    with OneShotProxy(monkeypatch) as proxy:
        (answered,) = _send_all(direct_transport_factory("openai", client), [("/v1/chat/completions", {})])
    assert answered.status == 200
    assert proxy.seen == [b"POST http://api.example.invalid/v1/chat/completions HTTP/1.1"]


# ---------------------------------------------------------------------------------------------------- Anthropic


@pytest.fixture
def sim():
    with Simulator(SimulatorConfig(require_api_key=KEY)) as simulator:
        yield simulator


def test_anthropic_direct_calls_are_journaled_in_the_engines_result_format(tmp_path, sim):
    executor, lines = _run_executor(tmp_path, _anthropic(sim), "/v1/messages", [_message(i) for i in range(20)])
    executor.check()
    assert sorted(line["custom_id"] for line in lines) == sorted(f"r{i}" for i in range(20))
    for line in lines:
        assert line["error"] is None and line["response"]["status_code"] == 200
        body = line["response"]["body"]
        assert body["type"] == "message" and body["content"][0]["type"] == "text"
        assert body["usage"]["input_tokens"] > 0
    assert sim.anthropic.direct_requests == 20
    assert executor.summary.num_ok == 20 and executor.summary.num_transport_retries == 0


def test_anthropic_direct_lines_read_like_the_batch_backends_lines(tmp_path, sim):
    from anthropic.types import Message

    from gpt_batch_api.backends.anthropic_backend import _engine_line
    from gpt_batch_api.demo_tasks.char_codes import CharAnswer, prompt_for
    from gpt_batch_api.endpoints.messages import MessagesEndpoint

    endpoint = MessagesEndpoint()
    payload = {"model": MODEL, "max_tokens": 200, "messages": [{"role": "user", "content": prompt_for("Ж")}]}
    body, spec = endpoint.prepare({**payload, "response_format": CharAnswer})
    executor, (line,) = _run_executor(tmp_path, _anthropic(sim), endpoint.path, [body])
    executor.check()
    assert Message.model_validate(line["response"]["body"]).stop_reason == "tool_use"  # the Message itself
    batch_line, _ = _engine_line("r0", {"type": "succeeded", "message": line["response"]["body"]})
    assert set(batch_line) <= set(line) and set(batch_line["response"]) <= set(line["response"])  # same shape
    parsed = endpoint.parse(line["response"]["body"], 1, spec)
    assert not parsed.errors and isinstance(parsed.parsed[0], CharAnswer)


def test_anthropic_529_overloaded_is_retried_with_backoff_until_answered(tmp_path, sim):
    sim.config.http_529_rate = 0.5
    executor, lines = _run_executor(
        tmp_path, _anthropic(sim), "/v1/messages", [_message(i) for i in range(20)], max_attempts=30, concurrency=4
    )
    executor.check()
    assert len(lines) == 20 and all(line["response"]["status_code"] == 200 for line in lines)
    assert executor.summary.num_transport_retries > 0, "about half the calls were answered 529 first"
    assert sim.anthropic.direct_requests == 20 + executor.summary.num_transport_retries
    assert executor.gate.decreases > 0, "a 529 without rate-limit headers: fewer calls in flight (AIMD)"


def test_anthropic_dropped_connections_500s_and_429s_are_retried_and_every_request_answered_once(tmp_path, sim):
    sim.config.drop_connection_rate, sim.config.http_500_rate, sim.config.http_429_rate = 0.1, 0.1, 0.05
    executor, lines = _run_executor(
        tmp_path, _anthropic(sim), "/v1/messages", [_message(i) for i in range(30)], max_attempts=30, concurrency=4
    )
    executor.check()
    assert sorted(line["custom_id"] for line in lines) == sorted(f"r{i}" for i in range(30))
    assert all(line["response"]["status_code"] == 200 for line in lines)
    assert executor.summary.num_transport_retries > 0


def test_an_anthropic_invalid_request_is_a_final_error_line_not_retried(tmp_path, sim):
    bodies = [_message(0), {"model": MODEL, "messages": [{"role": "user", "content": "no max_tokens"}]}]
    executor, lines = _run_executor(tmp_path, _anthropic(sim), "/v1/messages", bodies)
    executor.check()
    by_id = {line["custom_id"]: line for line in lines}
    bad = by_id["r1"]["response"]
    assert bad["status_code"] == 400
    assert bad["body"]["type"] == "error" and bad["body"]["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in bad["body"]["error"]["message"]
    assert error_kind(bad["status_code"], bad["body"]) == ErrorKind.REQUEST  # classified as fatal for the request
    assert by_id["r0"]["response"]["status_code"] == 200
    assert executor.summary.num_transport_retries == 0


def test_a_rejected_anthropic_key_stops_the_run_naming_the_fix(tmp_path, sim):
    executor, lines = _run_executor(tmp_path, _anthropic(sim, "sk-ant-wrong"), "/v1/messages", [_message(0)] * 5)
    with pytest.raises(AuthenticationError, match="ANTHROPIC_API_KEY or --anthropic_api_key") as caught:
        executor.check()
    assert "sk-ant-wrong" not in str(caught.value)
    assert lines == [], "no request is marked failed: the next run (with the right key) sends them"


def test_an_anthropic_account_out_of_credit_stops_the_run(tmp_path, sim):
    sim.config.insufficient_quota = True  # 400 "Your credit balance is too low ..."
    executor, lines = _run_executor(tmp_path, _anthropic(sim), "/v1/messages", [_message(0)] * 3)
    with pytest.raises(QuotaExceededError, match="out of credit.*Anthropic billing page"):
        executor.check()
    assert lines == []


def test_an_unknown_anthropic_model_stops_the_run(tmp_path, sim):
    executor, lines = _run_executor(
        tmp_path, _anthropic(sim), "/v1/messages", [_message(0, model="claude-nonexistent-9")] * 3
    )
    with pytest.raises(ServerRefusedError, match="does not know the model 'claude-nonexistent-9'"):
        executor.check()
    assert lines == []


def test_anthropic_rate_limit_headers_pace_the_calls(tmp_path, sim):
    sim.config.rpm = 120  # a full bucket of 120; the first answer says 119 left, fewer than 200 calls may need
    bodies = [_message(i) for i in range(3)]
    executor, lines = _run_executor(tmp_path, _anthropic(sim), "/v1/messages", bodies, concurrency=200)
    executor.check()
    assert len(lines) == 3
    assert executor.gate.pauses >= 1, "anthropic-ratelimit-requests-remaining/-limit/-reset were read"


def test_an_unreachable_anthropic_server_stops_without_marking_requests(tmp_path):
    factory = direct_transport_factory("anthropic", api_key=KEY, base_url=f"http://127.0.0.1:{_closed_port()}")
    executor, lines = _run_executor(tmp_path, factory, "/v1/messages", [_message(0)] * 3, max_attempts=3)
    with pytest.raises(APIError, match="cannot reach the API server"):
        executor.check()
    assert lines == []


def test_the_anthropic_transport_uses_async_anthropic_without_sdk_retries(sim):
    async def made() -> Any:
        transport = _anthropic(sim)()
        await transport.aclose()
        return transport

    transport = asyncio.run(made())
    assert isinstance(transport, AnthropicDirectTransport)
    assert type(transport.client).__name__ == "AsyncAnthropic" and transport.client.max_retries == 0
    assert transport.route("/v1/messages") == "/v1/messages"


def test_the_anthropic_transport_keeps_a_sync_clients_settings(tmp_path, sim):
    import anthropic

    client = anthropic.Anthropic(
        api_key=KEY, base_url=sim.base_url.removesuffix("/v1"), timeout=9.0, default_headers={"X-Team": "nlp"}
    )
    seen: list[dict[str, str]] = []
    original = sim.handle

    def handle(method, target, headers, body):
        seen.append({k.lower(): v for k, v in dict(headers).items()})
        return original(method, target, headers, body)

    sim.handle = handle
    factory = direct_transport_factory("anthropic", client)
    executor, lines = _run_executor(tmp_path, factory, "/v1/messages", [_message(0)])
    executor.check()
    assert [line["response"]["status_code"] for line in lines] == [200]
    key = seen[0].get("x-api-key") or seen[0].get("authorization", "").removeprefix("Bearer ")
    assert key == KEY and seen[0]["x-team"] == "nlp" and seen[0]["anthropic-version"]


def test_anthropic_needs_a_key(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        direct_transport_factory("anthropic")


def test_gpt_batch_api_imports_without_anthropic_and_says_how_to_install_it():
    code = (
        "import sys; sys.modules['anthropic'] = None\n"  # makes `import anthropic` fail like a missing package
        "import gpt_batch_api, gpt_batch_api.direct, gpt_batch_api.direct_transports as t\n"
        "try:\n    t.direct_transport_factory('anthropic', api_key='k')\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (
        proc.stdout.strip()
        == 'ConfigError Anthropic jobs need the anthropic SDK: pip install "gpt_batch_api[anthropic]"'
    )
