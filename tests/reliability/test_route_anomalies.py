"""Every Batch API route x every anomaly a server or a gateway in front of it can produce.

Routes: file upload, batch create, batch retrieve (poll), batch list (the look-up after a failed create),
file content (the result download). Anomalies: an HTML page with status 200, an empty 200, a body cut
short, 404, 500, a slow answer, and a status the library does not know. Each fault hits the route a few
times in a row (more than the SDK's own retries), then the route behaves again.

Each case ends with every sample answered once, no local batch pushed twice and no answer bought twice;
a run may stop on the way, with a clear message whose advice (rerun, or the flag it names) the test follows.
"""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import pytest

from gpt_batch_api import remote
from gpt_batch_api.errors import APIError, GPTBatchError
from gpt_batch_api.simulator import Simulator, SimulatorConfig

from ..support.helpers import assert_complete
from ..support.numbers_task import NumbersTask
from . import Ledger, double_pushed

NUM = 16
OPTIONS = {"min_batch_requests": 1, "max_batch_requests": 8, "remote_update_interval": 0.2}
CONFIG = {"validating_s": 0.05, "in_progress_s": 0.2, "finalizing_s": 0.05}

ROUTES = {
    "upload": ("POST", re.compile(r"/v1/files$")),
    "create": ("POST", re.compile(r"/v1/batches$")),
    "retrieve": ("GET", re.compile(r"/v1/batches/[^/?]+$")),
    "list": ("GET", re.compile(r"/v1/batches(\?.*)?$")),
    "content": ("GET", re.compile(r"/v1/files/[^/]+/content$")),
}
ANOMALIES = ["html_200", "empty_200", "cut_body", "http_404", "http_500", "slow", "unknown_enum"]


class RouteFaults:
    """Wraps ``sim.handle``: the next ``count`` calls of each route in ``routes`` get ``anomaly``."""

    def __init__(self, sim: Simulator, routes: dict[str, tuple[str, int]]) -> None:
        self.sim, self.original = sim, sim.handle
        self.left = {route: count for route, (_, count) in routes.items()}
        self.kind = {route: anomaly for route, (anomaly, _) in routes.items()}
        self.lock = threading.Lock()
        sim.handle = self.handle  # type: ignore[method-assign]

    def _route(self, method: str, target: str) -> str | None:
        for route in self.left:
            want, pattern = ROUTES[route]
            if method == want and pattern.match(target):
                return route
        return None

    def handle(self, method: str, target: str, headers: Any, body: bytes) -> tuple[int, bytes, dict[str, str], str]:
        route = self._route(method, target)
        with self.lock:
            faulty = route is not None and self.left[route] > 0
            if faulty:
                self.left[route] -= 1
        if not faulty:
            return self.original(method, target, headers, body)
        anomaly = self.kind[route]
        error = {"error": {"message": "injected", "type": "server_error", "code": None, "param": None}}
        if anomaly == "html_200":
            return 200, b"<html><body><h1>Gateway</h1>Please log in.</body></html>", {}, "text/html"
        if anomaly == "empty_200":
            return 200, b"", {}, "application/json"
        if anomaly == "http_404":
            return 404, json.dumps(error).encode(), {}, "application/json"
        if anomaly == "http_500":
            return 500, json.dumps(error).encode(), {}, "application/json"
        status, payload, out_headers, content_type = self.original(method, target, headers, body)
        if anomaly == "cut_body":  # cut where no Content-Length tells the client: it sees a shorter body
            return status, payload[: max(1, len(payload) // 2)], out_headers, content_type
        if anomaly == "slow":
            time.sleep(1.5)
        elif anomaly == "unknown_enum" and status == 200 and content_type == "application/json":
            data = json.loads(payload)
            for item in data.get("data", [data]):
                if isinstance(item, dict) and "status" in item:
                    item["status"] = "paused_for_review"
            payload = json.dumps(data).encode()
        return status, payload, out_headers, content_type


def run_until_complete(task_dir, base_url: str, runs: int = 4) -> list[str]:
    """Run the task; after a stop, follow the message's advice (a flag it names, else a plain rerun)."""
    messages: list[str] = []
    flags: dict[str, Any] = {}
    for _ in range(runs):
        task = NumbersTask(
            str(task_dir), NUM, chunk=8, wandb=False, progress=False, client_base_url=base_url,
            openai_api_key="sk-test", **OPTIONS, **flags,
        )  # fmt: skip
        try:
            if task.run():
                return messages
        except GPTBatchError as exc:
            message = str(exc)
            assert "Traceback" not in message and len(message) < 2000
            assert re.search(r"rerun|--\w+", message), f"no way forward in: {message}"
            messages.append(message)
            if "--force_direct" in message:
                flags = {"force_direct": True}
    raise AssertionError(f"not complete after {runs} runs: {messages}")


@pytest.fixture(autouse=True)
def short_pauses(monkeypatch):
    """The engine's own pauses between attempts, shortened (what is tested is what happens, not how long)."""
    monkeypatch.setattr(remote, "CREATE_RETRY_DELAY_S", 0.05)
    monkeypatch.setattr(remote, "DOWNLOAD_RETRY_DELAY_S", 0.05)


@pytest.mark.parametrize("anomaly", ANOMALIES)
@pytest.mark.parametrize("route", list(ROUTES))
def test_route_anomaly_ends_complete_and_nothing_is_bought_twice(tmp_path, route, anomaly):
    if anomaly == "unknown_enum" and route not in ("retrieve", "list", "create"):
        pytest.skip("answers of this route carry no batch status")
    ledger = Ledger()
    faults = {route: (anomaly, 3)}
    if route == "list":  # the list is asked after a create whose outcome is unknown
        faults["create"] = ("http_500", 1)
    with Simulator(SimulatorConfig(**CONFIG), responder=ledger) as sim:
        RouteFaults(sim, faults)
        messages = run_until_complete(tmp_path, sim.base_url)
        assert double_pushed(sim) == 0
    assert_complete(tmp_path, NUM)
    answers = {key: len(times) for key, times in ledger.answers.items()}
    assert max(answers.values()) == 1, f"bought twice: {answers} ({messages})"


# ------------------------------------------------------------------------- results that cannot be had


@pytest.mark.parametrize("anomaly", ["html_200", "cut_body", "http_404", "empty_200"])
def test_a_download_that_keeps_failing_stops_with_advice_and_rebuys_only_when_asked(tmp_path, anomaly):
    ledger = Ledger()
    with Simulator(SimulatorConfig(**CONFIG), responder=ledger) as sim:
        RouteFaults(sim, {"content": (anomaly, 10_000)})
        base = {"wandb": False, "progress": False, "client_base_url": sim.base_url, "openai_api_key": "sk-test"}
        with pytest.raises(APIError) as stopped:
            NumbersTask(str(tmp_path), NUM, chunk=8, **base, **OPTIONS).run()
        message = str(stopped.value)
        assert "nothing is bought again" in message and "--wipe_requests" in message, message
        bought = sum(len(t) for t in ledger.answers.values())
        with pytest.raises(APIError):  # a plain rerun tries the download again and buys nothing
            NumbersTask(str(tmp_path), NUM, chunk=8, **base, **OPTIONS).run()
        assert sum(len(t) for t in ledger.answers.values()) == bought
        # the advised way out, run: the user asks to buy the unanswered requests again
        assert NumbersTask(str(tmp_path), NUM, chunk=8, wipe_requests=True, force_direct=True, **base).run() is True
    assert_complete(tmp_path, NUM)


def test_completed_batch_without_output_file_is_not_taken_for_no_answers(tmp_path):
    ledger = Ledger()
    with Simulator(SimulatorConfig(**CONFIG), responder=ledger) as sim:
        original = sim.handle

        def no_output_file(method: str, target: str, headers: Any, body: bytes) -> Any:
            status, payload, out_headers, content_type = original(method, target, headers, body)
            if method == "GET" and ROUTES["retrieve"][1].match(target) and no_output_file.on:
                data = json.loads(payload)
                data["output_file_id"] = None
                payload = json.dumps(data).encode()
            return status, payload, out_headers, content_type

        no_output_file.on = True  # type: ignore[attr-defined]
        sim.handle = no_output_file  # type: ignore[method-assign]
        base = {"wandb": False, "progress": False, "client_base_url": sim.base_url, "openai_api_key": "sk-test"}
        with pytest.raises(APIError, match="names no output file"):
            NumbersTask(str(tmp_path), NUM, chunk=8, **base, **OPTIONS).run()
        bought = sum(len(t) for t in ledger.answers.values())
        no_output_file.on = False  # type: ignore[attr-defined]  # the provider shows the file again: rerun
        assert NumbersTask(str(tmp_path), NUM, chunk=8, **base, **OPTIONS).run() is True
        assert bought > 0
        assert sorted(len(t) for t in ledger.answers.values()) == [1] * NUM, "an answer was bought twice"
    assert_complete(tmp_path, NUM)


def test_polls_that_keep_failing_or_an_unknown_status_that_stays_stop_with_advice(tmp_path, monkeypatch):
    monkeypatch.setattr(remote, "POLL_FAILURES", 3)
    monkeypatch.setattr(remote, "POLL_GIVE_UP_S", 0.5)
    monkeypatch.setattr(remote, "UNKNOWN_STATUS_GIVE_UP_S", 0.5)
    for anomaly, expected in (("html_200", r"failed \d+ times in a row"), ("unknown_enum", "unknown status")):
        task_dir = tmp_path / anomaly
        with Simulator(SimulatorConfig(**CONFIG)) as sim:
            faults = RouteFaults(sim, {"retrieve": (anomaly, 10_000)})
            base = {"wandb": False, "progress": False, "client_base_url": sim.base_url, "openai_api_key": "sk-test"}
            with pytest.raises(APIError, match=expected) as stopped:
                NumbersTask(str(task_dir), NUM, chunk=8, **base, **OPTIONS).run()
            assert "rerun the same command" in str(stopped.value)
            faults.left["retrieve"] = 0  # the server is well again: the advised rerun completes
            assert NumbersTask(str(task_dir), NUM, chunk=8, **base, **OPTIONS).run() is True
            assert double_pushed(sim) == 0
        assert_complete(task_dir, NUM)
