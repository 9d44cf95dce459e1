"""The direct flow under a hostile world, with the real demo CLI in a subprocess and real signals:

* a second Ctrl+C ends the process within 2 s although the direct calls in flight never answer, and the
  next run completes with every sample once;
* with ``--max_retries 0``, a server that dies in the middle of the calls and comes back leaves no sample
  failed (connection failures during an outage are not attempts);
* a disk that fills up during direct calls ends the run with the clear message as the last word.
"""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from gpt_batch_api.simulator import Simulator, SimulatorConfig

from . import Ledger, TaskSpec, audit, finish, wait_until_running
from .test_disk import fill, small_fs  # noqa: F401  (the fixture)

DIRECT = {"force_direct": True, "max_direct_requests": 10, "direct_concurrency": 8}


def answered(ledger: Ledger) -> int:
    with ledger.lock:
        return sum(map(len, ledger.answers.values()))


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_second_ctrl_c_exits_within_2_s_when_calls_never_answer(tmp_path: Path) -> None:
    spec = TaskSpec("char_codes", options=DIRECT)
    task_dir = tmp_path / "task"
    ledger = Ledger()
    with Simulator(SimulatorConfig(latency_ms=20), responder=ledger) as sim:
        proc = spec.start(task_dir, sim.base_url)
        assert wait_until_running(task_dir, spec.prefix, proc)
        wait_for(lambda: answered(ledger) >= 30)
        sim.config.latency_ms = 600_000  # from now on no call answers
        time.sleep(0.5)  # every slot holds a call now that will never answer
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        second = time.monotonic()
        out, _ = proc.communicate(timeout=30)
        took = time.monotonic() - second
        assert proc.returncode == 130, out[-3000:]
        assert took <= 2.0, f"the second Ctrl+C took {took:.2f} s to end the process:\n{out[-3000:]}"
        assert "Traceback" not in out, out[-3000:]
        sim.config.latency_ms = 0
        finish(spec, task_dir, sim.base_url)
        result = audit(spec, task_dir, sim)
    assert (result.lost, result.duplicated, result.failed) == (0, 0, 0)
    assert not result.state_problems, result.state_problems


def test_outage_mid_direct_calls_fails_no_sample_with_max_retries_0(tmp_path: Path) -> None:
    # One direct batch, so that every slot holds a call when the server dies; no answer is rejected on purpose.
    spec = TaskSpec("numbers", num=80, options={**DIRECT, "max_direct_requests": 80, "max_retries": 0})
    task_dir = tmp_path / "task"
    ledger = Ledger()
    config = SimulatorConfig(latency_ms=300)  # eight calls in flight when the server dies
    sim = Simulator(config, responder=ledger).start()
    try:
        proc = spec.start(task_dir, sim.base_url)
        assert wait_until_running(task_dir, spec.prefix, proc)
        wait_for(lambda: answered(ledger) >= 20)
        port = sim.port
        sim.stop()  # the server dies with calls in flight ...
        time.sleep(10)  # ... longer than the five backoffs a call used to count as its attempts
        sim = Simulator(config, port=port, responder=ledger).start()  # ... and comes back
        out, _ = proc.communicate(timeout=180)
        if proc.returncode != 0:  # an outage that outlasts every backoff stops the run; a rerun continues
            assert "cannot reach" in out.lower() or "connect" in out.lower(), out[-3000:]
            finish(spec, task_dir, sim.base_url)
        result = audit(spec, task_dir, sim)
    finally:
        sim.stop()
    assert "connection_error" not in out, out[-3000:]
    assert (result.lost, result.duplicated, result.failed) == (0, 0, 0)
    assert not result.state_problems, result.state_problems


def test_disk_full_during_direct_calls_ends_with_the_clear_message(small_fs: Path) -> None:  # noqa: F811
    spec = TaskSpec("char_codes", options=DIRECT)
    task_dir = small_fs / "task"
    ledger = Ledger()
    rng = random.Random(5)
    with Simulator(SimulatorConfig(latency_ms=30), responder=ledger) as sim:
        for _ in range(4):  # the disk fills at a different moment each time, while calls are answered
            proc = spec.start(task_dir, sim.base_url)
            if not wait_until_running(task_dir, spec.prefix, proc):
                out, _ = proc.communicate(timeout=60)
                assert proc.returncode == 0, out[-3000:]
                break  # complete
            before = answered(ledger)
            wait_for(lambda: answered(ledger) >= before + 8 or proc.poll() is not None)  # noqa: B023
            time.sleep(rng.uniform(0.0, 0.3))
            filler = fill(task_dir)
            try:
                out, _ = proc.communicate(timeout=60)
            finally:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.kill()
                filler.unlink()
            if proc.returncode == 0:
                break  # it completed before the disk was full
            errors = [line for line in out.strip().splitlines() if "[ERROR]" in line]
            assert proc.returncode == 1, out[-3000:]
            assert errors and "disk is full" in errors[-1], out[-3000:]  # the last word (advice on verify may follow)
            assert "Errno 28" not in out and "Traceback" not in out, out[-3000:]
        finish(spec, task_dir, sim.base_url)
        result = audit(spec, task_dir, sim)
    assert (result.lost, result.duplicated, result.failed) == (0, 0, 0)
    if not (task_dir / "char_codes_output.json").exists():
        pytest.fail("the task did not complete")
