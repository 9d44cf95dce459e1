"""The direct API's async client: derived from the sync client's settings, and failures named by their cause."""

from __future__ import annotations

import asyncio
import socket
import threading

import openai
import pytest

from gpt_batch_api.backends.openai_errors import describe_connection_error
from gpt_batch_api.direct import async_client_like
from gpt_batch_api.errors import ConfigError
from gpt_batch_api.simulator import Simulator, SimulatorConfig

from .support.helpers import OneShotProxy
from .support.numbers_task import NumbersTask


def _failure_of(base_url: str, timeout: float) -> Exception:
    """The SDK's exception for one direct call to ``base_url`` through the async client we would use."""
    sync = openai.OpenAI(api_key="sk-test", base_url=base_url, timeout=timeout)

    async def call() -> Exception:
        client = async_client_like(sync)
        try:
            await client.post("/chat/completions", body={}, cast_to=dict)
        except openai.APIConnectionError as exc:
            return exc
        finally:
            await client.close()
        raise AssertionError("the call was answered")

    return asyncio.run(call())


_ACCEPTED: list[socket.socket] = []  # kept open: a collected socket would close and reset the connection


def _silent_server() -> tuple[socket.socket, int]:
    """Accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    threading.Thread(target=lambda: _ACCEPTED.append(server.accept()[0]), daemon=True).start()
    return server, server.getsockname()[1]


def test_a_refused_connection_is_a_connection_error_not_a_timeout():
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, message = describe_connection_error(_failure_of(f"http://127.0.0.1:{port}/v1", 5.0))
    assert code == "connection_error"
    assert "ConnectionRefusedError" in message or "Connect" in message
    assert "timed out" not in message.lower(), message  # the SDK's aiohttp transport says so; the cause decides


def test_a_server_that_never_answers_is_a_timeout():
    server, port = _silent_server()
    with server:
        code, message = describe_connection_error(_failure_of(f"http://127.0.0.1:{port}/v1", 0.3))
    assert code == "timeout"
    assert "imeout" in message


def test_async_client_keeps_the_sync_clients_settings():
    sync = openai.OpenAI(
        api_key="sk-test", organization="org-1", project="proj-1", base_url="http://127.0.0.1:9/v1", timeout=7.5,
        default_headers={"X-Team": "nlp"}, default_query={"tier": "a"},
    )  # fmt: skip
    twin = async_client_like(sync)
    try:
        assert isinstance(twin, openai.AsyncOpenAI)
        assert (twin.api_key, twin.organization, twin.project) == ("sk-test", "org-1", "proj-1")
        assert str(twin.base_url) == str(sync.base_url)
        assert twin.timeout == 7.5
        assert twin.max_retries == 0, "retries are ours (direct.py), not the SDK's"
        assert twin.default_headers["X-Team"] == "nlp"
        assert twin.default_query == {"tier": "a"}
    finally:
        asyncio.run(twin.close())


def test_a_client_we_cannot_copy_asks_for_make_async_client(tmp_path):
    class TeamClient(openai.OpenAI):  # e.g. a subclass with its own auth: copying its settings could be wrong
        pass

    with Simulator(SimulatorConfig()) as sim:
        client = TeamClient(api_key="sk-test", base_url=sim.base_url)
        task = NumbersTask(str(tmp_path), 3, wandb=False, progress=False, force_direct=True, client=client)
        with pytest.raises(ConfigError, match="make_async_client="):
            task.run()
        made: list[openai.AsyncOpenAI] = []

        def make() -> openai.AsyncOpenAI:
            made.append(openai.AsyncOpenAI(api_key="sk-test", base_url=sim.base_url))
            return made[-1]

        task = NumbersTask(
            str(tmp_path), 3, wandb=False, progress=False, force_direct=True, client=client, make_async_client=make
        )
        assert task.run() is True
        assert sim.direct_requests == 3 and len(made) == 1
        assert made[0].is_closed(), "the client is made on the executor's event loop and closed with it"


def test_direct_calls_go_through_the_proxy_of_the_environment(monkeypatch):
    # Clusters reach the API through HTTP(S)_PROXY: the async transport must honour it like the sync one.
    sync = openai.OpenAI(api_key="sk-test", base_url="http://api.example.invalid/v1", timeout=5.0)

    async def call() -> None:
        client = async_client_like(sync)
        try:
            await client.post("/chat/completions", body={}, cast_to=dict)
        finally:
            await client.close()

    with OneShotProxy(monkeypatch) as proxy:
        asyncio.run(call())
    assert proxy.seen == [b"POST http://api.example.invalid/v1/chat/completions HTTP/1.1"]
