"""The demo task (its real CLI) killed and interrupted at random moments, then run to completion.

Both paths: remote batches (with a direct remainder) and --force_direct. Mild faults are injected on the
way (error lines, an expired batch, 5xx, 429 and dropped connections on direct calls). Afterwards nothing
is lost, duplicated, pushed twice or answered twice, and the output equals an uninterrupted run's.
"""

from __future__ import annotations

import random

import pytest

from gpt_batch_api.simulator import Simulator

from . import Ledger, TaskSpec, audit, finish, kill_loop, simulator_config

PATHS = {
    "batch": {"min_batch_requests": 20, "max_batch_requests": 30, "max_direct_requests": 10},
    "direct": {"force_direct": True, "max_direct_requests": 25, "direct_concurrency": 3},
}
COMMON = {"remote_update_interval": 0.5, "max_retries": 6, "max_pass_failures": 10}


def reference_values(spec: TaskSpec, tmp_path, seed: int) -> dict:
    ledger = Ledger()
    with Simulator(simulator_config(seed), responder=ledger) as sim:
        finish(spec, tmp_path / "reference", sim.base_url)
        return audit(spec, tmp_path / "reference", sim).values


@pytest.mark.parametrize("path", sorted(PATHS))
def test_demo_survives_random_kills_and_interrupts(tmp_path, path):
    seed = 11 if path == "batch" else 12
    spec = TaskSpec("char_codes", options={**COMMON, **PATHS[path]})
    task_dir = tmp_path / "task"
    ledger = Ledger()
    rng = random.Random(seed)
    with Simulator(simulator_config(seed), responder=ledger) as sim:

        def on_round(round_num: int) -> None:
            if round_num == 2:
                sim.config.expire_next_batches = 1  # one batch comes back expired with half of its lines

        loop = kill_loop(spec, task_dir, sim.base_url, rng, kills=5, interrupts=2, on_round=on_round)
        assert not loop.bad_exits, loop.bad_exits[0]
        finish(spec, task_dir, sim.base_url)
        result = audit(spec, task_dir, sim)
        details: list[str] = []
        in_flight, twice = ledger.extra_answers(spec.expected_answers(), loop.kill_times, details)
    assert loop.kills + loop.interrupts >= 5, "the run finished before it could be interrupted enough"
    assert (result.lost, result.duplicated, result.failed) == (0, 0, 0)
    assert not result.state_problems, result.state_problems
    assert result.double_pushed == 0
    assert twice == 0, f"{twice} answers were paid for twice without a kill to explain it: {details}, " + "\n".join(
        loop.outputs
    )
    assert not result.stray_files, result.stray_files
    assert result.values == reference_values(spec, tmp_path, seed)
