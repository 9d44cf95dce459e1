"""Anthropic jobs through the direct path end to end: the demo tasks with ``--provider anthropic --force_direct``
(the direct flow over ``AsyncAnthropic``), on ``--simulate`` and against a simulator killed into."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpt_batch_api.demo_tasks.responder import demo_responder
from gpt_batch_api.demo_tasks.utterance_emotion import load_utterances
from gpt_batch_api.simulator import Simulator, SimulatorConfig

from .test_demo import check_char_codes

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-ant-direct-test"


def _demo_command(task_dir: Path, task: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "gpt_batch_api.task_manager_demo", "--task", task, "--task_dir", str(task_dir),
        "--no_progress", "--no_wandb", "--provider", "anthropic", "--force_direct", *extra,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    env.pop("ANTHROPIC_API_KEY", None)
    return env


def _check_utterances(task_dir: Path) -> None:
    records = [json.loads(line) for line in (task_dir / "utterance_emotion_output.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(u["id"] for u in load_utterances()), "every sample once"


@pytest.mark.parametrize("task", ["char_codes", "utterance_emotion"])
def test_demo_completes_with_provider_anthropic_force_direct_simulate(tmp_path, task):
    task_dir = tmp_path / task
    proc = subprocess.run(
        _demo_command(task_dir, task, "--simulate"), env=_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Task complete" in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads((task_dir / f"{task}_task.json").read_text())["meta"]["model"].startswith("claude")
    if task == "char_codes":
        check_char_codes(task_dir)
    else:
        _check_utterances(task_dir)


def test_killed_anthropic_direct_runs_resume_with_every_sample_once(tmp_path):
    config = SimulatorConfig(require_api_key=KEY, latency_ms=20, http_529_rate=0.05)
    with Simulator(config, responder=demo_responder) as sim:
        task_dir = tmp_path / "killed"
        command = _demo_command(task_dir, "char_codes", "--client_base_url", sim.base_url, "--anthropic_api_key", KEY)
        kills = 0
        for delay in (1.5, 2.5, 2.0):
            proc = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            time.sleep(delay)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait(timeout=30)
        assert kills >= 2, "the run ended before it could be killed: make it longer"
        final = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
        assert final.returncode == 0, final.stderr[-3000:]
        check_char_codes(task_dir)
        calls = sim.anthropic.direct_requests
    # Each kill re-buys at most the calls in flight (16); the rest are first answers, 529s and wrong-answer retries.
    assert calls <= 1140 * 1.25 + kills * 16, calls
