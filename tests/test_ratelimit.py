"""Direct calls pace themselves from the x-ratelimit-* headers instead of bursting into 429s."""

from __future__ import annotations

import datetime
import threading
import time

import pytest

from gpt_batch_api.ratelimit import RateLimitGate, has_ratelimit_headers, parse_duration
from gpt_batch_api.simulator import Simulator, SimulatorConfig

from .support.helpers import assert_complete
from .support.numbers_task import NumbersTask


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("17ms", 0.017), ("1s", 1.0), ("6m0s", 360.0), ("1h2m3.5s", 3723.5), ("0.5s", 0.5), ("", None), ("soon", None)],
)
def test_reset_durations_in_openai_format(text, seconds):
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_the_gate_waits_until_the_budget_covers_the_calls_in_flight():
    gate = RateLimitGate(concurrency=8)
    headers = {"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "2"}
    gate.observe({**headers, "x-ratelimit-reset-requests": "59s"})
    assert gate.delay() == pytest.approx(6 * 60 / 600, abs=0.05)  # 6 more requests at 10 per second
    plenty = RateLimitGate(concurrency=8)
    plenty.observe({"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "500"})
    assert plenty.delay() == 0
    tokens = RateLimitGate(concurrency=4)
    tokens.observe({"x-ratelimit-limit-tokens": "60000", "x-ratelimit-remaining-tokens": "1000"}, {"total_tokens": 500})
    assert tokens.delay() == pytest.approx((4 * 500 - 1000) * 60 / 60000, abs=0.05)


def test_the_gate_reads_anthropics_rate_limit_headers_and_usage():
    soon = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    gate = RateLimitGate(concurrency=8)
    headers = {"anthropic-ratelimit-requests-limit": "600", "anthropic-ratelimit-requests-remaining": "2"}
    gate.observe({**headers, "anthropic-ratelimit-requests-reset": soon})
    assert gate.delay() == pytest.approx(6 * 60 / 600, abs=0.05)  # the refill, sooner than the reset
    reset_first = RateLimitGate(concurrency=8)
    now = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=0.3)
    reset_first.observe({**headers, "anthropic-ratelimit-requests-reset": now.isoformat()})
    assert 0 < reset_first.delay() <= 0.35  # the bucket is full again at the reset time
    tokens = RateLimitGate(concurrency=4)
    tokens.observe(
        {"anthropic-ratelimit-tokens-limit": "60000", "anthropic-ratelimit-tokens-remaining": "1000"},
        {"input_tokens": 300, "output_tokens": 200},  # Anthropic's usage: no total_tokens
    )
    assert tokens.delay() == pytest.approx((4 * 500 - 1000) * 60 / 60000, abs=0.05)
    assert has_ratelimit_headers(headers) and not has_ratelimit_headers({"retry-after": "1"})


def run_counting_429s(tmp_path, *, paced: bool, monkeypatch) -> int:
    if not paced:
        monkeypatch.setattr(RateLimitGate, "observe", lambda self, headers, usage=None: None)
        monkeypatch.setattr(RateLimitGate, "pause", lambda self, seconds, reason: None)
    refused = {"n": 0}
    lock = threading.Lock()
    with Simulator(SimulatorConfig(rpm=300)) as sim:
        original = sim.handle

        def handle(method, target, headers, body):
            answer = original(method, target, headers, body)
            if answer[0] == 429:
                with lock:
                    refused["n"] += 1
            return answer

        sim.handle = handle
        options = {"wandb": False, "progress": False, "client_base_url": sim.base_url, "openai_api_key": "sk-test"}
        options.update(force_direct=True, direct_concurrency=8, max_direct_requests=400, max_retries=10)
        assert NumbersTask(str(tmp_path), 320, chunk=400, **options).run() is True
    records = assert_complete(tmp_path, 320)
    assert all(r.error is None for r in records)
    return refused["n"]


def test_direct_calls_pace_themselves_under_a_requests_per_minute_limit(tmp_path, monkeypatch):
    paced = run_counting_429s(tmp_path / "paced", paced=True, monkeypatch=monkeypatch)
    assert paced <= 8, f"{paced} calls were refused with 429 although the headers said the budget was short"
    monkeypatch.undo()
    unpaced = run_counting_429s(tmp_path / "unpaced", paced=False, monkeypatch=monkeypatch)
    assert unpaced > paced, "the control run without pacing should have been refused more often"


def test_the_window_halves_on_overload_and_grows_back():
    gate = RateLimitGate(concurrency=16)
    gate.overloaded(503)
    assert gate.window() == 8
    gate.overloaded(503)  # the calls sent before the first decrease answer alike: no second halving yet
    assert gate.window() == 8
    for _ in range(40):  # about one more call per four windows of successes
        gate.answered(0.01)
    assert gate.window() == 9
    for _ in range(1000):
        gate.answered(0.01)
    assert gate.window() == 16


def run_against_saturating_server(tmp_path, *, adaptive: bool, monkeypatch) -> tuple[dict[int, int], float]:
    """A local server without rate-limit headers that answers 503 beyond 3 calls at once."""
    if not adaptive:
        monkeypatch.setattr(RateLimitGate, "overloaded", lambda self, status: None)
    config = SimulatorConfig(ratelimit_headers=False, max_concurrent_calls=2, latency_ms=50, load_latency_ms=10)
    with Simulator(config) as sim:
        options = {"wandb": False, "progress": False, "client_base_url": sim.base_url, "openai_api_key": "sk-test"}
        options.update(force_direct=True, direct_concurrency=16, max_direct_requests=50, max_retries=10)
        started = time.monotonic()
        assert NumbersTask(str(tmp_path), 150, **options).run() is True
        took = time.monotonic() - started
        statuses = sim.stats()["direct_statuses"]
    assert all(r.error is None for r in assert_complete(tmp_path, 150))
    return statuses, took


def test_without_headers_the_calls_in_flight_back_off_on_503(tmp_path, monkeypatch):
    adaptive, _ = run_against_saturating_server(tmp_path / "aimd", adaptive=True, monkeypatch=monkeypatch)
    monkeypatch.undo()
    fixed, _ = run_against_saturating_server(tmp_path / "fixed", adaptive=False, monkeypatch=monkeypatch)
    # The first burst meets 16 - 2 refusals whatever the policy; after it the window stays near the capacity.
    assert adaptive.get(503, 0) <= 0.3 * 150, adaptive
    assert fixed.get(503, 0) > 1.5 * adaptive.get(503, 0), (fixed, adaptive)
