"""Anthropic's Message Batches behind the same engine: the demos end to end, and exactly once across crashes
and lost create answers (Anthropic batches carry no metadata: see docs/DESIGN.md, "Exactly once without
metadata"). Everything runs against the simulator's Anthropic routes with the real ``anthropic`` SDK."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from gpt_batch_api.simulator import Simulator, SimulatorConfig

from .support.helpers import (
    FAST_BATCHES,
    assert_complete,
    assert_no_temp_files,
    finish,
    kill_and_interrupt,
    run_numbers_subprocess,
)

pytest.importorskip("anthropic")

REPO = Path(__file__).resolve().parents[1]
OPTIONS = {
    "provider": "anthropic",
    "min_batch_requests": 1,  # every batch through the Batch API (the direct path has its own tests)
    "max_batch_requests": 30,
    "remote_update_interval": 0.5,
}


def remote_batches_per_local_batch(sim: Simulator) -> Counter[str]:
    """How many Anthropic batches the simulator ever made (deleted ones too) for each local batch (the tag in
    their custom_ids)."""
    with sim.lock:
        created = list(sim.anthropic.batches.created)
    return Counter(first_custom_id.split("_", 1)[0] for _, first_custom_id in created)


def assert_exactly_once(sim: Simulator) -> None:
    counts = remote_batches_per_local_batch(sim)
    assert counts and max(counts.values()) == 1, f"local batches submitted twice: {counts}"


@pytest.mark.parametrize("task, samples", [("utterance_emotion", 45), ("char_codes", 1140)])
def test_demo_completes_on_anthropic_message_batches(tmp_path, task, samples):
    args = [sys.executable, "-m", "gpt_batch_api.task_manager_demo", "--task", task, "--task_dir", str(tmp_path),
            "--provider", "anthropic", "--simulate", "--no_progress", "--min_batch_requests", "1"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    env.pop("ANTHROPIC_API_KEY", None)
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Task complete: {samples} samples succeeded, 0 failed" in proc.stderr, proc.stderr[-3000:]
    assert "Pushed batch 1 as msgbatch_" in proc.stderr  # the Message Batches API, not the direct path
    if task == "char_codes":  # one JSON document: character -> answer
        answered = list(json.loads((tmp_path / "char_codes_output.json").read_text())["chars"])
    else:  # JSON lines, one per utterance
        answered = [json.loads(line)["id"] for line in (tmp_path / f"{task}_output.jsonl").read_text().splitlines()]
    assert len(answered) == len(set(answered)) == samples


@pytest.mark.parametrize(
    "point", ["push_after_mark", "push_after_create", "remote_after_download", "process_after_commit"]
)
def test_crash_at_each_push_point_submits_once(tmp_path, point):
    with Simulator(SimulatorConfig(**FAST_BATCHES)) as sim:
        num = 70
        proc = run_numbers_subprocess(tmp_path, sim.base_url, num, OPTIONS, env={"GPT_BATCH_API_CRASH_POINT": point})
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 137, f"crash point {point} was never reached:\n{out[-2000:]}"
        finish(tmp_path, sim, num, OPTIONS)
        assert_complete(tmp_path, num)
        assert_exactly_once(sim)
        assert_no_temp_files(tmp_path)


def test_lost_create_answers_are_adopted_not_submitted_again(tmp_path):
    with Simulator(SimulatorConfig(**FAST_BATCHES, lose_next_create_responses=3)) as sim:
        num = 90
        out = finish(tmp_path, sim, num, OPTIONS)
        assert_complete(tmp_path, num)
        assert_exactly_once(sim)
        assert sim.config.lose_next_create_responses == 0  # the three answers were lost
        assert out.count("was created despite an error") == 3, out[-3000:]


def test_random_kills_and_interrupts_submit_each_batch_once(tmp_path):
    config = SimulatorConfig(validating_s=0.3, in_progress_s=4.0, finalizing_s=0.2, latency_ms=5)
    config.error_line_rate = 0.03
    options = {**OPTIONS, "max_batch_requests": 25}
    with Simulator(config) as sim:
        num = 200
        kills, interrupts = kill_and_interrupt(tmp_path, sim, num, options, rounds=10, seed=4321, max_wait_s=1.5)
        finish(tmp_path, sim, num, options)
        assert_complete(tmp_path, num)
        assert_exactly_once(sim)
        assert_no_temp_files(tmp_path)
        assert kills >= 4 and interrupts >= 2, (kills, interrupts)


# ------------------------------------------------------------------------------ faults on the Anthropic routes

FAULTS = {
    # 500s, 429s and dropped connections on every Message Batches call (create, list, retrieve, results, delete)
    "batch_routes_500": {"batch_api_faults": True, "http_500_rate": 0.25},
    "batch_routes_429": {"batch_api_faults": True, "http_429_rate": 0.25},
    "batch_routes_dropped": {"batch_api_faults": True, "drop_connection_rate": 0.2},
    # about half of the requests of two batches expire: free retries, nothing lost
    "expired_batches": {"expire_next_batches": 2},
    # errored result lines (overloaded/api errors retried, invalid requests fatal)
    "errored_lines": {"error_line_rate": 0.15},
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_faults_on_anthropic_routes_complete_with_each_batch_submitted_once(tmp_path, fault):
    """Each fault ends in a complete task (rerun once if the run stopped with advice): every sample once,
    no local batch submitted twice."""
    config = SimulatorConfig(**FAST_BATCHES, seed=11)
    for knob, value in FAULTS[fault].items():
        setattr(config, knob, value)
    with Simulator(config) as sim:
        num = 60
        proc = run_numbers_subprocess(tmp_path, sim.base_url, num, OPTIONS)
        out, _ = proc.communicate(timeout=180)
        if proc.returncode != 0:  # a stop with advice: the advice is to rerun the same command
            assert proc.returncode == 1 and "rerun" in out.lower() and "Traceback" not in out, out[-3000:]
            for knob in FAULTS[fault]:
                setattr(sim.config, knob, type(getattr(sim.config, knob))())
            out = finish(tmp_path, sim, num, OPTIONS)
        records = assert_complete(tmp_path, num)
        assert_exactly_once(sim)
        if fault.startswith("batch_routes"):
            assert sim.faults_injected > 0  # the Message Batches calls did meet the fault
        if fault == "expired_batches":
            assert sim.config.expire_next_batches == 0  # two batches expired in part ...
        if fault != "errored_lines":  # ... and their requests were retried for free: nothing failed
            assert all(r.error is None for r in records), [r for r in records if r.error][:3]
        else:
            assert any(r.retry_num > 0 or r.error for r in records)
