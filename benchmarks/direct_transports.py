"""CPU per direct call of each transport, the flow alone (no task): the simulator at 0 ms latency in its own
process, ``--requests`` calls through a ``DirectExecutor`` at concurrency 16, journaled like a run does.

Transports: ``openai`` (a plain ``openai.OpenAI`` client: one aiohttp session), ``openai-sdk`` (the same
settings through ``AsyncOpenAI.post``, what ``make_async_client=`` uses) and ``anthropic``
(``AsyncAnthropic``, Messages bodies). Prints a table, then a JSON line.

    python benchmarks/direct_transports.py --requests 3000
"""

from __future__ import annotations

import argparse
import io
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import openai
from _common import print_json, simulator_process

from gpt_batch_api.direct import DirectExecutor
from gpt_batch_api.direct_transports import async_client_like, direct_transport_factory

CHAT = {"model": "gpt-4o-mini", "max_completion_tokens": 16}
MESSAGES = {"model": "claude-haiku-4-5", "max_tokens": 16}


def _make(kind: str, base_url: str) -> tuple[Any, str, dict[str, Any]]:
    client = openai.OpenAI(api_key="sk-bench", base_url=base_url)
    if kind == "openai":
        return direct_transport_factory("openai", client), "/v1/chat/completions", CHAT
    if kind == "openai-sdk":
        factory = direct_transport_factory("openai", make_async_client=lambda: async_client_like(client))
        return factory, "/v1/chat/completions", CHAT
    factory = direct_transport_factory("anthropic", api_key="sk-bench", base_url=base_url.removesuffix("/v1"))
    return factory, "/v1/messages", MESSAGES


def run(kind: str, requests: int, concurrency: int) -> dict[str, Any]:
    with simulator_process("--latency_ms", "0") as base_url, tempfile.TemporaryDirectory() as folder:
        factory, endpoint, base = _make(kind, base_url)
        bodies = [(f"r{i}", {**base, "messages": [{"role": "user", "content": f"Say {i}."}]}) for i in range(requests)]
        executor = DirectExecutor(factory, concurrency=concurrency)
        executor.submit(0, Path(folder) / "warm.jsonl", endpoint, bodies[:concurrency])  # connections, imports
        while not executor.completed():
            executor.wait(0.1)
        w0, c0 = time.perf_counter(), time.process_time()
        executor.submit(1, Path(folder) / "journal.jsonl", endpoint, bodies)
        while not executor.completed():
            executor.wait(0.1)
            executor.check()
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        executor.close()
        assert executor.summary.num_ok == requests + concurrency, executor.summary
    return {"transport": kind, "requests": requests, "wall_s": wall, "cpu_us_per_call": cpu / requests * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--transports", nargs="+", default=["openai", "openai-sdk", "anthropic"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=io.StringIO())
    rows = [run(kind, args.requests, args.concurrency) for kind in args.transports]
    print(f"{'transport':<12}{'requests':>10}{'calls/s':>10}{'CPU us/call':>13}")
    for row in rows:
        rate = row["requests"] / row["wall_s"]
        print(f"{row['transport']:<12}{row['requests']:>10,}{rate:>10.0f}{row['cpu_us_per_call']:>13.0f}")
    print_json({"benchmark": "direct_transports", "runs": rows})


if __name__ == "__main__":
    main()
