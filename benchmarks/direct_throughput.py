"""Direct API throughput against the simulator at 50 ms latency (target: >= 200 requests/s).

The same measurement as ``e2e_direct.py`` at one latency: a whole task through ``--force_direct``, with
the default ``--direct_concurrency``. Prints the figure and a JSON line.

    python benchmarks/direct_throughput.py
"""

from __future__ import annotations

import argparse
import io
import logging

from _common import print_json
from e2e_direct import DIRECT_TARGET_RPS, run_direct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--latency_ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=io.StringIO())
    row = run_direct(args.requests, args.latency_ms, args.concurrency)
    verdict = "ok" if row["requests_per_s"] >= DIRECT_TARGET_RPS else "BELOW TARGET"
    print(
        f"direct API at {args.latency_ms:.0f} ms latency, concurrency {args.concurrency}: "
        f"{row['requests_per_s']:.0f} requests/s over {args.requests:,} requests "
        f"(target >= {DIRECT_TARGET_RPS}: {verdict})"
    )
    print_json({"benchmark": "direct_throughput", **row})


if __name__ == "__main__":
    main()
