"""End to end through TaskManager + GPTRequester against the simulator over real HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpt_batch_api.simulator import Simulator, SimulatorConfig

from .support.helpers import FAST_BATCHES, assert_complete, read_task_state
from .support.numbers_task import NumbersTask


@pytest.fixture()
def sim():
    with Simulator(SimulatorConfig(**FAST_BATCHES)) as simulator:
        yield simulator


def make_task(task_dir: Path, sim: Simulator, num: int, **options) -> NumbersTask:
    base = {"wandb": False, "progress": False, "client_base_url": sim.base_url, "openai_api_key": "sk-test"}
    base.update(options)
    return NumbersTask(str(task_dir), num, **base)


def test_batch_mode_cuts_pushes_and_processes_every_sample(tmp_path, sim):
    task = make_task(tmp_path, sim, 250, min_batch_requests=10, max_batch_requests=100, chunk=40)
    assert task.run() is True
    assert_complete(tmp_path, 250)
    state = json.loads((tmp_path / "numbers_state.json").read_text())
    assert state["batches"] == [] and state["queue"]["num_requests"] == 0
    assert state["totals"]["pushed_batches"] == 3 and state["totals"]["direct_batches"] == 0
    assert state["totals"]["prompt_tokens"] > 0 and state["totals"]["true_cost_batch"] > 0
    leftovers = sorted(p.name for p in tmp_path.iterdir() if "_batch_" in p.name or "_queue_" in p.name)
    assert all(name.startswith("numbers_queue_") for name in leftovers), leftovers
    assert sim.stats()["files"] == 0 or isinstance(sim.stats()["files"], int)


def test_force_direct_runs_everything_through_the_direct_api(tmp_path, sim):
    task = make_task(tmp_path, sim, 120, force_direct=True, max_direct_requests=50)
    assert task.run() is True
    assert_complete(tmp_path, 120)
    state = json.loads((tmp_path / "numbers_state.json").read_text())
    assert state["totals"]["pushed_batches"] == 0 and state["totals"]["direct_batches"] == 3
    assert state["totals"]["true_cost_direct"] > 0


def test_small_remainder_goes_direct(tmp_path, sim):
    task = make_task(tmp_path, sim, 230, min_batch_requests=50, max_batch_requests=100)
    assert task.run() is True
    assert_complete(tmp_path, 230)
    totals = json.loads((tmp_path / "numbers_state.json").read_text())["totals"]
    assert totals["pushed_batches"] == 2 and totals["direct_batches"] == 1


def test_rejected_answers_are_retried_with_new_ids(tmp_path, sim):
    task = make_task(tmp_path, sim, 60, reject_every=5, min_batch_requests=1, max_batch_requests=100)
    assert task.run() is True
    records = assert_complete(tmp_path, 60)
    retried = {r.sample for r in records if r.retry_num == 1}
    assert retried == {f"s{i:06d}" for i in range(0, 60, 5)}
    state = json.loads((tmp_path / "numbers_state.json").read_text())
    assert state["totals"]["retried"] == 12
    assert state["next_request_id"] == 60 + 12 + 1


def test_dry_run_on_a_fresh_task_creates_nothing(tmp_path, sim):
    task_dir = tmp_path / "never"
    task = make_task(task_dir, sim, 30, dryrun=True, min_batch_requests=1)
    assert task.run() is False
    assert not task_dir.exists()
    assert sim.stats()["direct_requests"] == 0


def test_no_run_reports_status_without_running(tmp_path, sim, capsys):
    task = make_task(tmp_path, sim, 10, run=False)
    task.run()
    out = capsys.readouterr().out
    assert "samples: 0 committed" in out and "queue: 0 requests" in out
    assert read_task_state(tmp_path)["meta"]["num_samples"] == 10


def test_wipe_task_starts_afresh(tmp_path, sim):
    assert make_task(tmp_path, sim, 20, force_direct=True).run() is True
    task = make_task(tmp_path, sim, 20, force_direct=True, wipe_task=True, run=False)
    task.run()
    state = read_task_state(tmp_path)
    assert state["committed_samples"] == {} and state["succeeded_samples"] == {}
    assert make_task(tmp_path, sim, 20, force_direct=True).run() is True
    assert_complete(tmp_path, 20)


def test_only_process_does_not_generate(tmp_path, sim):
    task = make_task(tmp_path, sim, 20, only_process=True)
    assert task.run() is False
    assert read_task_state(tmp_path)["committed_samples"] == {}


def test_a_pass_failure_stop_names_the_task_rejections_it_never_logged(tmp_path):
    """Answers the task rejects are not logged one by one; the stop after --max_pass_failures names them."""
    from gpt_batch_api.simulator import Simulator, SimulatorConfig

    from .support.helpers import run_numbers_subprocess

    options = {"force_direct": True, "max_direct_requests": 10}
    with Simulator(SimulatorConfig()) as sim:
        proc = run_numbers_subprocess(tmp_path, sim.base_url, 30, options, reject_every=1)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out[-3000:]
    assert "consecutive batches did not pass" in out, out[-3000:]
    assert "TaskSpecific/Rejected x10" in out and "rejected on purpose by the test task" in out, out[-3000:]
