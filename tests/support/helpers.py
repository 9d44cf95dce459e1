"""Shared helpers for engine tests: a simulator on 127.0.0.1 and readers of task files."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from gpt_batch_api.output_files import DataclassListOutputFile
from gpt_batch_api.task_state import load_task_state

from .numbers_task import NumberRecord

REPO = Path(__file__).resolve().parents[2]

FAST_BATCHES = {"validating_s": 0.05, "in_progress_s": 0.15, "finalizing_s": 0.05}


def read_records(task_dir: Path, prefix: str = "numbers") -> list[NumberRecord]:
    return list(DataclassListOutputFile.read_entries(str(task_dir / f"{prefix}_output"), NumberRecord))


def read_task_state(task_dir: Path, prefix: str = "numbers") -> dict[str, Any]:
    """The whole task state as one document (head file and log), read without changing any file."""
    return load_task_state(task_dir / f"{prefix}_task.json").to_json()


def run_numbers_subprocess(
    task_dir: Path,
    base_url: str,
    num: int,
    options: dict[str, Any],
    *,
    env: dict[str, str] | None = None,
    **task_args: Any,
) -> subprocess.Popen:
    """Start the numbers task in a real subprocess (output captured in ``proc.stdout``)."""
    cmd = [sys.executable, "-m", "tests.support.numbers_task", "--task_dir", str(task_dir), "--base_url", base_url]
    cmd += ["--num", str(num), "--options", json.dumps(options)]
    for key, value in task_args.items():
        cmd += [f"--{key}", str(value)]
    full_env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def assert_complete(task_dir: Path, num: int, prefix: str = "numbers") -> list[NumberRecord]:
    """Every sample has exactly one output record, and the task state agrees with the output."""
    records = read_records(task_dir, prefix)
    samples = [r.sample for r in records]
    assert len(samples) == len(set(samples)), "a sample was written twice"
    assert sorted(samples) == [f"s{i:06d}" for i in range(num)], "samples are missing"
    state = read_task_state(task_dir, prefix)
    ok = {r.sample for r in records if r.error is None}
    assert set(state["succeeded_samples"]) == ok
    assert set(state["failed_samples"]) == {r.sample for r in records if r.error is not None}
    return records


def finish(task_dir: Path, sim: Any, num: int, options: dict[str, Any], **task_args: Any) -> str:
    """Run the numbers task to the end (it must exit 0); its output."""
    proc = run_numbers_subprocess(task_dir, sim.base_url, num, options, **task_args)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out[-3000:]
    return out


def assert_no_temp_files(task_dir: Path) -> None:
    stray = [p.name for p in task_dir.iterdir() if ".tmp" in p.name or p.name.endswith("_journal.json")]
    assert not stray, stray


def wait_until_running(task_dir: Path, prefix: str, proc: subprocess.Popen, timeout: float = 30.0) -> bool:
    """Wait until ``proc`` holds the task lock (its signal handling is installed by then: a Ctrl+C during
    Python's start-up would just be a traceback, and a kill then tests nothing); False if it ended first."""
    holder = task_dir / f"{prefix}.lock.holder"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if f"pid {proc.pid} " in holder.read_text():
                return True
        except OSError:
            pass
        time.sleep(0.02)
    return False


def kill_and_interrupt(
    task_dir: Path, sim: Any, num: int, options: dict[str, Any], *, rounds: int, seed: int, max_wait_s: float
) -> tuple[int, int]:
    """Start the numbers task ``rounds`` times (fewer if it finishes) and stop each run after a random while:
    every third run with SIGINT (it must exit 0 or 130), the others with SIGKILL. ``(kills, interrupts)``."""
    rng = random.Random(seed)
    kills = interrupts = 0
    for round_num in range(rounds):
        proc = run_numbers_subprocess(task_dir, sim.base_url, num, options, chunk=25)
        wait_until_running(task_dir, "numbers", proc)
        time.sleep(rng.uniform(0.05, max_wait_s))
        if proc.poll() is not None:
            assert proc.stdout is not None
            out = proc.stdout.read()
            assert proc.returncode == 0, out[-3000:]
            break
        if round_num % 3 == 2:
            proc.send_signal(signal.SIGINT)
            interrupts += 1
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode in (0, 130), out[-3000:]
        else:
            proc.kill()
            kills += 1
            proc.communicate(timeout=30)
    return kills, interrupts


class OneShotProxy:
    """An HTTP proxy on 127.0.0.1, set as ``HTTP_PROXY``, that answers one request with ``200 {}`` and keeps
    its request line in ``seen`` (clusters reach the API through a proxy: our HTTP clients must honour it)."""

    def __init__(self, monkeypatch: Any) -> None:
        self.seen: list[bytes] = []
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(4)
        self._thread = threading.Thread(target=self._answer, daemon=True)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{self._socket.getsockname()[1]}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)

    def _answer(self) -> None:
        conn, _ = self._socket.accept()
        with conn:
            self.seen.append(conn.recv(65536).split(b"\r\n")[0])
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")

    def __enter__(self) -> OneShotProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(timeout=5)
        self._socket.close()
