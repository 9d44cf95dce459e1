"""The engine's push, adoption, congestion and expiry logic against the in-memory backend (the seam's test
double): the same code paths as the simulator's end-to-end tests, in a fraction of a second each."""

from __future__ import annotations

from typing import Any

import pytest

from gpt_batch_api.backends.memory import InMemoryBatchBackend

from .support.helpers import assert_complete
from .support.numbers_task import NumbersTask

OPTIONS = {
    "min_batch_requests": 1,
    "max_batch_requests": 10,
    "remote_update_interval": 0.01,
    "wandb": False,
    "progress": False,
    "client_base_url": "http://127.0.0.1:9/v1",  # never called: the backend is in memory
    "openai_api_key": "sk-test",
}


def chat_answer(body: dict[str, Any]) -> dict[str, Any]:
    """A chat completion whose structured output is the number the request asks for."""
    number = int(body["messages"][0]["content"].split()[4])
    return {
        "id": "chatcmpl-mem",
        "object": "chat.completion",
        "created": 0,
        "model": body["model"],
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": f'{{"value": {number}}}', "refusal": None}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }  # fmt: skip


def run(tmp_path, backend: InMemoryBatchBackend, num: int = 30, **options: Any) -> None:
    task = NumbersTask(str(tmp_path), num, backend=backend, **{**OPTIONS, **options})  # everything sent goes there
    assert task.run() is True


def test_push_poll_download_process(tmp_path):
    backend = InMemoryBatchBackend(chat_answer)
    run(tmp_path, backend)
    records = assert_complete(tmp_path, 30)
    assert sorted(r.value for r in records) == list(range(30)) and backend.creates == 3


def test_lost_create_answers_are_adopted_not_submitted_again(tmp_path):
    backend = InMemoryBatchBackend(chat_answer)
    backend.lose_next_creates = 2
    run(tmp_path, backend)
    assert_complete(tmp_path, 30)
    assert backend.lose_next_creates == 0 and backend.creates == 3  # one remote batch per local batch


def test_congestion_refusal_is_pushed_again_later_without_failing_anything(tmp_path):
    backend = InMemoryBatchBackend(chat_answer)
    backend.congest_next = 1
    run(tmp_path, backend)
    records = assert_complete(tmp_path, 30)
    assert all(r.error is None and r.retry_num == 0 for r in records)
    assert backend.congest_next == 0 and backend.creates == 4  # the refused batch, then the same one again


@pytest.mark.parametrize("max_retries", [0, 2])
def test_expired_requests_are_retried_for_free(tmp_path, max_retries):
    backend = InMemoryBatchBackend(chat_answer)
    backend.expire_next = 1
    run(tmp_path, backend, max_retries=max_retries)
    records = assert_complete(tmp_path, 30)
    assert all(r.error is None for r in records)  # free: even with --max_retries 0 nothing fails
    assert backend.expire_next == 0 and backend.creates == 4  # half of one batch expired and was sent again


class PredictionsTask(NumbersTask):
    """Records the predictions made when each request was added and those its results and retries carry."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.added: dict[str, tuple[int, int, float, float]] = {}
        self.seen: list[tuple[str, int, tuple[int, int, float, float]]] = []

    def commit_cached_request(self, cached_req):
        super().commit_cached_request(cached_req)
        i = cached_req.info
        self.added[cached_req.item.req.meta["sample"]] = (i.tokens_input, i.tokens_output, i.cost_batch, i.cost_direct)

    def process_batch_result(self, result):
        for info in result.infos.values():
            r = info.req_info
            self.seen.append((info.meta["sample"], info.retry_num, (r.tokens_input, r.tokens_output, r.cost_batch,
                                                                    r.cost_direct)))  # fmt: skip
        return super().process_batch_result(result)


def test_the_predictions_made_when_a_request_is_added_reach_its_results_and_its_retries(tmp_path):
    backend = InMemoryBatchBackend(chat_answer)
    task = PredictionsTask(str(tmp_path), 30, backend=backend, reject_every=4, **OPTIONS)
    assert task.run() is True
    assert_complete(tmp_path, 30)
    assert all(cost_batch > 0 for _, _, cost_batch, _ in task.added.values())
    assert {retry for _, retry, _ in task.seen} == {0, 1}  # every 4th sample was retried once
    for sample, _, predicted in task.seen:
        assert predicted == task.added[sample]
