"""Waits that must not hang: ``--no_run`` beside a running task, Ctrl+C while waiting for the task lock, and
one Ctrl+C while the server is slow to answer a Batch API call.

Each run is a real subprocess (the demo CLI or the numbers task) signalled as a user would; the simulator
lives in the test process. The bounds asserted are generous (the old behaviour waited for the lock holder
or the slow server: 30 s and more), so a loaded machine does not make them flaky.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any

from gpt_batch_api.simulator import Simulator, SimulatorConfig

from ..support.helpers import REPO, assert_complete, run_numbers_subprocess
from ..support.numbers_task import NumbersTask
from . import double_pushed, wait_until_running

SLOW_BATCH = {"validating_s": 0.1, "in_progress_s": 60.0, "finalizing_s": 0.1}
OPTIONS = {"min_batch_requests": 1, "max_batch_requests": 10, "remote_update_interval": 0.5}


def test_no_run_shows_the_status_while_another_process_runs_the_task(tmp_path):
    with Simulator(SimulatorConfig(**SLOW_BATCH)) as sim:
        holder = run_numbers_subprocess(tmp_path, sim.base_url, 20, OPTIONS)
        try:
            assert wait_until_running(tmp_path, "numbers", holder)
            deadline = time.monotonic() + 30
            while not sim.stats()["batches"] and time.monotonic() < deadline:
                time.sleep(0.05)
            options = {"client_base_url": sim.base_url, "openai_api_key": "sk-test", "wandb": False}
            cmd = [sys.executable, "-c", NO_RUN, str(tmp_path), json.dumps(options)]
            start = time.monotonic()
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
            elapsed = time.monotonic() - start
            assert proc.returncode == 0, proc.stderr
            assert "numbers" in proc.stdout.lower() or "batch" in proc.stdout.lower(), proc.stdout
            assert "waiting for the task lock" not in proc.stderr
            assert elapsed < 10, f"--no_run took {elapsed:.1f} s"
            assert holder.poll() is None, "the running task must not be disturbed"
        finally:
            holder.send_signal(signal.SIGINT)
            holder.communicate(timeout=60)
    # the status reader changed nothing: the interrupted task completes
    with Simulator(SimulatorConfig(validating_s=0.05, in_progress_s=0.2, finalizing_s=0.05)) as sim:
        task = NumbersTask(
            str(tmp_path), 20, wandb=False, progress=False, client_base_url=sim.base_url,
            openai_api_key="sk-test", force_direct=True,
        )  # fmt: skip
        assert task.run() is True
    assert_complete(tmp_path, 20)


# --lock_timeout 0: a --no_run that tried to take the lock would fail at once instead of showing the status.
NO_RUN = """
import json, sys
from tests.support.numbers_task import NumbersTask
task = NumbersTask(sys.argv[1], 20, run=False, lock_timeout=0, **json.loads(sys.argv[2]))
task.run()
"""


def test_ctrl_c_while_waiting_for_the_lock_stops_at_once(tmp_path):
    with Simulator(SimulatorConfig(**SLOW_BATCH)) as sim:
        holder = run_numbers_subprocess(tmp_path, sim.base_url, 20, OPTIONS)
        try:
            assert wait_until_running(tmp_path, "numbers", holder)
            waiter = run_numbers_subprocess(tmp_path, sim.base_url, 20, {**OPTIONS, "lock_status_interval": 0.2})
            line = ""
            while "Still waiting for the task lock" not in line:  # it is waiting now
                line = waiter.stdout.readline()
                assert line or waiter.poll() is None, "the second run ended instead of waiting"
            start = time.monotonic()
            waiter.send_signal(signal.SIGINT)
            out, _ = waiter.communicate(timeout=60)
            assert time.monotonic() - start < 10, "one Ctrl+C while waiting for the lock was not honoured"
            assert waiter.returncode == 130, out
            assert "Traceback" not in out, out
            assert holder.poll() is None
        finally:
            holder.send_signal(signal.SIGINT)
            holder.communicate(timeout=60)


class SlowPolls:
    """Every batch retrieve (poll) takes ``seconds`` before it is answered."""

    def __init__(self, sim: Simulator, seconds: float) -> None:
        self.sim, self.original, self.seconds, self.on = sim, sim.handle, seconds, True
        sim.handle = self.handle  # type: ignore[method-assign]

    def handle(self, method: str, target: str, headers: Any, body: bytes) -> Any:
        if self.on and method == "GET" and target.startswith("/v1/batches/"):
            time.sleep(self.seconds)
        return self.original(method, target, headers, body)


def test_one_ctrl_c_during_a_slow_control_call_stops_promptly_and_loses_nothing(tmp_path):
    with Simulator(SimulatorConfig(validating_s=0.05, in_progress_s=0.5, finalizing_s=0.05)) as sim:
        slow = SlowPolls(sim, 40.0)
        proc = run_numbers_subprocess(tmp_path, sim.base_url, 20, OPTIONS)
        assert wait_until_running(tmp_path, "numbers", proc)
        deadline = time.monotonic() + 30
        while len(sim.stats()["batches"]) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # the first poll is on the wire, and the server takes 40 s to answer it
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)  # once
        out, _ = proc.communicate(timeout=120)
        elapsed = time.monotonic() - start
        assert elapsed < 10, f"one Ctrl+C took {elapsed:.0f} s to stop the run:\n{out[-2000:]}"
        assert proc.returncode == 130 and "Traceback" not in out, out[-3000:]
        slow.on = False
        rerun = run_numbers_subprocess(tmp_path, sim.base_url, 20, OPTIONS)
        out, _ = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, out[-3000:]
        assert double_pushed(sim) == 0
    assert_complete(tmp_path, 20)
