"""The simulator's Anthropic routes, driven by the official ``anthropic`` SDK over HTTP.

Every answer body is validated with the SDK's own response models (``model_validate`` on the raw JSON: the
SDK's client parsing is lenient and would hide a missing field), on each route and each fault knob.
"""

from __future__ import annotations

import json
import time
import urllib.request

import anthropic  # a dev dependency: these tests never skip
import pytest
from anthropic.types import ErrorResponse, Message, MessageTokensCount
from anthropic.types.messages import (
    DeletedMessageBatch,
    MessageBatch,
    MessageBatchIndividualResponse,
)

from gpt_batch_api.simulator import Simulator, SimulatorConfig

MODEL = "claude-haiku-4-5"
QUESTION = [{"role": "user", "content": "Give the Unicode code point of the character 'A'."}]
SCHEMA = {
    "type": "object",
    "properties": {"code_point": {"type": "string"}, "name": {"type": "string"}},
    "required": ["code_point", "name"],
    "additionalProperties": False,
}


@pytest.fixture
def sim():
    config = SimulatorConfig(validating_s=0.05, in_progress_s=0.3, finalizing_s=0.05, require_api_key="sk-ant-test")
    with Simulator(config) as simulator:
        yield simulator


def client(sim: Simulator, key: str = "sk-ant-test"):
    return anthropic.Anthropic(api_key=key, base_url=sim.base_url.removesuffix("/v1"), max_retries=0)


def raw_json(response) -> dict:
    return json.loads(response.http_response.read() if hasattr(response, "http_response") else response.read())


def test_messages_text_tool_and_json_output_validate_with_the_sdk(sim):
    raw = client(sim).messages.with_raw_response.create(model=MODEL, max_tokens=100, messages=QUESTION)
    message = Message.model_validate(json.loads(raw.text()))
    assert message.content[0].type == "text" and message.content[0].text
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert message.usage.service_tier == "standard"
    assert raw.headers["anthropic-ratelimit-requests-remaining"].isdigit()

    tool = {"name": "answer", "description": "The answer.", "input_schema": SCHEMA}
    raw = client(sim).messages.with_raw_response.create(
        model=MODEL, max_tokens=200, messages=QUESTION, tools=[tool], tool_choice={"type": "tool", "name": "answer"}
    )
    message = Message.model_validate(json.loads(raw.text()))
    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert block.type == "tool_use" and block.name == "answer" and set(block.input) == {"code_point", "name"}

    raw = client(sim).messages.with_raw_response.create(
        model=MODEL,
        max_tokens=200,
        messages=QUESTION,
        output_config={"format": {"type": "json_schema", "schema": SCHEMA}},
    )
    message = Message.model_validate(json.loads(raw.text()))
    assert set(json.loads(message.content[0].text)) == {"code_point", "name"}

    raw = client(sim).messages.with_raw_response.create(model=MODEL, max_tokens=2, messages=QUESTION)
    assert Message.model_validate(json.loads(raw.text())).stop_reason == "max_tokens"


def test_count_tokens_matches_the_usage_of_the_same_request(sim):
    raw = client(sim).messages.with_raw_response.count_tokens(model=MODEL, messages=QUESTION, system="Be brief.")
    counted = MessageTokensCount.model_validate(json.loads(raw.text())).input_tokens
    message = client(sim).messages.create(model=MODEL, max_tokens=50, messages=QUESTION, system="Be brief.")
    assert counted == message.usage.input_tokens > 0


def _error(exc_info) -> ErrorResponse:
    return ErrorResponse.model_validate(exc_info.value.response.json())


@pytest.mark.parametrize(
    ("params", "error_class", "status", "words"),
    [
        ({"model": "claude-haiku-4-6-typo"}, "NotFoundError", 404, "claude-haiku-4-6-typo"),
        ({"extra_body": {"temperature": 5}}, "BadRequestError", 400, "temperature"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "BadRequestError", 400, "role"),
        ({"max_tokens": 0}, "BadRequestError", 400, "max_tokens"),
        ({"extra_body": {"frequency_penalty": 1}}, "BadRequestError", 400, "frequency_penalty"),
    ],
)
def test_refuses_what_the_real_api_refuses(sim, params, error_class, status, words):
    kwargs = {"model": MODEL, "max_tokens": 50, "messages": QUESTION, **params}
    with pytest.raises(getattr(anthropic, error_class)) as exc_info:
        client(sim).messages.create(**kwargs)
    assert exc_info.value.status_code == status
    assert words in _error(exc_info).error.message


def test_wrong_key_missing_version_quota_529_and_429(sim):
    with pytest.raises(anthropic.AuthenticationError) as exc_info:
        client(sim, key="sk-ant-wrong").messages.create(model=MODEL, max_tokens=5, messages=QUESTION)
    assert _error(exc_info).error.type == "authentication_error"

    request = urllib.request.Request(
        sim.base_url + "/messages",
        data=json.dumps({"model": MODEL, "max_tokens": 5, "messages": QUESTION}).encode(),
        headers={"x-api-key": "sk-ant-test", "content-type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as http_error:
        urllib.request.urlopen(request, timeout=5)
    body = ErrorResponse.model_validate(json.loads(http_error.value.read()))
    assert http_error.value.code == 400 and "anthropic-version" in body.error.message

    sim.config.insufficient_quota = True
    with pytest.raises(anthropic.BadRequestError) as exc_info:
        client(sim).messages.create(model=MODEL, max_tokens=5, messages=QUESTION)
    assert "credit balance" in _error(exc_info).error.message
    sim.config.insufficient_quota = False

    sim.config.http_529_rate = 1.0
    with pytest.raises(anthropic.APIStatusError) as exc_info:
        client(sim).messages.create(model=MODEL, max_tokens=5, messages=QUESTION)
    assert exc_info.value.status_code == 529 and _error(exc_info).error.type == "overloaded_error"
    sim.config.http_529_rate = 0.0

    sim.config.rpm = 2
    for _ in range(2):
        client(sim).messages.create(model=MODEL, max_tokens=5, messages=QUESTION)
    with pytest.raises(anthropic.RateLimitError) as exc_info:
        client(sim).messages.create(model=MODEL, max_tokens=5, messages=QUESTION)
    assert _error(exc_info).error.type == "rate_limit_error"
    headers = exc_info.value.response.headers
    assert int(headers["retry-after"]) >= 1 and headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert headers["anthropic-ratelimit-requests-reset"].endswith("Z")


def _requests(n: int, model: str = MODEL) -> list[dict]:
    return [
        {"custom_id": f"task-b000001-r{i:06d}", "params": {"model": model, "max_tokens": 50, "messages": QUESTION}}
        for i in range(n)
    ]


def _wait_ended(batches, batch_id: str) -> MessageBatch:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        batch = MessageBatch.model_validate(json.loads(batches.with_raw_response.retrieve(batch_id).text()))
        if batch.processing_status == "ended":
            return batch
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} did not end")


def _results(batches, batch_id: str) -> dict[str, MessageBatchIndividualResponse]:
    lines = {}
    for entry in batches.results(batch_id):
        line = MessageBatchIndividualResponse.model_validate(entry.model_dump(mode="json"))
        lines[line.custom_id] = line
    return lines


def test_batch_lifecycle_results_and_delete(sim):
    batches = client(sim).messages.batches
    requests = _requests(4)
    requests[3]["params"]["model"] = "claude-typo"  # an invalid request is an errored line, not a refused batch
    created = MessageBatch.model_validate(json.loads(batches.with_raw_response.create(requests=requests).text()))
    assert created.processing_status == "in_progress" and created.request_counts.processing == 4
    with pytest.raises(anthropic.BadRequestError):  # a batch in progress cannot be deleted
        batches.delete(created.id)
    ended = _wait_ended(batches, created.id)
    assert ended.request_counts.succeeded == 3 and ended.request_counts.errored == 1
    assert ended.results_url and ended.ended_at is not None
    lines = _results(batches, created.id)
    assert set(lines) == {r["custom_id"] for r in requests}
    assert lines["task-b000001-r000003"].result.type == "errored"
    error = lines["task-b000001-r000003"].result.error.error
    assert error.type == "not_found_error" and "claude-typo" in error.message  # as the direct call answers
    assert all(lines[f"task-b000001-r{i:06d}"].result.type == "succeeded" for i in range(3))
    assert lines["task-b000001-r000000"].result.message.usage.service_tier == "batch"
    deleted = DeletedMessageBatch.model_validate(json.loads(batches.with_raw_response.delete(created.id).text()))
    assert deleted.id == created.id
    with pytest.raises(anthropic.NotFoundError):
        batches.retrieve(created.id)


def test_batch_refuses_bad_custom_ids(sim):
    batches = client(sim).messages.batches
    for bad in ("has space", "x" * 65, ""):
        requests = _requests(1)
        requests[0]["custom_id"] = bad
        with pytest.raises(anthropic.BadRequestError) as exc_info:
            batches.create(requests=requests)
        assert "custom_id" in _error(exc_info).error.message
    with pytest.raises(anthropic.BadRequestError) as exc_info:
        batches.create(requests=_requests(1) + _requests(1))
    assert "duplicate" in _error(exc_info).error.message


def test_cancel_expiry_errored_lines_and_list_pagination(sim):
    batches = client(sim).messages.batches
    sim.config.in_progress_s = 30.0
    cancelled = batches.create(requests=_requests(6))
    canceling = MessageBatch.model_validate(json.loads(batches.with_raw_response.cancel(cancelled.id).text()))
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
    assert _wait_ended(batches, cancelled.id).request_counts.canceled == 6
    assert {line.result.type for line in _results(batches, cancelled.id).values()} == {"canceled"}

    sim.config.in_progress_s = 0.2
    sim.config.expire_next_batches = 1
    expired = batches.create(requests=_requests(10))
    counts = _wait_ended(batches, expired.id).request_counts
    assert counts.expired == 5 and counts.succeeded == 5
    sim.config.error_line_rate = 1.0
    errored = batches.create(requests=_requests(3))
    lines = _results(batches, _wait_ended(batches, errored.id).id)
    assert {line.result.error.error.type for line in lines.values()} <= {"overloaded_error", "api_error"}
    sim.config.error_line_rate = 0.0

    created_ids = [cancelled.id, expired.id, errored.id]
    listed = [batch.id for batch in batches.list(limit=1)]  # the SDK follows has_more/last_id page by page
    assert listed == list(reversed(created_ids))
    page = batches.list(limit=2, before_id=created_ids[0])
    assert [b.id for b in page.data] == list(reversed(created_ids[1:]))


def test_a_lost_create_response_still_creates_the_batch(sim):
    sim.config.lose_next_create_responses = 1
    with pytest.raises(anthropic.APIConnectionError):
        client(sim).messages.batches.create(requests=_requests(2))
    listed = list(client(sim).messages.batches.list())
    assert len(listed) == 1 and listed[0].request_counts.processing + listed[0].request_counts.succeeded == 2
