"""Server and network faults not covered by tests/test_faults.py, each through the whole engine.

429 with and without ``retry-after``, timeouts (direct calls, and a batch create whose answer never
arrives), malformed JSON bodies, faults on the Batch API calls themselves, a batch cancelled by someone
else while it runs, a remote batch that disappears, the server restarting mid-run and a server that is
down. Each run either completes correctly or stops with a clear message and completes when rerun; no
local batch is pushed twice and no answer is bought twice unless the engine had to retry it.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import openai
import pytest

from gpt_batch_api.errors import APIError, QuotaExceededError
from gpt_batch_api.simulator import Simulator, SimulatorConfig
from gpt_batch_api.simulator.common import ApiError

from ..support.helpers import FAST_BATCHES, assert_complete
from ..support.numbers_task import NumbersTask
from . import Ledger, double_pushed

BATCH = {"min_batch_requests": 1, "max_batch_requests": 20, "remote_update_interval": 0.2}
DIRECT = {"force_direct": True, "max_direct_requests": 30}


def make_task(task_dir, base_url: str, num: int, **options: Any) -> NumbersTask:
    base = {"wandb": False, "progress": False, "client_base_url": base_url, "openai_api_key": "sk-test"}
    return NumbersTask(str(task_dir), num, **{**base, **options})


def answer_counts(ledger: Ledger) -> dict[str, int]:
    return {key: len(times) for key, times in ledger.answers.items()}


class DirectFaults:
    """Wraps ``sim.handle``: the next ``count`` direct calls get ``fault(...)`` instead of the real answer."""

    def __init__(self, sim: Simulator, count: int, fault: Any, after_answer: bool = False) -> None:
        self.sim, self.left, self.fault, self.after_answer = sim, count, fault, after_answer
        self.served = 0
        self.times: list[float] = []
        self.lock = threading.Lock()
        self.original = sim.handle
        sim.handle = self.handle  # type: ignore[method-assign]

    def handle(self, method: str, target: str, headers: Any, body: bytes) -> tuple[int, bytes, dict[str, str], str]:
        if not target.startswith("/v1/chat/completions"):
            return self.original(method, target, headers, body)
        with self.lock:
            self.times.append(time.monotonic())
            faulty = self.left > 0
            self.left -= faulty
        if not faulty:
            return self.original(method, target, headers, body)
        self.served += 1
        answer = self.original(method, target, headers, body) if self.after_answer else None
        return self.fault(answer)


# ------------------------------------------------------------------------------------------ 429 and timeouts


@pytest.mark.parametrize("retry_after", [True, False])
def test_direct_429_with_and_without_retry_after(tmp_path, retry_after):
    ledger = Ledger()
    headers = {"retry-after": "2", "retry-after-ms": "1500"} if retry_after else {}
    error = ApiError(429, "Rate limit reached (test).", type_="requests", code="rate_limit_exceeded", headers=headers)
    with Simulator(SimulatorConfig(), responder=ledger) as sim:
        faults = DirectFaults(sim, 8, lambda _: (429, json.dumps(error.body).encode(), headers, "application/json"))
        start = time.monotonic()
        assert make_task(tmp_path, sim.base_url, 10, direct_concurrency=10, **DIRECT).run() is True
        elapsed = time.monotonic() - start
    records = assert_complete(tmp_path, 10)
    assert all(r.error is None and r.retry_num == 0 for r in records), "a 429 must not use up a request's retries"
    assert faults.served == 8
    assert set(answer_counts(ledger).values()) == {1}, "a refused call was answered anyway"
    if retry_after:
        assert elapsed >= 1.5, f"retry-after-ms 1500 was not honoured (run took {elapsed:.2f}s)"
    else:
        retry_gaps = [b - a for a, b in zip(faults.times, faults.times[1:], strict=False) if b - a > 0.05]
        assert retry_gaps and min(retry_gaps) < 1.5, "without retry-after the engine must back off on its own"


def test_direct_timeouts_are_retried(tmp_path):
    ledger = Ledger()
    slow = {"left": 4}

    def responder(endpoint: str, body: dict) -> str | None:
        ledger(endpoint, body)
        with ledger.lock:
            is_slow = slow["left"] > 0
            slow["left"] -= is_slow
        if is_slow:
            time.sleep(1.5)  # longer than the client's timeout: the answer is produced but never arrives
        return None

    with Simulator(SimulatorConfig(), responder=responder) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="sk-test", timeout=0.5, max_retries=2)
        task = make_task(tmp_path, sim.base_url, 12, client=client, direct_concurrency=4, **DIRECT)
        assert task.run() is True
    records = assert_complete(tmp_path, 12)
    assert all(r.error is None for r in records)
    counts = answer_counts(ledger)
    assert sum(counts.values()) == 12 + 4, "each timed-out call is sent again exactly once"


def test_batch_create_that_times_out_is_adopted_not_created_twice(tmp_path):
    with Simulator(SimulatorConfig(**FAST_BATCHES)) as sim:
        original = sim.batches.create
        calls = {"n": 0}

        def slow_create(body: dict) -> dict:
            created = original(body)  # the batch exists on the server...
            calls["n"] += 1
            if calls["n"] == 1:
                time.sleep(1.5)  # ...but its answer comes after the client gave up
            return created

        sim.batches.create = slow_create  # type: ignore[method-assign]
        client = openai.OpenAI(base_url=sim.base_url, api_key="sk-test", timeout=0.7, max_retries=2)
        assert make_task(tmp_path, sim.base_url, 30, client=client, **BATCH).run() is True
        assert double_pushed(sim) == 0
        assert len(sim.stats()["batches"]) == 2
    assert_complete(tmp_path, 30)


# ------------------------------------------------------------------------------------------ malformed bodies


def test_direct_structured_answers_that_are_not_json_are_retried(tmp_path):
    with Simulator(SimulatorConfig(malformed_json_rate=0.3, seed=3)) as sim:
        assert make_task(tmp_path, sim.base_url, 40, max_retries=8, max_pass_failures=10, **DIRECT).run() is True
    records = assert_complete(tmp_path, 40)
    assert all(r.error is None for r in records)
    assert any(r.retry_num > 0 for r in records), "no malformed answer was injected"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(lambda answer: (200, answer[1][: len(answer[1]) // 2], answer[2], "application/json"), id="cut"),
        pytest.param(lambda answer: (200, b"", {}, "application/json"), id="empty"),
        pytest.param(lambda answer: (200, b"<html>proxy error</html>", {}, "text/html"), id="html"),
    ],
)
def test_direct_http_bodies_that_are_not_json_are_retried(tmp_path, body):
    with Simulator(SimulatorConfig()) as sim:
        faults = DirectFaults(sim, 5, body, after_answer=True)
        assert make_task(tmp_path, sim.base_url, 20, max_retries=3, **DIRECT).run() is True
    assert faults.served == 5
    records = assert_complete(tmp_path, 20)
    assert all(r.error is None for r in records)


# ------------------------------------------------------------------------------------------ Batch API faults


def test_faults_on_batch_api_calls_stop_cleanly_or_recover(tmp_path):
    config = SimulatorConfig(**FAST_BATCHES, seed=5)
    config.batch_api_faults = True
    config.http_500_rate, config.http_429_rate, config.drop_connection_rate = 0.08, 0.04, 0.04
    with Simulator(config) as sim:
        for _ in range(8):
            try:
                if make_task(tmp_path, sim.base_url, 60, **BATCH).run():
                    break
            except APIError as exc:  # a call failed even after the SDK's retries: a clear stop, then a rerun
                assert "rerun" in str(exc) or "HTTP" in str(exc), str(exc)
        else:
            pytest.fail("the task never completed")
        assert double_pushed(sim) == 0
    records = assert_complete(tmp_path, 60)
    assert all(r.error is None for r in records)


def test_insufficient_quota_on_the_batch_path_stops_and_resumes(tmp_path):
    with Simulator(SimulatorConfig(**FAST_BATCHES, insufficient_quota=True)) as sim:
        with pytest.raises(QuotaExceededError, match="out of credit"):
            make_task(tmp_path, sim.base_url, 30, **BATCH).run()
        sim.config.insufficient_quota = False
        assert make_task(tmp_path, sim.base_url, 30, **BATCH).run() is True
        assert double_pushed(sim) == 0
    assert_complete(tmp_path, 30)


# ------------------------------------------------------------------------------------------ batches that vanish


def run_in_thread(task: NumbersTask) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["done"] = task.run()
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


def wait_for(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the condition")
        time.sleep(0.02)


def running_batches(sim: Simulator) -> list[dict]:
    return [b for b in sim.stats()["batches"] if b["status"] == "in_progress"]


def test_batch_cancelled_by_someone_else_delivers_partial_results_and_retries_the_rest(tmp_path):
    config = SimulatorConfig(validating_s=0.1, in_progress_s=1.5, finalizing_s=0.1)
    with Simulator(config) as sim:
        thread, outcome = run_in_thread(make_task(tmp_path, sim.base_url, 40, max_retries=0, **BATCH))
        wait_for(lambda: running_batches(sim))
        time.sleep(0.6)  # part of the batch is done
        victim = running_batches(sim)[0]["id"]
        openai.OpenAI(base_url=sim.base_url, api_key="sk-other").batches.cancel(victim)
        thread.join(timeout=60)
        assert outcome == {"done": True}, outcome
        cancelled = [b for b in sim.stats()["batches"] if b["id"] == victim][0]
        assert cancelled["status"] == "cancelled"
        assert 0 < cancelled["request_counts"]["completed"] < cancelled["request_counts"]["total"]
        assert double_pushed(sim) == 0
    records = assert_complete(tmp_path, 40)
    assert all(r.error is None for r in records), "cancelled lines must be retried even with max_retries=0"


def test_remote_batch_deleted_by_someone_else_is_retried(tmp_path):
    config = SimulatorConfig(validating_s=0.1, in_progress_s=1.0, finalizing_s=0.1)
    with Simulator(config) as sim:
        thread, outcome = run_in_thread(make_task(tmp_path, sim.base_url, 40, max_retries=0, **BATCH))
        wait_for(lambda: running_batches(sim))
        victim = running_batches(sim)[0]["id"]
        with sim.lock:
            del sim.batches.batches[victim]
        thread.join(timeout=60)
        assert outcome == {"done": True}, outcome
    records = assert_complete(tmp_path, 40)
    assert all(r.error is None for r in records)


def test_server_restart_mid_run_loses_its_batches_and_the_requests_are_sent_again(tmp_path):
    config = SimulatorConfig(validating_s=0.1, in_progress_s=1.0, finalizing_s=0.1)
    first = Simulator(config).start()
    port = first.port
    second = Simulator(SimulatorConfig(**FAST_BATCHES), port=port)
    try:
        thread, outcome = run_in_thread(make_task(tmp_path, first.base_url, 50, max_retries=0, **BATCH))
        wait_for(lambda: running_batches(first))
        first.stop()
        second.start()  # same port, empty state: the running batches are gone
        thread.join(timeout=60)
        assert outcome == {"done": True}, outcome
        assert double_pushed(second) == 0
        assert second.stats()["batches"], "nothing was sent again after the restart"
    finally:
        first.stop()
        second.stop()
    records = assert_complete(tmp_path, 50)
    assert all(r.error is None for r in records)


@pytest.mark.parametrize("options", [BATCH, DIRECT], ids=["batch", "direct"])
def test_server_down_stops_with_a_clear_message_and_resumes(tmp_path, options):
    first = Simulator(SimulatorConfig(**FAST_BATCHES)).start()
    port = first.port
    first.stop()
    with pytest.raises(APIError, match="cannot reach the API server") as info:
        make_task(tmp_path, first.base_url, 20, **options).run()
    assert "rerun" in str(info.value)
    with Simulator(SimulatorConfig(**FAST_BATCHES), port=port) as sim:
        assert make_task(tmp_path, sim.base_url, 20, **options).run() is True
        assert double_pushed(sim) == 0
    records = assert_complete(tmp_path, 20)
    assert all(r.error is None for r in records)
