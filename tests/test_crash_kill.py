"""Crash safety of the whole task with real subprocesses and real signals.

A task run is killed (SIGKILL) or interrupted (SIGINT) many times at random moments, and at every named
crash point, then rerun to completion. Afterwards every sample has exactly one output record, the task
state agrees with the output, no local batch was pushed twice, and no stray temp files remain.
"""

from __future__ import annotations

from collections import Counter

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

OPTIONS = {
    "min_batch_requests": 20,
    "max_batch_requests": 60,
    "max_direct_requests": 15,
    "remote_update_interval": 0.5,
}


def pushed_batch_keys(sim: Simulator) -> list[tuple[str, str]]:
    keys = []
    for batch in sim.stats()["batches"]:
        metadata = batch.get("metadata") or {}
        keys.append((metadata.get("gpt_batch_api_task"), metadata.get("gpt_batch_api_batch")))
    return keys


def assert_exactly_once(sim: Simulator) -> None:
    keys = pushed_batch_keys(sim)
    duplicates = [key for key, count in Counter(keys).items() if count > 1]
    assert not duplicates, f"local batches pushed twice: {duplicates}"


@pytest.mark.parametrize(
    "point",
    [
        "push_after_mark",
        "push_after_upload",
        "push_after_create",
        "remote_after_download",
        "process_before_commit",
        "process_after_commit",
        "txn_after_stage",
        "txn_after_journal",
        "txn_mid_apply",
        "txn_before_journal_remove",
        "requester_before_commit",
        "direct_after_result",
    ],
)
def test_crash_at_each_point_then_resume(tmp_path, point):
    options = {**OPTIONS, "force_direct": True} if point.startswith("direct") else OPTIONS
    with Simulator(SimulatorConfig(**FAST_BATCHES)) as sim:
        num = 90
        proc = run_numbers_subprocess(tmp_path, sim.base_url, num, options, env={"GPT_BATCH_API_CRASH_POINT": point})
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 137, f"crash point {point} was never reached:\n{out[-2000:]}"
        finish(tmp_path, sim, num, options)
        assert_complete(tmp_path, num)
        assert_exactly_once(sim)
        assert_no_temp_files(tmp_path)


def test_random_kills_and_interrupts_lose_and_duplicate_nothing(tmp_path):
    # Batches take a few seconds, so that kills land in every phase: generation, push, wait, processing.
    config = SimulatorConfig(validating_s=0.3, in_progress_s=8.0, finalizing_s=0.2, latency_ms=5)
    config.error_line_rate = 0.03
    with Simulator(config) as sim:
        num = 300
        kills, _ = kill_and_interrupt(tmp_path, sim, num, OPTIONS, rounds=14, seed=1234, max_wait_s=1.2)
        finish(tmp_path, sim, num, OPTIONS, chunk=25)
        assert kills >= 3
        assert_complete(tmp_path, num)
        assert_exactly_once(sim)
        assert_no_temp_files(tmp_path)


def test_a_crash_while_wiping_the_task_leaves_the_old_task_whole_and_the_wipe_can_be_run_again(tmp_path):
    """--wipe_task deletes the output in the same commit as the state that forgets it (it used to be a commit of
    its own first: a crash in between left a state that points at deleted output)."""
    with Simulator(SimulatorConfig(**FAST_BATCHES)) as sim:
        num = 40
        finish(tmp_path, sim, num, OPTIONS)
        before = {p.name: p.read_bytes() for p in tmp_path.glob("numbers_output*")}
        assert before
        wipe = {**OPTIONS, "wipe_task": True}
        proc = run_numbers_subprocess(
            tmp_path, sim.base_url, num, wipe, env={"GPT_BATCH_API_CRASH_POINT": "requester_before_commit"}
        )
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 137, f"the wipe never reached its commit:\n{out[-2000:]}"
        calls = len(sim.stats()["batches"]) + sim.stats()["direct_requests"]
        finish(tmp_path, sim, num, OPTIONS)  # no wipe: the task is as it was, complete, and nothing is bought
        assert {p.name: p.read_bytes() for p in tmp_path.glob("numbers_output*")} == before
        assert_complete(tmp_path, num)
        assert len(sim.stats()["batches"]) + sim.stats()["direct_requests"] == calls
        finish(tmp_path, sim, num, wipe)  # the wipe, run again, starts afresh and completes
        assert_complete(tmp_path, num)
        assert len(sim.stats()["batches"]) + sim.stats()["direct_requests"] > calls
        assert_no_temp_files(tmp_path)
