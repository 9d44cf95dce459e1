"""Chaos run: the demo task killed (SIGKILL) and interrupted (SIGINT, sometimes twice) at random moments.

The longer version of tests/reliability/test_kill_loop.py. For each round a fresh task is started through
the real demo CLI against an in-process simulator with mild faults (error lines, 5xx, 429, dropped
connections, one expired batch), interrupted ``--kills`` + ``--interrupts`` times, then run to completion
and audited: lost, duplicated and double-pushed must be 0, and the output must equal an uninterrupted
run's with the same seed.

    python benchmarks/chaos.py --rounds 6 --kills 8 --interrupts 4 --seed 1

Two more kinds of round (``--damage_rounds``, ``--shared_rounds``):

- damage: after the interruptions one of the task's files (state, task log, queue, batch, output) is
  deleted, emptied, cut, garbled or replaced by JSON of the wrong kind. The next run must either complete
  or refuse with a message naming the file and a fix; the fix it names is then run, and the audit follows.
  Answers bought again by a ``--wipe_*`` the user ran are counted apart ("rebought on request").
- shared: two demo tasks whose prefixes overlap (``run`` and ``run_batch``) run in one folder at once, each
  killed and interrupted at random; both must complete with nothing lost, duplicated or paid twice.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpt_batch_api.simulator import Simulator  # noqa: E402
from tests.reliability import Ledger, LoopResult, TaskSpec, audit, finish, kill_loop, simulator_config  # noqa: E402

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


DAMAGES = ("missing", "empty", "truncated", "garbage", "wrong_type")


def damage_file(task_dir: Path, rng: random.Random) -> str:
    """Damage one random file of the task; returns "name:how" (or "" if the task has no file left to damage)."""
    names = sorted(
        p.name
        for p in task_dir.iterdir()
        if p.name.startswith("char_codes_") and ".tmp-" not in p.name and p.suffix in (".json", ".jsonl")
        and not p.name.endswith("_journal.json")
    )  # fmt: skip
    if not names:
        return ""
    name, how = rng.choice(names), rng.choice(DAMAGES)
    path = task_dir / name
    data = path.read_bytes()
    if how == "missing":
        path.unlink()
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: max(0, len(data) // 2 + 5)])
    elif how == "garbage":
        path.write_bytes((b"\x00\xffnot json\n" * (len(data) // 11 + 1))[: len(data)])
    else:
        path.write_bytes(b"[]" if path.suffix == ".json" else b"[]\n")
    return f"{name}:{how}"


def damage_round(round_num: int, seed: int, kills: int, interrupts: int, folder: Path) -> dict:
    started = time.monotonic()
    rng = random.Random(seed)
    path = ("batch", "direct")[round_num % 2]
    spec = TaskSpec("char_codes", options={**COMMON, **PATHS[path]})
    task_dir = folder / "task"
    ledger = Ledger()
    outcome, fix, rebought = "completed", "", 0
    with Simulator(simulator_config(seed), responder=ledger) as sim:
        loop = kill_loop(spec, task_dir, sim.base_url, rng, kills=kills, interrupts=interrupts)
        damaged = damage_file(task_dir, rng)
        proc = spec.start(task_dir, sim.base_url)
        out, _ = proc.communicate(timeout=300)
        if "Traceback" in out:
            outcome = "traceback"
        elif proc.returncode == 1:
            name = damaged.split(":")[0]
            fixes = re.findall(r"--wipe_(?:task|requests)", out)
            if name not in out or not fixes:
                outcome = "unclear refusal"
            else:
                outcome, fix = "refused, fix ran", fixes[0]
                before = {k: len(v) for k, v in ledger.answers.items()}
                fixed = TaskSpec("char_codes", options={**spec.options, fix[2:]: True})
                finish(fixed, task_dir, sim.base_url)
                rebought = sum(len(v) - before.get(k, 0) for k, v in ledger.answers.items())
        elif proc.returncode != 0:
            outcome = f"exit {proc.returncode}"
        finish(spec, task_dir, sim.base_url)
        result = audit(spec, task_dir, sim)
        expected = spec.expected_answers()
        if fix:  # what the user asked to buy again is not "paid twice"
            expected = {k: n + len(ledger.answers.get(k, [])) for k, n in expected.items()}
        _, unexplained = ledger.extra_answers(expected, loop.kill_times)
    return {
        "round": round_num,
        "path": path,
        "damaged": damaged,
        "outcome": outcome,
        "fix": fix,
        "kills": loop.kills,
        "ints": loop.interrupts,
        "lost": result.lost,
        "dup": result.duplicated,
        "2x push": result.double_pushed,
        "2x paid": unexplained if not fix else 0,
        "rebought": rebought,
        "stray": len(result.stray_files),
        "secs": round(time.monotonic() - started, 1),
    }


def shared_round(round_num: int, seed: int, kills: int, interrupts: int, folder: Path) -> dict:
    """Two tasks with overlapping prefixes in one folder, interrupted at random at the same time."""
    started = time.monotonic()
    task_dir = folder / "shared"
    options = {**COMMON, **PATHS["batch"]}
    specs = [TaskSpec("char_codes", options=options, task_prefix=p) for p in ("run", "run_batch")]
    ledger = Ledger()
    with Simulator(simulator_config(seed), responder=ledger) as sim:
        loops: list[LoopResult] = [LoopResult(), LoopResult()]

        def run_loop(i: int) -> None:
            rng = random.Random(seed * 10 + i)
            loops[i] = kill_loop(specs[i], task_dir, sim.base_url, rng, kills=kills, interrupts=interrupts)

        threads = [threading.Thread(target=run_loop, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for spec in specs:
            finish(spec, task_dir, sim.base_url)
        results = [audit(spec, task_dir, sim) for spec in specs]
        expected = {k: 2 * n for k, n in specs[0].expected_answers().items()}
        _, unexplained = ledger.extra_answers(expected, loops[0].kill_times + loops[1].kill_times)
    return {
        "round": round_num,
        "path": "shared",
        "damaged": "",
        "outcome": "completed" if not any(r.state_problems for r in results) else "state problems",
        "fix": "",
        "kills": sum(loop.kills for loop in loops),
        "ints": sum(loop.interrupts for loop in loops),
        "lost": sum(r.lost for r in results),
        "dup": sum(r.duplicated for r in results),
        "2x push": sum(r.double_pushed for r in results[:1]),  # the simulator's batches cover both tasks
        "2x paid": unexplained,
        "rebought": 0,
        "stray": sum(len(r.stray_files) for r in results),
        "secs": round(time.monotonic() - started, 1),
    }


FILE_COLUMNS = ("round", "path", "damaged", "outcome", "fix", "kills", "ints", "lost", "dup", "2x push", "2x paid")


def file_rounds(args: argparse.Namespace) -> dict:
    rows = []
    print("\n" + " ".join(f"{c:>10}" for c in FILE_COLUMNS))
    plan = [damage_round] * args.damage_rounds + [shared_round] * args.shared_rounds
    for round_num, kind in enumerate(plan):
        with tempfile.TemporaryDirectory() as folder:
            row = kind(round_num, args.seed * 1000 + 500 + round_num, args.kills, args.interrupts, Path(folder))
        rows.append(row)
        print(" ".join(f"{str(row[c]):>10}" for c in FILE_COLUMNS), flush=True)
    totals = {
        "file_rounds": len(rows),
        "damage_rounds": args.damage_rounds,
        "shared_rounds": args.shared_rounds,
        "kills": sum(r["kills"] for r in rows),
        "interrupts": sum(r["ints"] for r in rows),
        "refused_then_fixed": sum(r["outcome"] == "refused, fix ran" for r in rows),
        "completed_directly": sum(r["outcome"] == "completed" for r in rows),
        "bad_outcomes": sum(r["outcome"] not in ("completed", "refused, fix ran") for r in rows),
        "lost": sum(r["lost"] for r in rows),
        "duplicated": sum(r["dup"] for r in rows),
        "double_pushed": sum(r["2x push"] for r in rows),
        "paid_twice": sum(r["2x paid"] for r in rows),
        "rebought_on_request": sum(r["rebought"] for r in rows),
        "stray_files": sum(r["stray"] for r in rows),
    }
    print(
        f"\nfile rounds {len(rows)} ({args.damage_rounds} damaged, {args.shared_rounds} shared folder): "
        f"{totals['kills']} SIGKILL, {totals['interrupts']} SIGINT; refused then fixed "
        f"{totals['refused_then_fixed']}, completed {totals['completed_directly']}, bad {totals['bad_outcomes']}; "
        f"lost {totals['lost']}, duplicated {totals['duplicated']}, double-pushed {totals['double_pushed']}, "
        f"paid twice {totals['paid_twice']} (rebought on request {totals['rebought_on_request']})"
    )
    print(json.dumps({"benchmark": "chaos_files", "seed": args.seed, **totals}))
    return totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4, help="fresh tasks to run (alternating batch/direct)")
    parser.add_argument("--kills", type=int, default=6, help="SIGKILLs per round")
    parser.add_argument("--interrupts", type=int, default=3, help="SIGINTs per round")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--damage_rounds", type=int, default=0, help="rounds that damage a task file (see above)")
    parser.add_argument("--shared_rounds", type=int, default=0, help="rounds of two tasks sharing one folder")
    args = parser.parse_args()
    files_bad = 0
    if args.damage_rounds or args.shared_rounds:
        totals = file_rounds(args)
        files_bad = sum(totals[k] for k in ("bad_outcomes", "lost", "duplicated", "double_pushed", "paid_twice"))
        if not args.rounds:
            return 1 if files_bad else 0
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
    return 1 if bad or files_bad or totals["outputs_equal_uninterrupted"] < len(rows) or totals["bad_exits"] else 0


if __name__ == "__main__":
    sys.exit(main())
