"""A synthetic task for the benchmarks: one short chat request per sample, one output record per answer."""

from __future__ import annotations

import dataclasses
import time

from gpt_batch_api.output_files import DataclassListOutputFile
from gpt_batch_api.request import GPTRequest
from gpt_batch_api.task_manager import TaskManager


@dataclasses.dataclass
class Row:
    key: str
    text: str


class SyntheticTask(TaskManager):
    anthropic = False  # Messages payloads for --provider anthropic (set by the benchmark before it runs)

    def __init__(self, task_dir: str, num: int, **kwargs):
        super().__init__(task_dir, "bench", DataclassListOutputFile.output_factory(Row), {"num": num}, **kwargs)
        self.next_index = 0

    @classmethod
    def payload(cls, i: int) -> dict:
        if cls.anthropic:
            return {
                "model": "claude-haiku-4-5",
                "messages": [{"role": "user", "content": f"Sample {i}: say something short."}],
                "max_tokens": 16,
            }
        return {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"Sample {i}: say something short."}],
            "max_completion_tokens": 16,
        }

    @classmethod
    def request(cls, i: int) -> GPTRequest:
        return GPTRequest(cls.payload(i), meta={"k": str(i)})

    @classmethod
    def generation_cpu(cls, num: int) -> float:
        """CPU seconds this task's own generation code takes for ``num`` requests, without the library (what
        ``generate_requests`` does besides ``add_request`` and ``commit_requests``): timing it per call inside
        the run would add two clock reads per request, which cost more than some stages. Its resume check
        looks keys up in a dict that grows to ``num`` entries during the run: here one of ``num / 2``."""
        committed = dict.fromkeys(f"done {i}" for i in range(num // 2))
        start = time.process_time()
        for i in range(num):
            if str(i) in committed:
                continue
            cls.request(i)
        return time.process_time() - start

    def generate_requests(self) -> bool:
        num = self.T.meta["num"]
        while self.next_index < num:
            i = self.next_index
            self.next_index += 1
            if str(i) in self.T.committed_samples:
                continue
            self.add_request(self.request(i))
            if self.num_pooled_requests >= 5000 and self.commit_requests():
                return False
        if self.num_pooled_requests and self.commit_requests():
            return False
        return True

    def commit_cached_request(self, cached_req) -> None:
        self.T.committed_samples[cached_req.item.req.meta["k"]] = None

    def process_batch_result(self, result) -> bool:
        rows = []
        for info in result.infos.values():
            key = info.meta["k"]
            if info.err_info is None:
                body = info.resp_info.body
                text = body["content"][0]["text"] if self.anthropic else body["choices"][0]["message"]["content"]
                rows.append(Row(key, text))
                self.T.succeeded_samples[key] = None
            elif not info.retry:
                self.T.failed_samples[key] = None
        self.D.extend(rows)
        return bool(rows)

    def wipe_unfinished(self, wipe_failed: bool) -> bool:
        return False


def bench_task(task_dir: str, num: int, base_url: str, **options: object) -> SyntheticTask:
    """A SyntheticTask against ``base_url`` with no wandb or bars and every cost cap lifted (benchmarks measure
    throughput, not budgets); ``options`` adds the benchmark's own limits."""
    no_caps = {f"max_{scope}_cost": 1e9 for scope in ("batch", "remote", "session", "task")}
    settings = {"wandb": False, "progress": False, "client_base_url": base_url, "openai_api_key": "sk-bench"}
    return SyntheticTask(task_dir, num, **settings, **no_caps, **options)
