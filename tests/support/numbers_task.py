"""A small task used by the engine tests: one structured-output request per sample.

Runnable as a script so crash tests can start it in a real subprocess and kill it:
``python -m tests.support.numbers_task --task_dir D --base_url URL --num 300 [requester options as JSON]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys

import pydantic

from gpt_batch_api.errors import GPTBatchError, StopRequested
from gpt_batch_api.output_files import DataclassListOutputFile
from gpt_batch_api.request import CachedGPTRequest, GPTRequest
from gpt_batch_api.results import BatchResult
from gpt_batch_api.task_manager import TaskManager


class Answer(pydantic.BaseModel):
    value: int


@dataclasses.dataclass
class NumberRecord:
    sample: str
    value: int | None
    retry_num: int
    error: str | None = None


class NumbersTask(TaskManager):
    """Asks for one number per sample; records every final answer (or failure) once in the output."""

    def __init__(
        self,
        task_dir: str,
        num_samples: int,
        *,
        chunk: int = 50,
        reject_every: int = 0,
        prefix: str = "numbers",
        model: str | None = None,
        **kwargs,
    ):
        anthropic = kwargs.get("provider") == "anthropic"
        model = model or ("claude-haiku-4-5" if anthropic else "gpt-4o-mini")
        super().__init__(
            task_dir,
            prefix,
            DataclassListOutputFile.output_factory(NumberRecord),
            init_meta={"model": model, "num_samples": num_samples},
            **kwargs,
        )
        self.chunk = chunk
        self.reject_every = reject_every  # reject (and retry) the first answer of every N-th sample

    def generate_requests(self) -> bool:
        for i in range(self.T.meta["num_samples"]):
            key = f"s{i:06d}"
            if key in self.T.committed_samples:
                continue
            payload = {
                "model": self.T.meta["model"],
                "messages": [{"role": "user", "content": f"Reply with the number {i} as JSON."}],
                "response_format": Answer,
                # Anthropic's Messages API takes max_tokens (see endpoints/messages.py)
                ("max_tokens" if self.GR.opts.provider == "anthropic" else "max_completion_tokens"): 30,
            }
            self.add_request(GPTRequest(payload=payload, meta={"sample": key, "i": i}))
            if self.num_pooled_requests >= self.chunk and self.commit_requests():
                return False
        if self.num_pooled_requests and self.commit_requests():
            return False
        return True

    def commit_cached_request(self, cached_req: CachedGPTRequest) -> None:
        self.T.committed_samples[cached_req.item.req.meta["sample"]] = cached_req.item.id

    def process_batch_result(self, result: BatchResult) -> bool:
        written = False
        for info in result.infos.values():
            key, i = info.meta["sample"], info.meta["i"]
            if key in self.T.succeeded_samples or key in self.T.failed_samples:
                raise AssertionError(f"sample {key} answered twice")
            if info.item.req.payload["messages"][0]["content"] != f"Reply with the number {i} as JSON.":
                raise AssertionError(f"sample {key} came back with another request's payload")
            if info.err_info is None and self.reject_every and i % self.reject_every == 0 and info.retry_num == 0:
                info.request_retry("TaskSpecific", "Rejected", "rejected on purpose by the test task")
            if info.err_info is None:
                value = info.resp_info.parsed[0].value
                self.D.append(NumberRecord(key, value, info.retry_num))
                self.T.succeeded_samples[key] = value
                self.T.responded_meta[key] = info.retry_num
                written = True
            elif not info.retry:
                self.D.append(NumberRecord(key, None, info.retry_num, info.err_info.subtype))
                self.T.failed_samples[key] = info.err_info.subtype
                self.T.responded_meta[key] = info.retry_num
                written = True
        return written

    def wipe_unfinished(self, wipe_failed: bool) -> bool:
        for key in list(self.T.committed_samples):
            if key in self.T.succeeded_samples:
                continue
            if key in self.T.failed_samples and not wipe_failed:
                continue
            del self.T.committed_samples[key]
            self.T.failed_samples.pop(key, None)
            self.T.responded_meta.pop(key, None)
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task_dir", required=True)
    parser.add_argument("--base_url", required=True)
    parser.add_argument("--num", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=50)
    parser.add_argument("--reject_every", type=int, default=0)
    parser.add_argument("--prefix", default="numbers", help="prefix of the task's files")
    parser.add_argument("--options", default="{}", help="requester/task options as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    options = {"wandb": False, "progress": False, "client_base_url": args.base_url, "openai_api_key": "sk-test"}
    options.update(json.loads(args.options))
    task = NumbersTask(
        args.task_dir, args.num, chunk=args.chunk, reject_every=args.reject_every, prefix=args.prefix, **options
    )
    try:
        return 0 if task.run() else 3
    except (StopRequested, KeyboardInterrupt):
        return 130
    except GPTBatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    exit_code = main()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the work is over: a late Ctrl+C must not break the exit
    sys.exit(exit_code)
