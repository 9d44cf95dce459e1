"""Chaos run: the demo task killed (SIGKILL) and interrupted (SIGINT, sometimes twice) at random moments.

The longer version of tests/reliability/test_kill_loop.py. For each round a fresh task is started through
the real demo CLI against an in-process simulator with mild faults (error lines, 5xx, 429, dropped
connections, one expired batch), interrupted ``--kills`` + ``--interrupts`` times, then run to completion
and audited: lost, duplicated and double-pushed must be 0, and the output must equal an uninterrupted
run's with the same seed.

    python benchmarks/chaos.py --rounds 6 --kills 8 --interrupts 4 --seed 1
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpt_batch_api.simulator import Simulator  # noqa: E402
from tests.reliability import Ledger, TaskSpec, audit, finish, kill_loop, simulator_config  # noqa: E402

PATHS = {
    "batch": {"min_batch_requests": 20, "max_batch_requests": 30, "max_direct_requests": 10},
    "direct": {"force_direct": True, "max_direct_requests": 25, "direct_concurrency": 3},
}
COMMON = {"remote_update_interval": 0.5, "max_retries": 6, "max_pass_failures": 10}
COLUMNS = ("round", "path", "seed", "kills", "ints", "lost", "dup", "2x push", "2x paid", "stray", "same", "secs")


def reference_values(spec: TaskSpec, folder: Path, seed: int) -> dict:
    with Simulator(simulator_config(seed), responder=Ledger()) as sim:
        finish(spec, folder, sim.base_url)
        return audit(spec, folder, sim).values


def one_round(round_num: int, path: str, seed: int, kills: int, interrupts: int, folder: Path) -> dict:
    started = time.monotonic()
    spec = TaskSpec("char_codes", options={**COMMON, **PATHS[path]})
    task_dir = folder / "task"
    ledger = Ledger()
    with Simulator(simulator_config(seed), responder=ledger) as sim:

        def on_round(n: int) -> None:
            if n == 2:
                sim.config.expire_next_batches = 1

        loop = kill_loop(
            spec, task_dir, sim.base_url, random.Random(seed), kills=kills, interrupts=interrupts, on_round=on_round
        )
        finish(spec, task_dir, sim.base_url)
        result = audit(spec, task_dir, sim)
        _, unexplained = ledger.extra_answers(spec.expected_answers(), loop.kill_times)
    same = result.values == reference_values(spec, folder / "reference", seed)
    return {
        "round": round_num,
        "path": path,
        "seed": seed,
        "kills": loop.kills,
        "ints": loop.interrupts,
        "lost": result.lost,
        "dup": result.duplicated,
        "2x push": result.double_pushed,
        "2x paid": unexplained,
        "stray": len(result.stray_files),
        "same": same,
        "secs": round(time.monotonic() - started, 1),
        "bad_exits": len(loop.bad_exits),
        "state_problems": len(result.state_problems),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4, help="fresh tasks to run (alternating batch/direct)")
    parser.add_argument("--kills", type=int, default=6, help="SIGKILLs per round")
    parser.add_argument("--interrupts", type=int, default=3, help="SIGINTs per round")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rows = []
    print(" ".join(f"{c:>8}" for c in COLUMNS))
    for round_num in range(args.rounds):
        path = ("batch", "direct")[round_num % 2]
        with tempfile.TemporaryDirectory() as folder:
            row = one_round(round_num, path, args.seed * 1000 + round_num, args.kills, args.interrupts, Path(folder))
        rows.append(row)
        print(" ".join(f"{str(row[c]):>8}" for c in COLUMNS), flush=True)
    totals = {
        "rounds": len(rows),
        "interruptions_survived": sum(r["kills"] + r["ints"] for r in rows),
        "kills": sum(r["kills"] for r in rows),
        "interrupts": sum(r["ints"] for r in rows),
        "lost": sum(r["lost"] for r in rows),
        "duplicated": sum(r["dup"] for r in rows),
        "double_pushed": sum(r["2x push"] for r in rows),
        "answered_twice_unexplained": sum(r["2x paid"] for r in rows),
        "stray_files": sum(r["stray"] for r in rows),
        "outputs_equal_uninterrupted": sum(r["same"] for r in rows),
        "bad_exits": sum(r["bad_exits"] for r in rows),
        "state_problems": sum(r["state_problems"] for r in rows),
    }
    print(
        f"\ninterruptions survived {totals['interruptions_survived']} ({totals['kills']} SIGKILL, "
        f"{totals['interrupts']} SIGINT); lost {totals['lost']}, duplicated {totals['duplicated']}, "
        f"double-pushed {totals['double_pushed']}, paid twice {totals['answered_twice_unexplained']}; "
        f"outputs equal to an uninterrupted run: {totals['outputs_equal_uninterrupted']}/{len(rows)}"
    )
    print(json.dumps({"benchmark": "chaos", "seed": args.seed, **totals}))
    bad = totals["lost"] + totals["duplicated"] + totals["double_pushed"] + totals["answered_twice_unexplained"]
    return 1 if bad or totals["outputs_equal_uninterrupted"] < len(rows) or totals["bad_exits"] else 0


if __name__ == "__main__":
    sys.exit(main())
