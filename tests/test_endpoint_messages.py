"""The Messages endpoint (Anthropic) on real simulator answers: structured output through a forced tool,
error lines for refusals, cut answers and schema mismatches, and the offline input-token estimate."""

from __future__ import annotations

import json

import anthropic
import pydantic
import pytest

from gpt_batch_api.demo_tasks.char_codes import CharAnswer, prompt_for
from gpt_batch_api.demo_tasks.responder import demo_responder
from gpt_batch_api.encodings import get_encoding
from gpt_batch_api.endpoints.messages import MessagesEndpoint, messages_input_tokens
from gpt_batch_api.simulator import Simulator, SimulatorConfig

ENDPOINT = MessagesEndpoint()
SYSTEM = "You are an expert on Unicode. Answer precisely."


def _payload(char: str, max_tokens: int = 200) -> dict:
    return {
        "model": "claude-haiku-4-5",
        "max_tokens": max_tokens,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": prompt_for(char)}],
        "response_format": CharAnswer,
    }


@pytest.fixture(scope="module")
def sim():
    with Simulator(SimulatorConfig(), responder=demo_responder) as simulator:
        yield simulator


def _send(sim: Simulator, body: dict) -> dict:
    client = anthropic.Anthropic(api_key="x", base_url=sim.base_url.removesuffix("/v1"), max_retries=0)
    return json.loads(client.messages.with_raw_response.create(**body).text())


def test_structured_output_round_trip_through_a_forced_tool(sim):
    body, spec = ENDPOINT.prepare(_payload("Ж"))
    assert "response_format" not in body and body["tool_choice"] == {"type": "tool", "name": "structured_output"}
    assert spec is not None
    answer = _send(sim, body)
    parsed = ENDPOINT.parse(answer, 1, spec)
    assert not parsed.errors and isinstance(parsed.parsed[0], CharAnswer)
    assert parsed.parsed[0].character == "Ж"
    assert ENDPOINT.to_sdk_object(answer, parsed.parsed).content[0].type == "tool_use"


def test_cut_refused_and_mismatched_answers_are_retryable_errors(sim):
    body, spec = ENDPOINT.prepare(_payload("Ж", max_tokens=2))
    cut = ENDPOINT.parse(_send(sim, body), 1, spec)
    assert [e.subtype for e in cut.errors] == ["FinishLength"] and not cut.errors[0].fatal
    plain = ENDPOINT.parse(_send(sim, {k: v for k, v in body.items() if k not in ("tools", "tool_choice")}), 1, None)
    assert [w.subtype for w in plain.warnings] == ["FinishLength"] and not plain.errors

    refused = {"content": [{"type": "text", "text": "I can't help."}], "stop_reason": "refusal"}
    assert [e.subtype for e in ENDPOINT.parse(refused, 1, spec).errors] == ["Refusal"]
    call = {"type": "tool_use", "name": "structured_output", "input": {"x": 1}}
    wrong = {"content": [call], "stop_reason": "tool_use"}
    assert [e.subtype for e in ENDPOINT.parse(wrong, 1, spec).errors] == ["ParseError"]
    assert [e.subtype for e in ENDPOINT.parse({"content": None}, 1, spec).errors] == ["MalformedBody"]


def test_input_estimate_is_conservative_against_the_servers_count(sim):
    """The offline estimate is never below the simulator's count on the demo prompts, and within 25 % of it."""
    cl100k = get_encoding("cl100k_base")
    client = anthropic.Anthropic(api_key="x", base_url=sim.base_url.removesuffix("/v1"), max_retries=0)
    ratios = []
    for char in "AžЖ€ʃ˥Ωѣ":
        payload = _payload(char)
        body, _ = ENDPOINT.prepare(payload)
        counted = client.messages.count_tokens(
            model=body["model"], system=body["system"], messages=body["messages"], tools=body["tools"]
        ).input_tokens
        estimate = messages_input_tokens(payload, lambda text: len(cl100k.encode_ordinary(text)))
        ratios.append(estimate / counted)
    assert 1.0 <= min(ratios) and max(ratios) <= 1.25, ratios


class _Strict(pydantic.BaseModel):
    value: int


def test_prepare_refuses_a_response_format_that_is_not_a_model():
    with pytest.raises(TypeError):
        ENDPOINT.prepare({"model": "m", "max_tokens": 5, "messages": [], "response_format": {"type": "json"}})
    body, spec = ENDPOINT.prepare({"model": "m", "max_tokens": 5, "messages": [], "response_format": _Strict})
    assert body["tools"][0]["input_schema"]["properties"]["value"]["type"] == "integer" and spec


def test_anthropic_usage_counts_cache_reads_and_writes_as_input():
    from gpt_batch_api.costs import TokenCoster, usage_tokens

    usage = {"input_tokens": 100, "cache_creation_input_tokens": 50, "cache_read_input_tokens": 850}
    usage["output_tokens"] = 40
    assert usage_tokens(usage) == (1000, 850, 40, 0)
    coster = TokenCoster(1.0, 0.1, 0.5, 5.0, 2.5)  # Claude Haiku 4.5 prices per million; batch at half
    cost = coster.usage_cost(usage, batch=True)
    assert cost.input_cost == pytest.approx((150 * 0.5 + 850 * 0.05) / 1e6) and cost.output_cost == 40 * 2.5 / 1e6
