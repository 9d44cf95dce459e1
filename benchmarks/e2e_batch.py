"""A synthetic task through the whole batch path, against the simulator with instant batches.

generate -> commit -> cut batches -> upload + create -> (instant completion) -> download -> classify ->
task state + output. Prints wall time, CPU time, peak RSS, bytes written and microseconds of local CPU
per request per stage, then a JSON line. The simulator runs in its own process.

    python benchmarks/e2e_batch.py --requests 100000 [--provider anthropic]
"""

from __future__ import annotations

import argparse
import io
import logging
import tempfile
import time

from _common import StageTimer, bytes_written, dir_bytes, peak_rss_mb, print_json, simulator_process
from _synthetic import SyntheticTask, bench_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--batch_requests", type=int, default=50_000)
    parser.add_argument("--provider", choices=("openai", "anthropic"), default="openai")
    args = parser.parse_args()
    SyntheticTask.anthropic = args.provider == "anthropic"
    logging.basicConfig(level=logging.WARNING, stream=io.StringIO())
    timing_flags = ["--validating_s", "0", "--in_progress_s", "0", "--finalizing_s", "0"]
    with simulator_process(*timing_flags) as base_url, tempfile.TemporaryDirectory() as task_dir:
        task = bench_task(
            task_dir,
            args.requests,
            base_url,
            max_batch_requests=args.batch_requests,
            min_batch_requests=1,
            max_unpushed_batches=100,
            max_remote_batches=100,
            max_batch_ktokens=20_000,
            max_remote_ktokens=60_000,
            max_remote_requests=10_000_000,
            remote_update_interval=0.2,  # the simulator needs seconds per 50,000 answers: polling faster only burns CPU
            provider=args.provider,
        )
        timer = StageTimer()
        gr = task.GR
        stages = (
            (task, "generate_requests", "estimate + add"),  # minus the task's own code, calibrated apart
            (gr, "commit", "commit (all steps)"),
            (gr, "_append_to_queue", "append to queue"),
            (gr, "batch_requests", "cut batches"),
            (gr, "push_batches", "upload + create"),
            (gr, "update_remote", "poll + download"),
            (gr, "process_batches", "read + classify"),
            (task, "process_batch_result", "process (task code)"),
        )
        for obj, method, stage in stages:
            timer.wrap(obj, method, stage)
        # One-time cost, reported apart: loading the tokenizer (o200k_base) on the first estimate.
        c0 = time.process_time()
        gr.estimator.payload_input_tokens(SyntheticTask.payload(0), gr.endpoint.path)
        startup_cpu = time.process_time() - c0
        # One-time cost, reported apart like the tokenizer's: importing the provider's SDK (openai is imported
        # by the library itself before the run; anthropic only when the backend is first made).
        c0 = time.process_time()
        __import__(args.provider)
        sdk_import_cpu = time.process_time() - c0
        generation = SyntheticTask.generation_cpu(args.requests)
        written_before = bytes_written()
        w0, c0 = time.perf_counter(), time.process_time()
        assert task.run()
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        written = bytes_written() - written_before
        left = dir_bytes(task_dir)
    n = args.requests
    timer.cpu["estimate + add"] -= generation
    task_code = generation + timer.cpu["process (task code)"]
    ours = cpu - generation  # the target's measure: everything but generation
    library = cpu - task_code  # the library alone: without the task's two hooks
    waiting = timer.wall["poll + download"] - timer.cpu["poll + download"]
    print(f"{'provider':<34}{args.provider:>12}")
    print(f"{'requests':<34}{n:>12,}")
    print(f"{'wall time':<34}{wall:>12.2f} s")
    print(f"{'CPU time':<34}{cpu:>12.2f} s")
    print(f"{'CPU per request, generation excl.':<34}{ours / n * 1e6:>12.1f} us   (target <= 100 us)")
    print(f"{'  of which the library':<34}{library / n * 1e6:>12.1f} us   (the task's hooks excluded)")
    print(f"{'peak RSS':<34}{peak_rss_mb():>12.0f} MB   (target <= 2048 MB at 1M)")
    print(f"{'bytes written (write calls)':<34}{written:>12,}   ({written / n:.0f} per request)")
    print(f"{'bytes left in the task dir':<34}{left:>12,}")
    print(f"{'wall time waiting on the remote':<34}{waiting:>12.2f} s")
    print(f"{'one-time tokenizer load (excl.)':<34}{startup_cpu:>12.2f} s CPU")
    print(f"{'one-time SDK import (excl.)':<34}{sdk_import_cpu:>12.2f} s CPU")
    print("CPU per request by stage (exclusive):")
    print(f"  {'generate (task code, timed apart)':<32}{generation / n * 1e6:>10.1f} us")
    staged = generation
    for _, _, stage in stages:
        staged += timer.cpu[stage]
        print(f"  {stage:<32}{timer.cpu[stage] / n * 1e6:>10.1f} us   {timer.wall[stage]:>8.2f} s wall")
    print(f"  {'other (loop, start-up)':<32}{(cpu - staged) / n * 1e6:>10.1f} us")
    print_json(
        {
            "benchmark": "e2e_batch",
            "provider": args.provider,
            "requests": n,
            "wall_s": wall,
            "cpu_s": cpu,
            "startup_cpu_s": startup_cpu,
            "sdk_import_cpu_s": sdk_import_cpu,
            "cpu_us_per_request": ours / n * 1e6,
            "cpu_us_per_request_library": library / n * 1e6,
            "cpu_us_per_request_with_generation": cpu / n * 1e6,
            "peak_rss_mb": peak_rss_mb(),
            "bytes_written": written,
            "task_dir_bytes": left,
            "cpu_us_generate (task code)": generation / n * 1e6,
            **{f"cpu_us_{stage}": timer.cpu[stage] / n * 1e6 for _, _, stage in stages},
        }
    )


if __name__ == "__main__":
    main()
