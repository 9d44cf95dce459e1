"""A task whose batches were sent to one provider, rerun with another (``--provider``): the batches in flight
can only be polled, collected or cancelled by the provider that has them. The run must stop before it touches
anything and say how to go on; it must never submit those requests a second time through the other provider
while the first still runs them (paying twice), nor ask the wrong provider to cancel them."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gpt_batch_api.simulator import Simulator, SimulatorConfig

from .support.helpers import assert_complete, finish, run_numbers_subprocess, wait_until_running

pytest.importorskip("anthropic")

OPENAI = {"min_batch_requests": 1, "max_batch_requests": 20, "remote_update_interval": 0.3}
ANTHROPIC = {**OPENAI, "provider": "anthropic", "reinit_meta": True}  # the demo model's meta becomes Claude's
NUM = 40
FAST = {"validating_s": 0.05, "in_progress_s": 0.2, "finalizing_s": 0.05}


def state(task_dir: Path) -> dict:
    return json.loads((task_dir / "numbers_state.json").read_text())


def openai_batches(sim: Simulator) -> list[dict]:
    return sim.stats()["batches"]


def run_to_end(task_dir: Path, sim: Simulator, options: dict) -> str:
    return finish(task_dir, sim, NUM, options)


def refused(task_dir: Path, sim: Simulator, options: dict, base_url: str | None = None) -> str:
    proc = run_numbers_subprocess(task_dir, base_url or sim.base_url, NUM, options)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    return out


def leave_batches_in_flight(task_dir: Path, sim: Simulator) -> list[str]:
    """Run with OpenAI until both batches are on the server, then SIGKILL; the remote ids."""
    proc = run_numbers_subprocess(task_dir, sim.base_url, NUM, OPENAI)
    wait_until_running(task_dir, "numbers", proc)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(openai_batches(sim)) < 2:
        time.sleep(0.05)
    time.sleep(0.3)  # the second create's answer is committed
    proc.kill()
    proc.communicate(timeout=30)
    ids = [b["remote"]["batch_id"] for b in state(task_dir)["batches"] if (b.get("remote") or {}).get("batch_id")]
    assert len(ids) == 2, state(task_dir)["batches"]
    return ids


def test_a_batch_killed_while_pushing_is_not_pushed_again_elsewhere(tmp_path):
    with Simulator(SimulatorConfig(in_progress_s=30.0)) as sim:
        proc = run_numbers_subprocess(
            tmp_path, sim.base_url, NUM, OPENAI, env={"GPT_BATCH_API_CRASH_POINT": "push_after_create"}
        )
        proc.communicate(timeout=120)
        assert proc.returncode == 137  # created on OpenAI, killed before the create was committed
        out = refused(tmp_path, sim, ANTHROPIC)
        assert "were sent to openai" in out and "--provider openai" in out, out[-3000:]
        with sim.lock:
            assert not sim.anthropic.batches.created  # nothing submitted to the other provider
        sim.config.in_progress_s = 0.2
        run_to_end(tmp_path, sim, OPENAI)  # the advice: finish with the provider that has them
        assert len(openai_batches(sim)) == 2  # the killed push was adopted, not pushed again
    assert_complete(tmp_path, NUM)


def test_batches_in_flight_are_finished_by_their_provider(tmp_path):
    with Simulator(SimulatorConfig(in_progress_s=30.0)) as sim:
        remote_ids = leave_batches_in_flight(tmp_path, sim)
        before = json.dumps(state(tmp_path), sort_keys=True)
        out = refused(tmp_path, sim, ANTHROPIC)
        assert all(remote_id in out for remote_id in remote_ids), out[-3000:]
        assert json.dumps(state(tmp_path), sort_keys=True) == before  # nothing changed
        with sim.lock:
            assert not sim.anthropic.batches.created
        assert all(b["status"] in ("validating", "in_progress") for b in openai_batches(sim))  # nothing cancelled
        sim.config.in_progress_s = 0.2
        run_to_end(tmp_path, sim, OPENAI)
        assert len(openai_batches(sim)) == 2
    assert_complete(tmp_path, NUM)


def test_wiping_batches_of_another_provider_names_them_instead_of_cancelling_them_wrongly(tmp_path):
    with Simulator(SimulatorConfig(in_progress_s=30.0, validating_s=0.05, finalizing_s=0.05)) as sim:
        remote_ids = leave_batches_in_flight(tmp_path, sim)
        out = run_to_end(tmp_path, sim, {**ANTHROPIC, "wipe_requests": True, "min_batch_requests": 1})
        assert "not cancelled" in out and all(remote_id in out for remote_id in remote_ids), out[-3000:]
        with sim.lock:
            assert len(sim.anthropic.batches.created) >= 1  # the task went on with Anthropic
        statuses = [b["status"] for b in openai_batches(sim)]
        assert len(statuses) == 2 and not {"cancelling", "cancelled"} & set(statuses), statuses  # the user's to cancel
    assert_complete(tmp_path, NUM)


def test_a_batch_on_another_server_is_not_taken_for_gone(tmp_path):
    """A rerun pointed at another server (another --client_base_url, or a shell without the first run's
    OPENAI_BASE_URL) gets 404 for the batches in flight: they must not be sent again as if gone."""
    with Simulator(SimulatorConfig(in_progress_s=30.0)) as first, Simulator(SimulatorConfig()) as second:
        leave_batches_in_flight(tmp_path, first)
        before = json.dumps(state(tmp_path), sort_keys=True)
        elsewhere = second.base_url.replace("127.0.0.1", "localhost")  # another server, as far as names go
        proc = run_numbers_subprocess(tmp_path, elsewhere, NUM, OPENAI)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode != 0 and "Traceback" not in out, out[-3000:]
        assert "was sent to http://127.0.0.1/v1" in out and "which does not know it" in out, out[-3000:]
        assert json.dumps(state(tmp_path), sort_keys=True) == before  # nothing changed
        assert not second.stats()["batches"]  # nothing sent again there
        first.config.in_progress_s = 0.2
        run_to_end(tmp_path, first, OPENAI)  # the advice: the server it was sent to
        assert len(openai_batches(first)) == 2
    assert_complete(tmp_path, NUM)


def test_a_batch_on_a_server_gone_for_good_is_dropped_with_the_advised_wipe(tmp_path):
    """The refusal's second fix, run as advised: --wipe_requests against the new server sends the requests there,
    names the batches left on the first server instead of asking the new one to cancel them, and completes."""
    with Simulator(SimulatorConfig(in_progress_s=30.0)) as first, Simulator(SimulatorConfig(**FAST)) as second:
        remote_ids = leave_batches_in_flight(tmp_path, first)
        elsewhere = second.base_url.replace("127.0.0.1", "localhost")
        assert "drop it with --wipe_requests" in refused(tmp_path, second, OPENAI, base_url=elsewhere)
        proc = run_numbers_subprocess(tmp_path, elsewhere, NUM, {**OPENAI, "wipe_requests": True})
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out[-3000:]
        assert "is not cancelled by this run" in out and all(r in out for r in remote_ids), out[-3000:]
        assert second.stats()["batches"]  # the requests went to the new server
        statuses = [b["status"] for b in openai_batches(first)]
        assert len(statuses) == 2 and not {"cancelling", "cancelled"} & set(statuses), statuses
    assert_complete(tmp_path, NUM)
