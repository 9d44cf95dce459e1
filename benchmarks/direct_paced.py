"""The direct flow held at a server's limit: rate-limit headers, and back-pressure without them.

1. ``--rpm 3000`` with OpenAI's ``x-ratelimit-*`` headers: a synthetic task of ``--requests`` direct calls.
   The simulator's budget starts full (3,000 calls), so the sustained rate is measured once it is spent:
   answers per minute from the first second that got under 1.5x the limit to the last answer.
   Targets: >= 2,700 calls per minute sustained, <= 1% of the calls answered 429.
2. A local server without rate-limit headers that answers 503 beyond ``--capacity`` calls at once (as Ollama
   does when its queue is full) and gets slower under load, driven with ``--direct_concurrency 16``: the
   window of calls in flight backs off (AIMD) instead of hammering it. Prints the share of 503 answers.

The simulator runs in this process (its answer counts are sampled), so CPU figures are not printed here.

    python benchmarks/direct_paced.py [--requests 5400]
"""

from __future__ import annotations

import argparse
import io
import logging
import tempfile
import threading
import time
from typing import Any

from _common import print_json
from _synthetic import bench_task

from gpt_batch_api.simulator import Simulator, SimulatorConfig

TARGET_PER_MIN, MAX_429_SHARE = 2700, 0.01


def steady_start(samples: list[tuple[float, int]], per_s: float, budget: int) -> tuple[float, int]:
    """The first sample, once ``budget`` calls were answered, after which one second saw fewer than ``per_s``
    answers (the budget is spent)."""
    j = 0
    for t, n in samples:
        if n < budget:
            continue
        while j < len(samples) - 1 and samples[j][0] < t + 1.0:
            j += 1
        if samples[j][0] >= t + 1.0 and (samples[j][1] - n) / (samples[j][0] - t) < per_s:
            return t, n
    return samples[0]


def run(config: SimulatorConfig, requests: int, steady_per_s: float = 0.0, **options: Any) -> dict[str, Any]:
    samples: list[tuple[float, int]] = []
    with Simulator(config) as sim, tempfile.TemporaryDirectory() as task_dir:
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                samples.append((time.monotonic(), sim.direct_statuses.get(200, 0)))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        task = bench_task(task_dir, requests, sim.base_url, force_direct=True, **options)
        started = time.monotonic()
        try:
            assert task.run() is True
        finally:
            done.set()
            sampler.join()
        wall = time.monotonic() - started
        statuses = dict(sim.direct_statuses)
    answered = sum(statuses.values())
    start = steady_start(samples, steady_per_s, config.rpm) if steady_per_s else samples[0]
    end = next((t, n) for t, n in samples if n == samples[-1][1])
    steady = (end[1] - start[1]) / max(1e-9, end[0] - start[0]) * 60
    return {
        "requests": requests,
        "wall_s": wall,
        "answers": answered,
        "statuses": statuses,
        "share_429": statuses.get(429, 0) / answered,
        "share_503": statuses.get(503, 0) / answered,
        "sustained_per_min": steady,
        "steady_window_s": end[0] - start[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5400)
    parser.add_argument("--rpm", type=int, default=3000)
    parser.add_argument("--local_requests", type=int, default=600)
    parser.add_argument("--capacity", type=int, default=4, help="calls the header-less server serves at once")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=io.StringIO())
    paced = run(SimulatorConfig(rpm=args.rpm), args.requests, 1.5 * args.rpm / 60, direct_concurrency=16)
    local_config = SimulatorConfig(
        ratelimit_headers=False, latency_ms=20, load_latency_ms=10, max_concurrent_calls=args.capacity
    )
    local = run(local_config, args.local_requests, direct_concurrency=16)
    print(f"rpm {args.rpm}: {paced['sustained_per_min']:.0f} calls/min sustained over {paced['steady_window_s']:.1f} s "
          f"(target >= {TARGET_PER_MIN}), 429 share {paced['share_429']:.2%} (target <= {MAX_429_SHARE:.0%}), "
          f"answers by status {paced['statuses']}")  # fmt: skip
    print(f"no headers, capacity {args.capacity}: {local['requests'] / local['wall_s']:.0f} calls/s, 503 share "
          f"{local['share_503']:.1%}, answers by status {local['statuses']}")  # fmt: skip
    print_json({"benchmark": "direct_paced", "paced": paced, "local_no_headers": local})


if __name__ == "__main__":
    main()
