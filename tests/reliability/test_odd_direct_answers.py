"""Direct calls answered by an odd OpenAI-compatible server (a local server, a gateway, a homemade proxy).

Each case is a real run of the numbers task (``--force_direct``) against the simulator, some of whose chat
answers are changed on the way: a 200 whose body is JSON but not a chat completion's shape, a ``usage`` that
is not token counts, a ``retry-after`` that is not a number of seconds. The run must complete (no traceback,
no stall), every sample answered, each answer bought once unless it had to be asked again, the recorded cost
a sane number, and the task must load and finish again on a rerun.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from gpt_batch_api.direct import PAGES_IN_A_ROW_STOP
from gpt_batch_api.errors import ServerRefusedError
from gpt_batch_api.results import BatchResult
from gpt_batch_api.simulator import Simulator, SimulatorConfig

from ..support.helpers import assert_complete, read_records
from ..support.numbers_task import NumbersTask
from . import Ledger
from .test_fault_matrix import DIRECT, DirectFaults, answer_counts, make_task

NUM = 12
FAULTY = 5  # the first answers changed on the way


def changed_body(change: Any) -> Any:
    """A fault for ``DirectFaults(after_answer=True)``: the simulator's real answer, its JSON body changed."""

    def fault(answer: tuple[int, bytes, dict[str, str], str]) -> tuple[int, bytes, dict[str, str], str]:
        body = json.loads(answer[1])
        change(body)
        return 200, json.dumps(body).encode(), answer[2], "application/json"

    return fault


def run_twice(
    tmp_path: Path, fault: Any, count: int = FAULTY, task_cls: type[NumbersTask] = NumbersTask
) -> tuple[dict[str, int], dict[str, Any]]:
    """Run the task with ``fault`` on the first ``count`` chat answers, then again (it must load and have nothing
    left to do); the answers the server produced per sample, and the requester's totals."""
    ledger = Ledger()
    with Simulator(SimulatorConfig(), responder=ledger) as sim:
        faults = DirectFaults(sim, count, fault, after_answer=True)
        base = {"wandb": False, "progress": False, "client_base_url": sim.base_url, "openai_api_key": "sk-test"}
        assert task_cls(str(tmp_path), NUM, max_retries=2, **base, **DIRECT).run() is True
        assert faults.served == count
        assert task_cls(str(tmp_path), NUM, max_retries=2, **base, **DIRECT).run() is True
    records = assert_complete(tmp_path, NUM)
    assert all(r.error is None for r in records), [r.error for r in records if r.error]
    totals = json.loads((tmp_path / "numbers_state.json").read_text())["totals"]
    return answer_counts(ledger), totals


def set_choices(value: Any) -> Any:
    return lambda body: body.__setitem__("choices", value)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(set_choices({"0": {"message": {"content": "{}"}}}), id="choices_an_object"),
        pytest.param(set_choices("the answer"), id="choices_a_string"),
        pytest.param(set_choices([None]), id="choice_null"),
        pytest.param(lambda body: body["choices"][0].__setitem__("message", "the answer"), id="message_a_string"),
    ],
)
def test_a_200_in_another_shape_than_a_chat_completion_is_asked_again_not_a_crash(tmp_path, change):
    counts, _ = run_twice(tmp_path, changed_body(change))
    # The changed answers could not be read: each of those samples is asked once more, the others once.
    assert sorted(counts.values()) == [1] * (NUM - FAULTY) + [2] * FAULTY


def content_as_parts(body: dict[str, Any]) -> None:
    message = body["choices"][0]["message"]
    text = message["content"]
    message["content"] = [{"type": "thinking", "thinking": [{"type": "text", "text": "{not the answer"}]},
                          {"type": "text", "text": text[:3]}, {"type": "text", "text": text[3:]}]  # fmt: skip


def test_a_content_sent_as_a_list_of_parts_is_read_as_its_text_not_bought_again(tmp_path):
    """Mistral's API and gateways in front of it send a message's content as parts (thinking, then text): the
    structured answer is in the text parts, and the task reads that text as the SDK's string content."""
    seen = []

    class Reading(NumbersTask):
        def process_batch_result(self, result: BatchResult) -> bool:
            seen.extend(info.resp_info.payload.choices[0].message.content for info in result.infos.values())
            return super().process_batch_result(result)

    counts, _ = run_twice(tmp_path, changed_body(content_as_parts), task_cls=Reading)
    assert set(counts.values()) == {1}, "an answer in parts is still the answer: bought once"
    assert len(seen) == NUM and all(isinstance(text, str) and json.loads(text) for text in seen), seen


def in_a_code_block(body: dict[str, Any]) -> None:
    message = body["choices"][0]["message"]
    message["content"] = "```json\n" + message["content"] + "\n```\n"


def test_structured_output_in_a_markdown_code_block_is_read_not_bought_again(tmp_path):
    """Local models that do not enforce response_format (Ollama, llama.cpp without a grammar) often wrap the JSON
    in a code block: the same answer would come again on each retry, and the sample would fail."""
    counts, _ = run_twice(tmp_path, changed_body(in_a_code_block))
    assert set(counts.values()) == {1}, "an answer in a code block is still the answer: bought once"


def set_usage(*path: str, value: Any) -> Any:
    def change(body: dict[str, Any]) -> None:
        target = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(set_usage("usage", value="many"), id="usage_a_string"),
        pytest.param(set_usage("usage", value=[12, 5]), id="usage_a_list"),
        pytest.param(set_usage("usage", "prompt_tokens", value="twelve"), id="tokens_a_word"),
        pytest.param(set_usage("usage", "prompt_tokens", value={"n": 12}), id="tokens_an_object"),
        pytest.param(set_usage("usage", "prompt_tokens", value=-1_000_000), id="tokens_negative"),
        pytest.param(set_usage("usage", "prompt_tokens", value=10**30), id="tokens_absurd"),
        pytest.param(set_usage("usage", "prompt_tokens", value=1e308), id="tokens_a_huge_float"),
        pytest.param(set_usage("usage", "prompt_tokens_details", value="none"), id="details_a_string"),
        pytest.param(set_usage("usage", "completion_tokens_details", value=[0]), id="details_a_list"),
        pytest.param(set_usage("usage", "prompt_tokens_details", value={"cached_tokens": "x"}), id="cached_a_word"),
    ],
)
def test_a_usage_that_is_not_token_counts_keeps_the_answer_and_a_sane_cost(tmp_path, change):
    counts, totals = run_twice(tmp_path, changed_body(change))
    assert set(counts.values()) == {1}, "an answer with an odd usage is still the answer: bought once"
    cost = totals["true_cost_direct"]
    # 12 small requests cost well under a cent; a negative or absurd count must not reach the totals
    assert math.isfinite(cost) and 0 < cost < 0.01, cost
    assert 0 <= totals["cached_tokens"] <= totals["prompt_tokens"] < 10_000, totals


@pytest.mark.timeout(60)
@pytest.mark.parametrize("retry_after", ["nan", "-5"])
def test_a_retry_after_that_is_not_a_number_of_seconds_neither_stalls_nor_skips_the_backoff(tmp_path, retry_after):
    def busy(_: Any) -> tuple[int, bytes, dict[str, str], str]:
        body = {"error": {"message": "busy", "type": "server_error"}}
        return 503, json.dumps(body).encode(), {"retry-after": retry_after}, "application/json"

    ledger = Ledger()
    with Simulator(SimulatorConfig(), responder=ledger) as sim:
        faults = DirectFaults(sim, FAULTY, busy)
        assert make_task(tmp_path, sim.base_url, NUM, max_retries=2, **DIRECT).run() is True
    assert faults.served == FAULTY
    records = assert_complete(tmp_path, NUM)
    assert all(r.error is None and r.retry_num == 0 for r in records)
    assert set(answer_counts(ledger).values()) == {1}
    retry_gaps = [b - a for a, b in zip(faults.times, faults.times[1:], strict=False) if b - a > 0.05]
    assert retry_gaps, "the engine must back off on its own when retry-after is not a number of seconds"


class PayloadTask(NumbersTask):
    """Reads every answer as the SDK's object (``resp_info.payload``), as task code does."""

    def process_batch_result(self, result: BatchResult) -> bool:
        for info in result.infos.values():
            if info.resp_info is not None and info.err_info is None:
                payload = info.resp_info.payload
                assert payload.choices[0].message.parsed == info.resp_info.parsed[0]
        return super().process_batch_result(result)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda body: body["choices"][0].__setitem__("finish_reason", "abort"), id="finish_reason_abort"),
        pytest.param(lambda body: body["choices"][0].__setitem__("finish_reason", None), id="finish_reason_null"),
        pytest.param(lambda body: body.pop("id"), id="no_id"),
    ],
)
def test_an_answer_the_sdk_types_refuse_is_still_readable_as_the_sdk_object(tmp_path, change):
    ledger = Ledger()
    with Simulator(SimulatorConfig(), responder=ledger) as sim:
        faults = DirectFaults(sim, FAULTY, changed_body(change), after_answer=True)
        base = {"wandb": False, "progress": False, "client_base_url": sim.base_url, "openai_api_key": "sk-test"}
        assert PayloadTask(str(tmp_path), NUM, max_retries=2, **base, **DIRECT).run() is True
    assert faults.served == FAULTY
    records = assert_complete(tmp_path, NUM)
    assert all(r.error is None for r in records)
    assert set(answer_counts(ledger).values()) == {1}, "a readable answer must not be bought again"


def test_json_after_a_byte_order_mark_is_read_not_bought_again(tmp_path):
    """RFC 8259 lets a parser ignore a leading UTF-8 BOM; a server that always sends one (some Windows proxies)
    would otherwise have every answer thrown away and bought again, up to max_attempts x max_retries times."""

    def with_bom(answer: tuple[int, bytes, dict[str, str], str]) -> tuple[int, bytes, dict[str, str], str]:
        return answer[0], b"\xef\xbb\xbf" + answer[1], answer[2], answer[3]

    ledger = Ledger()
    with Simulator(SimulatorConfig(), responder=ledger) as sim:
        faults = DirectFaults(sim, 10**6, with_bom, after_answer=True)
        assert make_task(tmp_path, sim.base_url, NUM, max_retries=2, **DIRECT).run() is True
    assert faults.served == NUM
    records = assert_complete(tmp_path, NUM)
    assert all(r.error is None for r in records)
    assert set(answer_counts(ledger).values()) == {1}


def test_an_error_sent_with_http_200_is_named_in_the_failure(tmp_path, caplog):
    """A gateway that answers an upstream error with HTTP 200: the samples fail with the gateway's words, not as
    a count of choices that hides them."""
    message = "litellm.BadRequestError: upstream key invalid"

    def error_200(answer: tuple[int, bytes, dict[str, str], str]) -> tuple[int, bytes, dict[str, str], str]:
        return (
            200,
            json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode(),
            {},
            "application/json",
        )

    ledger = Ledger()
    with Simulator(SimulatorConfig(), responder=ledger) as sim:
        DirectFaults(sim, 10**6, error_200, after_answer=True)
        assert make_task(tmp_path, sim.base_url, NUM, max_retries=1, **DIRECT).run() is True
    records = assert_complete(tmp_path, NUM)
    assert {r.error for r in records} == {"ErrorBody"}
    assert message in caplog.text
    assert set(answer_counts(ledger).values()) == {2}, "asked once and retried once (max_retries 1), no more"


def test_a_server_that_streams_unasked_stops_the_run_and_the_rerun_after_the_fix_completes(tmp_path):
    """Server-sent events for a call that asked for no stream (a proxy forcing stream=true): every answer would
    be thrown away and bought again up to max_attempts x (max_retries + 1) times, then failed. The run stops at
    the first one instead, marking nothing failed; once the server answers JSON the advised rerun completes."""

    def streamed(answer: tuple[int, bytes, dict[str, str], str]) -> tuple[int, bytes, dict[str, str], str]:
        return 200, b"data: " + answer[1] + b"\n\ndata: [DONE]\n\n", {}, "text/event-stream"

    ledger = Ledger()
    with Simulator(SimulatorConfig(), responder=ledger) as sim:
        faults = DirectFaults(sim, 10**6, streamed, after_answer=True)
        with pytest.raises(ServerRefusedError, match="no stream was asked for.*rerun the same command"):
            make_task(tmp_path, sim.base_url, NUM, max_retries=2, direct_concurrency=4, **DIRECT).run()
        assert read_records(tmp_path) == [], "no sample may be marked failed by a stop"
        bought = faults.served
        assert bought <= 4, "only the calls in flight when the first stream came were bought"
        faults.left = 0  # the proxy is fixed
        assert make_task(tmp_path, sim.base_url, NUM, max_retries=2, direct_concurrency=4, **DIRECT).run() is True
    records = assert_complete(tmp_path, NUM)
    assert all(r.error is None and r.retry_num == 0 for r in records)
    assert sum(answer_counts(ledger).values()) == NUM + bought


def test_a_web_page_answered_with_200_stops_the_run_and_the_rerun_after_the_fix_completes(tmp_path):
    """A login page or a web UI answering 200 (a gateway's portal, a base URL that is not the API's): each call
    used to be sent again up to max_attempts x (max_retries + 1) times and then failed. The run stops after
    PAGES_IN_A_ROW_STOP pages with no other answer (a few passing ones are retried: test_fault_matrix), marking
    nothing failed and naming --client_base_url; once the API answers, the advised rerun completes."""

    def page(answer: tuple[int, bytes, dict[str, str], str]) -> tuple[int, bytes, dict[str, str], str]:
        return 200, b"\n<!DOCTYPE html><html><body>Please sign in</body></html>", {}, "text/html"

    ledger = Ledger()
    with Simulator(SimulatorConfig(), responder=ledger) as sim:
        faults = DirectFaults(sim, 10**6, page, after_answer=True)
        with pytest.raises(
            ServerRefusedError,
            match="10 direct calls .* in a row with a web page.*Check --client_base_url.*rerun the same command",
        ):
            make_task(tmp_path, sim.base_url, NUM, max_retries=2, direct_concurrency=4, **DIRECT).run()
        assert read_records(tmp_path) == [], "no sample may be marked failed by a stop"
        sent = faults.served
        assert sent <= PAGES_IN_A_ROW_STOP + 3, "calls went on after the tenth page in a row"
        faults.left = 0  # the base URL is fixed
        assert make_task(tmp_path, sim.base_url, NUM, max_retries=2, direct_concurrency=4, **DIRECT).run() is True
    records = assert_complete(tmp_path, NUM)
    assert all(r.error is None and r.retry_num == 0 for r in records)
    assert sum(answer_counts(ledger).values()) == NUM + sent
