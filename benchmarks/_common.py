"""Shared pieces of the benchmarks: a simulator in a subprocess, timing of requester stages, figures."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def simulator_process(*flags: str) -> Iterator[str]:
    """Run the simulator in its own process (so its CPU is not counted as ours); yields the base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpt_batch_api.simulator", "--port", str(port), *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            break
        time.sleep(0.05)
    try:
        yield base_url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class StageTimer:
    """Wraps methods to add up the wall and CPU time spent in each stage, exclusive of nested stages.

    A stage called inside another (e.g. the requester's add_request inside the task's generate_requests)
    is counted in its own stage only: the outer stage's figures are what is left.
    """

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self._stack: list[str] = []

    def wrap(self, obj: Any, method: str, stage: str) -> None:
        original = getattr(obj, method)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._stack.append(stage)
            w0, c0 = time.perf_counter(), time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                wall, cpu = time.perf_counter() - w0, time.process_time() - c0
                self._stack.pop()
                self.wall[stage] += wall
                self.cpu[stage] += cpu
                if self._stack:  # take it out of the enclosing stage
                    self.wall[self._stack[-1]] -= wall
                    self.cpu[self._stack[-1]] -= cpu

        setattr(obj, method, timed)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bytes_written() -> int:
    """Bytes this process has passed to write calls so far (files and sockets; Linux /proc/self/io)."""
    try:
        with open("/proc/self/io") as file:
            return next(int(line.split()[1]) for line in file if line.startswith("wchar:"))
    except (OSError, StopIteration):
        return 0


def dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def print_json(figures: dict[str, Any]) -> None:
    print(json.dumps(figures, sort_keys=True))
