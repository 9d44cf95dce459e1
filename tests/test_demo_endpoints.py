"""The demo runs on every endpoint it offers (``--chat_endpoint``), in both modes, and refuses others in one
line. It used to stop at once on /v1/responses: its payload carried chat fields the endpoint does not take."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpt_batch_api.demo_tasks.utterance_emotion import load_utterances
from gpt_batch_api.simulator import Simulator, SimulatorConfig

from .test_demo import check_char_codes, demo

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sim():
    from gpt_batch_api.demo_tasks.responder import demo_responder

    config = SimulatorConfig(validating_s=0.05, in_progress_s=0.2, finalizing_s=0.05)
    with Simulator(config, responder=demo_responder) as simulator:
        yield simulator


@pytest.mark.parametrize("mode", [[], ["--force_direct"]], ids=["batch", "direct"])
def test_demos_run_on_the_responses_endpoint(tmp_path, sim, mode):
    common = ["--no_wandb", "--min_batch_requests", "1", "--chat_endpoint", "/v1/responses", *mode]
    chars = demo(tmp_path / "chars", "--task", "char_codes", *common, sim=sim)
    assert chars.returncode == 0, chars.stderr[-3000:]
    check_char_codes(tmp_path / "chars")
    emotions = demo(tmp_path / "emotions", "--task", "utterance_emotion", *common, sim=sim)
    assert emotions.returncode == 0, emotions.stderr[-3000:]
    lines = (tmp_path / "emotions" / "utterance_emotion_output.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == sorted(u["id"] for u in load_utterances())


def test_demo_refuses_an_endpoint_it_does_not_offer_in_one_line(tmp_path):
    cmd = [sys.executable, "-m", "gpt_batch_api.task_manager_demo", "--task", "char_codes", "--task_dir",
           str(tmp_path), "--simulate", "--chat_endpoint", "/v1/embeddings"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--chat_endpoint" in proc.stderr and "/v1/responses" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("fix", ["same_endpoint", "wipe_requests"])
def test_pending_requests_of_another_endpoint_are_refused_and_both_fixes_work(tmp_path, sim, fix):
    task_dir = tmp_path / "chars"
    common = ["--task", "char_codes", "--no_wandb", "--min_batch_requests", "1"]
    cmd = [sys.executable, "-m", "gpt_batch_api.task_manager_demo", "--task_dir", str(task_dir), "--no_progress",
           *common, "--client_base_url", sim.base_url, "--openai_api_key", "sk-demo-test"]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "WANDB_MODE": "disabled",
        "GPT_BATCH_API_CRASH_POINT": "push_after_mark",
    }
    assert subprocess.run(cmd, env=env, capture_output=True, timeout=120).returncode == 137  # requests pending
    refused = demo(task_dir, *common, "--chat_endpoint", "/v1/responses", sim=sim)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    assert "pending requests are for /v1/chat/completions, not /v1/responses" in refused.stderr
    if fix == "same_endpoint":
        fixed = demo(task_dir, *common, sim=sim)
    else:
        fixed = demo(task_dir, *common, "--chat_endpoint", "/v1/responses", "--wipe_requests", sim=sim)
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    check_char_codes(task_dir)
