"""The direct path at real, heavy-tailed latencies: the char_codes demo, whole process, against the simulator.

Each call takes 0.1 s + uniform(0, 0.1) s, and 5% of the calls 2 s more (mean 0.25 s). With ``--concurrency``
calls in flight, Little's law allows N x mean latency / concurrency seconds for N calls; the efficiency is that
ideal over the wall time of the whole demo process (start-up, generation, processing and exit included).
Target: efficiency >= 0.8 at concurrency 16. A flow that waits for the slowest call of every group of 50 gets
about a third of that.

    python benchmarks/direct_heavy_tail.py [--runs 3] [--code_dir /path/to/another/checkout] [--no_precompile]

The checkout's modules are compiled to bytecode first, as ``pip install`` does and as any run does for the
next one unless ``PYTHONDONTWRITEBYTECODE`` is set (it is on our test machines: each demo process would then
compile the library's modules again, about 0.2 s that a user's installed library does not spend).

``--code_dir`` runs the demo from another checkout (e.g. the commit before the continuous flow) against the
same simulator, for a before/after figure.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import print_json, simulator_process

BASE_S, JITTER_S, STRAGGLER_RATE, STRAGGLER_S = 0.1, 0.1, 0.05, 2.0
MEAN_LATENCY_S = BASE_S + JITTER_S / 2 + STRAGGLER_RATE * STRAGGLER_S
TARGET_EFFICIENCY = 0.8
REPO = Path(__file__).resolve().parents[1]


def run_demo(base_url: str, concurrency: int, code_dir: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as task_dir:
        cmd = [sys.executable, "-m", "gpt_batch_api.task_manager_demo", "--task", "char_codes"]
        cmd += ["--task_dir", task_dir, "--client_base_url", base_url, "--openai_api_key", "sk-bench"]
        cmd += ["--no_wandb", "--no_progress", "--force_direct", "--direct_concurrency", str(concurrency)]
        env = {**os.environ, "PYTHONPATH": str(code_dir), "WANDB_MODE": "disabled"}
        started = time.perf_counter()
        proc = subprocess.run(cmd, cwd=code_dir, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"the demo exited {proc.returncode}:\n{proc.stderr[-3000:]}{proc.stdout[-2000:]}")
        state = json.loads((Path(task_dir) / "char_codes_state.json").read_text())
    calls = state["totals"]["pushed_requests"]
    ideal = calls * MEAN_LATENCY_S / concurrency
    return {"calls": calls, "wall_s": wall, "ideal_s": ideal, "efficiency": ideal / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--code_dir", type=Path, default=REPO, help="checkout whose demo is run (default: this one)")
    parser.add_argument("--no_precompile", action="store_true", help="measure the compile at each start too")
    args = parser.parse_args()
    if not args.no_precompile:
        compileall.compile_dir(args.code_dir.resolve() / "gpt_batch_api", quiet=1)
    flags = ["--demo_answers", "--latency_ms", str(BASE_S * 1000), "--latency_jitter_ms", str(JITTER_S * 1000)]
    flags += ["--straggler_rate", str(STRAGGLER_RATE), "--straggler_ms", str(STRAGGLER_S * 1000)]
    rows = []
    with simulator_process(*flags) as base_url:
        for _ in range(args.runs):
            rows.append(run_demo(base_url, args.concurrency, args.code_dir.resolve()))
    print(f"{'calls':>8}{'wall s':>10}{'ideal s':>10}{'efficiency':>12}")
    for row in rows:
        print(f"{row['calls']:>8}{row['wall_s']:>10.2f}{row['ideal_s']:>10.2f}{row['efficiency']:>12.2f}")
    median = statistics.median(r["efficiency"] for r in rows)
    print(f"median efficiency {median:.2f} (target >= {TARGET_EFFICIENCY}; mean latency {MEAN_LATENCY_S:.3f} s)")
    print_json({"benchmark": "direct_heavy_tail", "code_dir": str(args.code_dir), "runs": rows, "median": median})


if __name__ == "__main__":
    main()
