"""End to end through TaskManager + GPTRequester against the simulator over real HTTP."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gpt_batch_api import GPTRequest, GPTRequester
from gpt_batch_api.requester_state import BatchStatus
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
    # Two full batches; the remaining 20 in one batch, or (if a batch was processed before they were cut) in
    # batches of 16 / 4 calls: see test_the_end_of_a_direct_run_is_cut_into_small_batches.
    sizes = sorted((h["num_requests"] for h in state["history"]), reverse=True)
    assert sizes[:2] == [50, 50] and sizes[2:] in ([20], [4, 4, 4, 4, 4]), sizes
    assert state["totals"]["pushed_batches"] == 0 and state["totals"]["direct_batches"] == len(sizes)
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


def add_and_cut(gr: GPTRequester, num: int, split_tail: bool) -> list[int]:
    """Add and commit ``num`` requests, cut the queue into direct batches; the sizes of the direct batches."""
    for i in range(num):
        payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{i}"}]}
        gr.add_request(GPTRequest({**payload, "max_completion_tokens": 5}))
    with gr.commit_requests():
        pass
    gr.batch_requests(flush=True, split_tail=split_tail)
    return [b.num_requests for b in gr.S.batches_in(BatchStatus.DIRECT)]


def process_all(gr: GPTRequester, recut: bool = False) -> None:
    """Run and process the direct batches until none is left (``recut``: cutting the rest as a task would)."""
    deadline = time.monotonic() + 60
    while gr.S.batches_in(BatchStatus.DIRECT):
        assert time.monotonic() < deadline, "the direct batches were not processed"
        gr.run_direct_batches(lambda result: None)
        gr.wait_direct(0.2)
        if recut:
            gr.batch_requests(flush=True, split_tail=True)


def test_the_end_of_a_direct_run_is_cut_into_small_batches(tmp_path, sim):
    """Once a direct batch of the session was processed, a remainder that fits in one direct batch is cut into
    batches of direct_concurrency / 4 when the task has generated everything (``split_tail``), so that one slow
    call holds back the processing (and the retries) of 3 other requests, not of the whole remainder."""
    options = {"client_base_url": sim.base_url, "openai_api_key": "sk-test", "force_direct": True}
    with GPTRequester(tmp_path, "t", max_direct_requests=50, direct_concurrency=16, **options) as gr:
        assert add_and_cut(gr, 30, split_tail=True) == [30]  # nothing processed yet: a refusal must see them all
        process_all(gr)
        assert add_and_cut(gr, 20, split_tail=False) == [20]  # the task is still generating
        process_all(gr)
        assert add_and_cut(gr, 20, split_tail=True) == [4, 4, 4, 4, 4]
        process_all(gr)
        assert add_and_cut(gr, 60, split_tail=True) == [50]  # only what fits in one batch is split ...
        process_all(gr)  # (the flow had enough to send: the rest waited)
        gr.batch_requests(flush=True, split_tail=True)
        assert [b.num_requests for b in gr.S.batches_in(BatchStatus.DIRECT)] == [4, 4, 2]  # ... at least 2 each
        process_all(gr)


def test_with_heavy_tailed_latencies_the_small_batches_start_earlier(tmp_path, sim):
    """With slow calls seen, the end of the run starts within the requests the flow answers while its slowest
    call is answered (more than one direct batch here): a batch of 50 cut there would hold back its retries
    until that slow call ends, when nothing else is left to send."""
    sim.config.straggler_rate, sim.config.straggler_ms = 0.05, 2000.0  # 10 calls of 2 s among 200
    options = {"client_base_url": sim.base_url, "openai_api_key": "sk-test", "force_direct": True}
    with GPTRequester(tmp_path, "t", max_direct_requests=50, direct_concurrency=16, **options) as gr:
        assert add_and_cut(gr, 200, split_tail=True)[:1] == [50]  # nothing seen yet: the usual batches
        process_all(gr, recut=True)  # 200 calls in 2-7 s, the slowest 2 s: 60 or more answered meanwhile
        assert gr.direct_runner.tail_horizon() >= 60
        assert add_and_cut(gr, 60, split_tail=True) == [4] * 8  # the flow's lookahead: the rest is cut as it is sent
        process_all(gr, recut=True)


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
