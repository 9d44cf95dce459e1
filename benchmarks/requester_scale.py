"""How the cost of a commit grows with the size of the task (it should not).

Fills a task with N requests (queued, and cut into local batches "in flight"), each recorded in a task
state (``committed_samples``, saved in the same transaction as a TaskManager does), then measures
committing 1,000 more requests and saving everything, and cutting a batch. Prints a table and a JSON line.

    python benchmarks/requester_scale.py --requests 1000000
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

from gpt_batch_api.gpt_requester import GPTRequester
from gpt_batch_api.request import GPTRequest
from gpt_batch_api.store.transaction import Transaction
from gpt_batch_api.task_state import TaskState, TaskStateFiles


def payload(i: int) -> dict:
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You label short utterances with one emotion."},
            {"role": "user", "content": f"Utterance {i}: I can't believe we finally made it to the coast!"},
        ],
        "max_completion_tokens": 50,
    }


class ScaleTaskFiles:
    """The task's side of each commit, as TaskManager's TaskFiles without an output file."""

    def __init__(self, files: TaskStateFiles, state: TaskState) -> None:
        self.files, self.state = files, state

    def prepare_commit(self, txn: Transaction) -> None:
        self.files.prepare_commit(txn, self.state)

    def committed(self) -> None:
        pass


def commit(gr: GPTRequester, state: TaskState, start: int, count: int) -> tuple[float, float]:
    """(seconds to add = estimate, seconds to commit + save the queue, requester state and task state)."""
    t0 = time.perf_counter()
    for i in range(start, start + count):
        gr.add_request(GPTRequest(payload(i), meta={"i": i}))
    t1 = time.perf_counter()
    with gr.commit_requests() as cached_reqs:
        for cached in cached_reqs:
            state.committed_samples[str(cached.item.req.meta["i"])] = cached.item.id
    return t1 - t0, time.perf_counter() - t1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=20_000)
    parser.add_argument("--in_flight_fraction", type=float, default=0.5, help="share cut into local batches")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as task_dir:
        state, files = TaskState(), TaskStateFiles(Path(task_dir) / "scale_task.json")
        gr = GPTRequester(
            task_dir,
            "scale",
            task_files=ScaleTaskFiles(files, state),
            max_unpushed_batches=1000,
            max_batch_requests=50_000,
            min_batch_requests=1,
            max_batch_ktokens=20_000,
            max_remote_ktokens=60_000,
        )
        with gr:
            t_fill = time.perf_counter()
            done = 0
            add_s = 0.0
            while done < args.requests:
                n = min(args.chunk, args.requests - done)
                a, _ = commit(gr, state, done, n)
                add_s += a
                done += n
                if done <= args.requests * args.in_flight_fraction:
                    gr.batch_requests(flush=False)
            fill_s = time.perf_counter() - t_fill
            samples = [commit(gr, state, done + k * 1000, 1000)[1] for k in range(20)]
            t0 = time.perf_counter()
            gr.batch_requests(flush=True)
            cut_s = time.perf_counter() - t0
            batches = len(gr.S.batches)
            files.close()
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {
        "requests": args.requests,
        "commit_1000_ms_median": statistics.median(samples) * 1000,
        "commit_1000_ms_max": max(samples) * 1000,
        "estimate_us_per_request": add_s / args.requests * 1e6,
        "fill_s": fill_s,
        "cut_remaining_s": cut_s,
        "batches": batches,
        "peak_rss_mb": rss_mb,
    }
    print(f"{'requests in task':<34}{args.requests:>12,}")
    print(f"{'commit 1000 + save (median)':<34}{figures['commit_1000_ms_median']:>10.1f} ms   (target <= 50 ms)")
    print(f"{'commit 1000 + save (max of 20)':<34}{figures['commit_1000_ms_max']:>10.1f} ms")
    print(f"{'estimate per request (add)':<34}{figures['estimate_us_per_request']:>10.1f} us")
    print(f"{'fill time':<34}{fill_s:>10.1f} s")
    print(f"{'cut remaining into batches':<34}{cut_s:>10.1f} s ({batches} batches)")
    print(f"{'peak RSS':<34}{rss_mb:>10.0f} MB   (target <= 2048 MB)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
