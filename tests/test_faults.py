"""Server faults and remote batch outcomes, through the real SDK against the simulator."""

from __future__ import annotations

import json

import pytest

from gpt_batch_api.errors import (
    AuthenticationError,
    BatchAPIUnavailableError,
    ProcessingError,
    QuotaExceededError,
)
from gpt_batch_api.simulator import Simulator, SimulatorConfig

from .support.helpers import FAST_BATCHES, assert_complete
from .support.numbers_task import NumbersTask

BATCH_OPTIONS = {"min_batch_requests": 1, "max_batch_requests": 40, "remote_update_interval": 0.3}


@pytest.fixture()
def sim():
    with Simulator(SimulatorConfig(**FAST_BATCHES)) as simulator:
        yield simulator


def make_task(task_dir, sim, num, **options) -> NumbersTask:
    base = {"wandb": False, "progress": False, "client_base_url": sim.base_url, "openai_api_key": "sk-test"}
    return NumbersTask(str(task_dir), num, **{**base, **BATCH_OPTIONS, **options})


def totals(task_dir) -> dict:
    return json.loads((task_dir / "numbers_state.json").read_text())["totals"]


def test_expired_batch_delivers_partial_results_and_retries_the_rest_for_free(tmp_path, sim):
    sim.config.expire_next_batches = 1
    assert make_task(tmp_path, sim, 40, max_retries=0).run() is True
    records = assert_complete(tmp_path, 40)
    assert all(r.error is None for r in records), "expired requests must be retried even with max_retries=0"
    assert totals(tmp_path)["pushed_batches"] == 2


def test_failed_batch_stops_the_run_until_process_failed_batches(tmp_path, sim):
    sim.config.fail_next_batches = 1
    with pytest.raises(ProcessingError, match="--process_failed_batches"):
        make_task(tmp_path, sim, 30).run()
    assert make_task(tmp_path, sim, 30, process_failed_batches=1, retry_fatal_requests=True).run() is True
    records = assert_complete(tmp_path, 30)
    assert all(r.error is None for r in records)


def test_failed_batch_without_retry_fatal_marks_samples_failed(tmp_path, sim):
    sim.config.fail_next_batches = 1
    assert make_task(tmp_path, sim, 30, process_failed_batches=-1, max_pass_failures=5).run() is True
    records = assert_complete(tmp_path, 30)
    assert all(r.error == "BatchFailed" for r in records)


def test_error_lines_are_retried_and_counted(tmp_path, sim):
    sim.config.error_line_rate = 0.2
    assert make_task(tmp_path, sim, 80, max_retries=5, max_pass_failures=10).run() is True
    records = assert_complete(tmp_path, 80)
    assert all(r.error is None for r in records)
    assert any(r.retry_num > 0 for r in records)


def test_missing_and_malformed_lines_only_fail_their_request(tmp_path, sim):
    sim.config.missing_line_rate = 0.1
    sim.config.malformed_line_rate = 0.1
    assert make_task(tmp_path, sim, 80, max_retries=6, max_pass_failures=10).run() is True
    records = assert_complete(tmp_path, 80)
    assert all(r.error is None for r in records)


def test_token_limit_exceeded_is_congestion_not_failure(tmp_path, sim):
    sim.config.enqueued_token_limit = 3000  # about two batches of 40 small requests
    assert make_task(tmp_path, sim, 200, max_remote_batches=10).run() is True
    assert_complete(tmp_path, 200)
    creates = len(sim.stats()["batches"])
    refused = sum(b["status"] == "failed" for b in sim.stats()["batches"])
    # 5 batches of 40 are needed: a refusal must not lift the congestion wait in the same poll, which
    # pushed again at once (16 refusals and 23 creates for a task that needs 4-7 before the fix)
    assert creates <= 2 * 5, f"{creates} batches created ({refused} refused) for 5 needed"


def test_server_without_batch_api_suggests_force_direct(tmp_path, sim):
    sim.config.files_api_enabled = False
    sim.config.batches_api_enabled = False
    with pytest.raises(BatchAPIUnavailableError, match="--force_direct"):
        make_task(tmp_path, sim, 30).run()
    assert make_task(tmp_path, sim, 30, force_direct=True).run() is True
    assert_complete(tmp_path, 30)


def test_wrong_key_says_so(tmp_path, sim):
    sim.config.require_api_key = "sk-right"
    with pytest.raises(AuthenticationError, match="OPENAI_API_KEY"):
        make_task(tmp_path, sim, 10).run()
    with pytest.raises(AuthenticationError, match="OPENAI_API_KEY"):
        make_task(tmp_path / "direct", sim, 10, force_direct=True).run()


def test_insufficient_quota_is_fatal_with_a_clear_message(tmp_path, sim):
    sim.config.insufficient_quota = True
    with pytest.raises(QuotaExceededError, match="out of credit"):
        make_task(tmp_path, sim, 10, force_direct=True).run()


def test_direct_api_survives_429_500_and_dropped_connections(tmp_path, sim):
    sim.config.http_429_rate = 0.15
    sim.config.http_500_rate = 0.1
    sim.config.drop_connection_rate = 0.05
    assert make_task(tmp_path, sim, 100, force_direct=True, max_retries=4, max_pass_failures=10).run() is True
    records = assert_complete(tmp_path, 100)
    assert all(r.error is None for r in records)
