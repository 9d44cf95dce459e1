"""The README's local-server commands run against the simulator posing as vLLM and as Ollama
(``--server_kind``): direct endpoints and /v1/models only, their own 404 pages and error shapes, no
rate-limit headers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from gpt_batch_api.demo_tasks.char_codes import CHARACTERS

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}


@pytest.fixture(scope="module", params=["vllm", "ollama"])
def local_server(request) -> Iterator[tuple[str, str]]:
    """``(kind, base URL without /v1)`` of a simulator started from the shell as the README says."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "gpt_batch_api.simulator", "--port", str(port), "--demo_answers",
         "--server_kind", request.param],
        env=ENV, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert "serving at" in (server.stdout.readline() if server.stdout else "")
        yield request.param, f"http://127.0.0.1:{port}"
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=20) == 0


def demo(task_dir: Path, base_url: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "gpt_batch_api.task_manager_demo", "--task", "char_codes", "--task_dir",
           str(task_dir), "--no_progress", "--no_wandb", "--client_base_url", base_url,
           "--openai_api_key", "sk-local", *args]  # fmt: skip
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=180)


def test_local_server_has_only_the_direct_api(local_server):
    kind, base = local_server
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="sk-local", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}]
    )
    assert raw.parse().choices[0].message.content
    assert not [h for h in raw.headers if h.lower().startswith("x-ratelimit")], "local servers send no rate limits"
    assert "gpt-4o-mini" in [m.id for m in client.models.list()]
    with pytest.raises(openai.NotFoundError):
        client.batches.list()
    with pytest.raises(openai.NotFoundError):
        client.files.list()
    with pytest.raises(openai.NotFoundError):  # /v1 only: the same route without it does not exist
        openai.OpenAI(base_url=base, api_key="sk-local", max_retries=0).models.list()


def test_readme_local_server_commands(local_server, tmp_path):
    kind, base = local_server
    task_dir = tmp_path / kind
    task_dir.mkdir()
    refused = demo(task_dir, f"{base}/v1")
    assert refused.returncode != 0
    assert "no Files/Batches API" in refused.stderr and "--force_direct" in refused.stderr, refused.stderr[-2000:]
    done = demo(task_dir, f"{base}/v1", "--force_direct")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{len(CHARACTERS)} samples succeeded, 0 failed" in done.stderr
