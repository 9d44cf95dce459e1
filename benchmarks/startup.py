"""Start-up time of the demo CLI: ``python -m gpt_batch_api.task_manager_demo --help`` (target <= 1.0 s).

Best and median of ``--repeats`` fresh interpreter runs, plus the modules that must not be imported at
start-up (wandb, tiktoken's encodings, the simulator). Prints a table and a JSON line.

    python benchmarks/startup.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

HEAVY = ("wandb", "gpt_batch_api.simulator", "tqdm", "pydantic", "openai")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    command = [sys.executable, "-m", "gpt_batch_api.task_manager_demo", "--help"]
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    probe = (
        "import sys, runpy; sys.argv = ['demo', '--help']\n"
        "try:\n    runpy.run_module('gpt_batch_api.task_manager_demo', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        f"print('\\n' + repr(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    heavy_loaded = loaded.stdout.strip().splitlines()[-1]
    print(f"{'--help best':<28}{min(times):>8.3f} s   (target <= 1.0 s)")
    print(f"{'--help median':<28}{statistics.median(times):>8.3f} s")
    print(f"{'heavy modules imported':<28}{heavy_loaded:>8}")
    print(
        json.dumps(
            {
                "benchmark": "startup",
                "best_s": min(times),
                "median_s": statistics.median(times),
                "heavy_modules_loaded": heavy_loaded,
            }
        )
    )


if __name__ == "__main__":
    main()
