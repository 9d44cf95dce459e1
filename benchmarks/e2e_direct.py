"""The direct path end to end: a synthetic task run with --force_direct against the simulator.

For each simulated latency (default 0 ms and 50 ms) a fresh task of ``--requests`` requests is generated,
committed, sent through the concurrent direct API, recorded, classified and written to the task output.
Prints requests per second, wall and CPU time per request, then a JSON line. The simulator runs in its
own process, so its CPU is not counted as ours.

    python benchmarks/e2e_direct.py --requests 3000 --latency_ms 0 50
"""

from __future__ import annotations

import argparse
import io
import logging
import tempfile
import time
from typing import Any

from _common import peak_rss_mb, print_json, simulator_process
from _synthetic import bench_task

DIRECT_TARGET_RPS = 200  # at 50 ms latency (issue: direct throughput)


def run_direct(requests: int, latency_ms: float, concurrency: int) -> dict[str, Any]:
    with simulator_process("--latency_ms", str(latency_ms)) as base_url, tempfile.TemporaryDirectory() as task_dir:
        task = bench_task(
            task_dir,
            requests,
            base_url,
            force_direct=True,
            direct_concurrency=concurrency,
            max_direct_requests=requests,
            max_batch_requests=min(50_000, requests),
            max_batch_ktokens=100_000,
            max_remote_ktokens=100_000,
        )
        w0, c0 = time.perf_counter(), time.process_time()
        assert task.run() is True
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return {
        "latency_ms": latency_ms,
        "requests": requests,
        "concurrency": concurrency,
        "wall_s": wall,
        "cpu_s": cpu,
        "requests_per_s": requests / wall,
        "cpu_us_per_request": cpu / requests * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--latency_ms", type=float, nargs="+", default=[0.0, 50.0])
    parser.add_argument("--concurrency", type=int, default=16, help="--direct_concurrency (the default is 16)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=io.StringIO())
    rows = [run_direct(args.requests, latency, args.concurrency) for latency in args.latency_ms]
    print(f"{'latency':>10}{'requests':>10}{'wall s':>10}{'req/s':>10}{'CPU us/req':>12}")
    for row in rows:
        note = f"   (target >= {DIRECT_TARGET_RPS} req/s)" if row["latency_ms"] == 50 else ""
        print(
            f"{row['latency_ms']:>8.0f}ms{row['requests']:>10,}{row['wall_s']:>10.2f}{row['requests_per_s']:>10.0f}"
            f"{row['cpu_us_per_request']:>12.0f}{note}"
        )
    print_json({"benchmark": "e2e_direct", "runs": rows, "peak_rss_mb": peak_rss_mb()})


if __name__ == "__main__":
    main()
