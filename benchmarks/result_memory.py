"""Peak memory while a big batch result is downloaded and processed.

One Batch API batch of ``--requests`` embedding requests (``--dimensions`` floats each, about 4 KB per result
line: 50,000 lines make a ~200 MB output file) is pushed to the simulator (its own process). The resident set
size of this process is sampled every 10 ms from just before the download until the batch is processed;
the figure is the peak above the size just before the download. Target: < 250 MB above that baseline for
50,000 requests of ~200 MB, i.e. the result file is streamed to disk and not held whole in memory.

    python benchmarks/result_memory.py [--requests 50000] [--dimensions 200]
"""

from __future__ import annotations

import argparse
import io
import logging
import tempfile
import threading
import time
from pathlib import Path

from _common import print_json, simulator_process

from gpt_batch_api import GPTRequest, GPTRequester
from gpt_batch_api.requester_state import BatchStatus

TARGET_MB = 250


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class PeakSampler:
    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.01)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--dimensions", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=io.StringIO())
    flags = ("--validating_s", "0.1", "--in_progress_s", "0.5", "--finalizing_s", "0.1")
    with simulator_process(*flags) as base_url, tempfile.TemporaryDirectory() as task_dir:
        options = {"client_base_url": base_url, "openai_api_key": "sk-bench", "endpoint": "/v1/embeddings"}
        options.update(max_batch_requests=args.requests, min_batch_requests=1, max_batch_mb=200)
        with GPTRequester(task_dir, "mem", **options) as gr:
            for i in range(args.requests):
                body = {"model": "text-embedding-3-small", "input": f"sample {i}", "dimensions": args.dimensions}
                gr.add_request(GPTRequest(body, meta={"i": i}))
            with gr.commit_requests():
                pass
            gr.batch_requests(flush=True)
            gr.push_batches()
            baseline = rss_mb()
            ok = {"n": 0}

            def handler(result) -> None:  # a task that reads every body, keeps nothing but counts
                for info in result.infos.values():
                    ok["n"] += info.err_info is None and len(info.resp_info.body["data"][0]["embedding"]) > 0

            started = time.monotonic()
            with PeakSampler() as sampler:
                while not gr.S.batches_in(BatchStatus.FINISHED):
                    gr.update_remote()
                    time.sleep(0.2)
                size = Path(gr.layout.batch_results(gr.S.batches[0].id)).stat().st_size
                gr.process_batches(handler)
            wall = time.monotonic() - started
    above = sampler.peak - baseline
    print(f"{args.requests:,} results, {size / 1e6:.0f} MB output file: peak RSS {sampler.peak:.0f} MB, "
          f"{above:.0f} MB above the {baseline:.0f} MB before the download (target < {TARGET_MB} MB); "
          f"{ok['n']:,} ok, {wall:.1f} s")  # fmt: skip
    print_json({"benchmark": "result_memory", "requests": args.requests, "output_mb": size / 1e6,
                "baseline_mb": baseline, "peak_mb": sampler.peak, "above_baseline_mb": above})  # fmt: skip


if __name__ == "__main__":
    main()
