"""The demo through LiteLLM's proxy (software we did not write) in front of the simulator, in both modes, and
the three faults a gateway changes: quota, wrong key, enqueued-token limit.

Runs only when ``GPT_BATCH_API_LITELLM`` names the proxy's ``litellm`` executable (``.ci/gateway.sh`` installs
it in a throwaway venv and sets it; the proxy is never a dependency of ours). Set but not startable: the tests
fail, they do not skip.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpt_batch_api.demo_tasks.responder import demo_responder
from gpt_batch_api.simulator import Simulator, SimulatorConfig

REPO = Path(__file__).resolve().parents[1]
LITELLM = os.environ.get("GPT_BATCH_API_LITELLM")
GATEWAY_KEY = "sk-gateway-ci"  # the gateway's own (master) key: what our client sends
UPSTREAM_KEY = "sk-upstream-ci"  # what the gateway sends to the simulator

pytestmark = pytest.mark.skipif(not LITELLM, reason="GPT_BATCH_API_LITELLM is not set (.ci/gateway.sh sets it)")

CONFIG = """\
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {model: openai/gpt-4o-mini, api_base: os.environ/UPSTREAM_BASE, api_key: os.environ/UPSTREAM_KEY}
  - model_name: text-embedding-3-small
    litellm_params:
      model: openai/text-embedding-3-small
      api_base: os.environ/UPSTREAM_BASE
      api_key: os.environ/UPSTREAM_KEY
files_settings:
  - {custom_llm_provider: openai, api_base: os.environ/UPSTREAM_BASE, api_key: os.environ/UPSTREAM_KEY}
general_settings:
  master_key: os.environ/GATEWAY_MASTER_KEY
litellm_settings:
  num_retries: 0  # gpt_batch_api retries itself: the gateway's retries would multiply the calls (README)
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(validating_s=0.1, in_progress_s=0.4, finalizing_s=0.1, require_api_key=UPSTREAM_KEY)
    with Simulator(config, responder=demo_responder) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def gateway(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The proxy's base URL (``.../v1``), forwarding to ``sim``."""
    assert LITELLM and Path(LITELLM).exists(), f"GPT_BATCH_API_LITELLM={LITELLM!r} is not an executable"
    workdir = tmp_path_factory.mktemp("gateway")
    (workdir / "config.yaml").write_text(CONFIG)
    port = _free_port()
    env = {
        **os.environ,
        "UPSTREAM_BASE": sim.base_url,
        "UPSTREAM_KEY": UPSTREAM_KEY,
        "OPENAI_API_BASE": sim.base_url,  # /v1/batches goes to the provider named in the request: openai
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "GATEWAY_MASTER_KEY": GATEWAY_KEY,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the price list
        "LITELLM_TELEMETRY": "False",
    }
    log_path = workdir / "litellm.log"
    with open(log_path, "wb") as log_file:
        proxy = subprocess.Popen(
            [LITELLM, "--config", "config.yaml", "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/liveliness", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if proxy.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"LiteLLM's proxy did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proxy.terminate()
        try:
            proxy.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proxy.kill()


@pytest.fixture(autouse=True)
def healthy(sim: Simulator) -> Iterator[None]:
    """Each test starts (and leaves) the simulator without faults."""
    sim.config.insufficient_quota = False
    sim.config.enqueued_token_limit = 0
    yield
    sim.config.insufficient_quota = False
    sim.config.enqueued_token_limit = 0
    sim.config.in_progress_s = 0.4


def demo(task_dir: Path, gateway: str, *args: str, key: str = GATEWAY_KEY, timeout: float = 240) -> tuple:
    cmd = [sys.executable, "-m", "gpt_batch_api.task_manager_demo", "--task_dir", str(task_dir), "--no_progress",
           "--no_wandb", "--client_base_url", gateway, "--openai_api_key", key, *args]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    started = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    return proc, time.monotonic() - started


def state_of(task_dir: Path, task: str) -> dict:
    import json

    return json.loads((task_dir / f"{task}_task.json").read_text())


MODES = {"batch": [], "direct": ["--force_direct"]}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("task", ["char_codes", "utterance_emotion"])
def test_demo_completes_through_the_gateway(tmp_path, gateway, task, mode):
    proc, _ = demo(tmp_path, gateway, "--task", task, "--min_batch_requests", "1", *MODES[mode])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Task complete:" in proc.stderr and " 0 failed" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize("mode", MODES)
def test_quota_through_the_gateway_stops_within_10_s_with_the_quota_message(tmp_path, sim, gateway, mode):
    sim.config.insufficient_quota = True
    proc, seconds = demo(tmp_path, gateway, "--task", "char_codes", *MODES[mode], timeout=60)
    assert proc.returncode != 0
    assert "out of credit" in proc.stderr, proc.stderr[-2000:]
    assert seconds < 10, f"stopped after {seconds:.1f} s"


@pytest.mark.parametrize("mode", MODES)
def test_wrong_key_through_the_gateway_marks_no_sample_failed(tmp_path, gateway, mode):
    proc, _ = demo(tmp_path, gateway, "--task", "char_codes", *MODES[mode], key="sk-not-the-gateway-key")
    assert proc.returncode != 0
    assert "API key was rejected" in proc.stderr, proc.stderr[-2000:]
    state = tmp_path / "char_codes_task.json"
    if state.exists():
        assert state_of(tmp_path, "char_codes").get("failed_samples", {}) == {}
    fixed, _ = demo(tmp_path, gateway, "--task", "char_codes", "--min_batch_requests", "1", *MODES[mode])
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert " 0 failed" in fixed.stderr, fixed.stderr[-2000:]


def test_token_limit_through_the_gateway_creates_at_most_twice_the_batches_needed(tmp_path, sim, gateway):
    before = len(sim.stats()["batches"])
    per_batch = 100  # the demo has 1,140 requests: about 12 batches
    sim.config.enqueued_token_limit = 2 * per_batch * 160  # about two batches (a char_codes request: ~150 tokens)
    sim.config.in_progress_s = 2.0  # long enough for the pushes to overlap
    proc, _ = demo(tmp_path, gateway, "--task", "char_codes", "--min_batch_requests", "1", "--max_batch_requests",
                   str(per_batch), "--remote_update_interval", "0.3")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    batches = sim.stats()["batches"][before:]
    refused = [b for b in batches if b["status"] == "failed"]
    assert refused and all(b["errors"]["data"][0]["code"] == "token_limit_exceeded" for b in refused), (
        f"the limit was not reached: the case tests nothing\n{proc.stderr[-3000:]}"
    )
    needed = len(batches) - len(refused)  # the batches that ran: the task's 5 and those of its retries
    assert len(batches) <= 2 * needed, f"{len(batches)} batches created for {needed} needed\n{proc.stderr[-5000:]}"


@pytest.mark.parametrize("mode", MODES)
def test_model_typo_through_the_gateway_names_the_model_and_fails_no_sample(tmp_path, gateway, mode):
    proc, _ = demo(tmp_path, gateway, "--task", "char_codes", "--model", "gpt-4o-minii", *MODES[mode])
    assert proc.returncode != 0
    assert "gpt-4o-minii" in proc.stderr and "model" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    if (tmp_path / "char_codes_task.json").exists():
        assert state_of(tmp_path, "char_codes").get("failed_samples", {}) == {}
