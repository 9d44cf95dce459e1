"""``--exact_input_tokens``: Anthropic's free count_tokens endpoint replaces the offline estimate of each new
request, so the queue, the caps and the predicted costs use the tokens the provider will bill; a request that
cannot be counted keeps its (high-side) estimate and the run goes on. Real subprocesses, the real ``anthropic``
SDK, the simulator's count_tokens route."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpt_batch_api.simulator import Simulator, SimulatorConfig

from .support.helpers import FAST_BATCHES, assert_complete, finish, run_numbers_subprocess, wait_until_running

anthropic = pytest.importorskip("anthropic")

REPO = Path(__file__).resolve().parents[1]
OPTIONS = {"provider": "anthropic", "min_batch_requests": 1, "max_batch_requests": 30, "remote_update_interval": 0.5}


def totals(task_dir: Path) -> dict:
    return json.loads((task_dir / "numbers_state.json").read_text())["totals"]


def test_exact_counts_make_the_prediction_equal_the_billed_input_tokens(tmp_path):
    num = 70
    with Simulator(SimulatorConfig(**FAST_BATCHES)) as sim:
        out = finish(tmp_path / "exact", sim, num, {**OPTIONS, "exact_input_tokens": True})
        calls = sim.stats()["count_token_calls"]
        finish(tmp_path / "estimated", sim, num, OPTIONS)
        assert sim.stats()["count_token_calls"] == calls, "counted without --exact_input_tokens"
    assert calls == num  # one call per request, none for a retry or a second commit
    assert_complete(tmp_path / "exact", num)
    exact, estimated = totals(tmp_path / "exact"), totals(tmp_path / "estimated")
    assert exact["prompt_tokens"] == estimated["prompt_tokens"] > 0  # the same requests, billed alike
    assert exact["pushed_tokens"] == exact["prompt_tokens"]  # predicted = billed
    assert estimated["pushed_tokens"] > estimated["prompt_tokens"]  # the offline estimate errs on the high side
    assert exact["pushed_cost"] < estimated["pushed_cost"]
    assert f"Counted the input tokens of {num} requests exactly" not in out  # committed in several pools
    assert "Counted the input tokens of" in out and "the offline estimate was" in out


def test_uncountable_requests_keep_their_estimate_and_the_run_goes_on(tmp_path):
    num = 20
    with Simulator(SimulatorConfig(**FAST_BATCHES)) as sim:
        sim.config.http_500_rate = 1.0  # every direct-style call fails, count_tokens included (batches do not)
        out = finish(tmp_path, sim, num, {**OPTIONS, "exact_input_tokens": True})
        assert sim.stats()["count_token_calls"] >= num * 3  # the SDK retried each count twice
    assert_complete(tmp_path, num)
    assert "Could not count the input tokens of" in out and "HTTP 500" in out
    state = totals(tmp_path)
    assert state["pushed_tokens"] > state["prompt_tokens"]  # estimates were kept: caps stay on the high side


def test_a_rejected_key_stops_the_count_and_names_the_fix(tmp_path):
    with Simulator(SimulatorConfig(**FAST_BATCHES, require_api_key="sk-ant-right")) as sim:
        options = {**OPTIONS, "exact_input_tokens": True, "anthropic_api_key": "sk-ant-wrong"}
        proc = run_numbers_subprocess(tmp_path, sim.base_url, 5, options)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode != 0
        assert "the API key was rejected" in out and "ANTHROPIC_API_KEY or --anthropic_api_key" in out, out[-2000:]
        assert "sk-ant-wrong" not in out
        # The advised fix: the right key, then the same command.
        finish(tmp_path, sim, 5, {**options, "anthropic_api_key": "sk-ant-right"})
    assert_complete(tmp_path, 5)


def test_exact_counts_on_openai_are_refused_with_the_fix(tmp_path):
    demo = [sys.executable, "-m", "gpt_batch_api.task_manager_demo", "--task", "utterance_emotion", "--simulate",
            "--task_dir", str(tmp_path), "--no_progress"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    refused = subprocess.run([*demo, "--exact_input_tokens"], env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1, refused.stderr[-2000:]
    assert "--exact_input_tokens needs --provider anthropic" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not list(tmp_path.glob("*_state.json"))  # nothing written
    fixed = subprocess.run(demo, env=env, capture_output=True, text=True, timeout=300)  # the advice: without it
    assert fixed.returncode == 0, fixed.stderr[-2000:]


def test_a_dry_run_counts_nothing(tmp_path):
    with Simulator(SimulatorConfig(**FAST_BATCHES)) as sim:
        options = {**OPTIONS, "exact_input_tokens": True, "dryrun": True}
        proc = run_numbers_subprocess(tmp_path, sim.base_url, 10, options)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 3, out[-2000:]  # the numbers task: not complete (a dry run does nothing)
        assert "Dry run: would make Batch API batch 1: 10 requests" in out
        assert sim.stats()["count_token_calls"] == 0


def test_an_implausibly_low_count_keeps_the_estimate(caplog):
    """A gateway that answers count_tokens with 0 must not open the caps: such counts are not believed."""
    from gpt_batch_api.backends import TokenCounts
    from gpt_batch_api.costs import TokenCoster
    from gpt_batch_api.exact_tokens import count_exactly
    from gpt_batch_api.request import CachedGPTRequest, GPTRequest, GPTRequestInfo, GPTRequestItem

    class ZeroCounter:  # the seam's test double: what such a gateway's backend would return
        def count_input_tokens(self, bodies, concurrency, stop_check):
            return TokenCounts(counts=[0, 95])

    coster = TokenCoster(1.0, 0.1, 0.5, 5.0, 2.5)
    cached = [
        CachedGPTRequest(
            item=GPTRequestItem(id=i, req=GPTRequest(payload={})),
            info=GPTRequestInfo(100, 100, 10, 1e-4 + 2.5e-5, 1e-4 + 5e-5),
            line=b'{"custom_id": "x", "body": {"model": "m"}}\n',
        )
        for i in range(2)
    ]
    count_exactly(ZeroCounter(), cached, coster)
    assert [c.info.tokens_input for c in cached] == [100, 95]  # 0 refused, 95 believed
    assert cached[1].info.cost_batch == pytest.approx(95 * 0.5 / 1e6 + 10 * 2.5 / 1e6)  # output: 10 tokens
    assert cached[1].info.cost_direct == pytest.approx(95 * 1.0 / 1e6 + 10 * 5.0 / 1e6)
    assert cached[0].info.cost_batch == pytest.approx(1e-4 + 2.5e-5)  # the refused count changed nothing
    assert "an implausible count of 0 for an estimate of 100" in caplog.text


def test_ctrl_c_while_counting_stops_at_once_and_commits_nothing(tmp_path):
    with Simulator(SimulatorConfig(**FAST_BATCHES, latency_ms=400)) as sim:  # 70 counts, 8 at a time: ~4 s
        options = {**OPTIONS, "exact_input_tokens": True}
        proc = run_numbers_subprocess(tmp_path, sim.base_url, 70, options)
        assert wait_until_running(tmp_path, "numbers", proc)
        deadline = time.monotonic() + 30
        while sim.stats()["count_token_calls"] < 8 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130, out[-3000:]
        assert time.monotonic() - started < 3.0, "the stop waited for the counts in flight"
        assert "Traceback" not in out, out[-3000:]
        assert json.loads((tmp_path / "numbers_state.json").read_text())["queue"]["num_requests"] == 0
        assert not sim.stats()["batches"]
        sim.config.latency_ms = 0
        finish(tmp_path, sim, 70, options)
    assert_complete(tmp_path, 70)


def test_a_backend_that_cannot_count_names_the_fix_and_the_fix_commits(tmp_path):
    """A custom batch backend (here the in-memory one) without count_tokens: the commit stops before anything is
    queued and names the option to drop; the same requests without it are queued."""
    from gpt_batch_api import GPTRequest, GPTRequester
    from gpt_batch_api.backends.memory import InMemoryBatchBackend
    from gpt_batch_api.errors import ConfigError

    payload = {"model": "claude-haiku-4-5", "max_tokens": 20, "messages": [{"role": "user", "content": "Hi"}]}
    options = {"provider": "anthropic", "anthropic_api_key": "sk-ant-test", "client_base_url": "http://127.0.0.1:9"}
    with GPTRequester(tmp_path, "t", backend=InMemoryBatchBackend(), exact_input_tokens=True, **options) as gr:
        gr.add_request(GPTRequest(payload))
        with pytest.raises(ConfigError, match="memory backend cannot count input tokens: run without --exact_input_"):
            with gr.commit_requests():
                pass
        assert gr.S.queue.num_requests == 0
    with GPTRequester(tmp_path, "t", backend=InMemoryBatchBackend(), **options) as gr:
        gr.add_request(GPTRequest(payload))
        with gr.commit_requests():
            pass
        assert gr.S.queue.num_requests == 1
