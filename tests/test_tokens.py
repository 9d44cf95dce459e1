"""Token estimates against numbers OpenAI published, plus properties any recipe must have."""

from __future__ import annotations

import base64
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpt_batch_api.costs import TokenCoster
from gpt_batch_api.token_images import (
    IMAGE_RULES,
    _patch_tokens,
    image_rule_for_model,
    image_size_from_data_url,
    image_tokens,
)
from gpt_batch_api.tokens import TokenEstimator

CHAT = "/v1/chat/completions"
EST = TokenEstimator(warn="never")

# OpenAI cookbook "How to count tokens with tiktoken": these messages cost 127/129/124 prompt tokens.
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
        "into plain English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch "
        "base on opportunities for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]
# The same cookbook's function-calling example: 105 (gpt-3.5/gpt-4) and 101 (gpt-4o family) prompt tokens.
COOKBOOK_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "required": ["location"],
                "properties": {
                    "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
            },
        },
    }
]
COOKBOOK_TOOL_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant that can answer to questions about the weather."},
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-3.5-turbo-0301", 127),
        ("gpt-3.5-turbo-0613", 129),
        ("gpt-4-0613", 129),
        ("gpt-4", 129),
        ("gpt-4o", 124),
        ("gpt-4o-mini", 124),
    ],
)
def test_cookbook_chat_messages(model, expected):
    assert EST.payload_input_tokens({"model": model, "messages": COOKBOOK_MESSAGES}, CHAT).total == expected


@pytest.mark.parametrize(
    ("model", "expected"), [("gpt-3.5-turbo", 105), ("gpt-4", 105), ("gpt-4o", 101), ("gpt-4o-mini", 101)]
)
def test_cookbook_tools(model, expected):
    payload = {"model": model, "messages": COOKBOOK_TOOL_MESSAGES, "tools": COOKBOOK_TOOLS}
    assert EST.payload_input_tokens(payload, CHAT).total == expected


# OpenAI vision guide: tile rule examples for gpt-4o (85 base + 170 per tile) and the gpt-4o-mini constants.
@pytest.mark.parametrize(
    ("model", "size", "detail", "expected"),
    [
        ("gpt-4o", (1024, 1024), "high", 765),
        ("gpt-4o", (2048, 4096), "high", 1105),
        ("gpt-4o", (4096, 8192), "low", 85),
        ("gpt-4o-mini", (1024, 1024), "high", 2833 + 4 * 5667),
        ("gpt-4o-mini", (512, 512), "low", 2833),
    ],
)
def test_tile_rule_examples(model, size, detail, expected):
    rule, known = image_rule_for_model(model)
    assert known and image_tokens(*size, detail, rule) == expected


def test_patch_rule_examples():
    unit = IMAGE_RULES["gpt-4.1-mini"].__class__("patch", multiplier=1.0)
    assert _patch_tokens(1024, 1024, unit) == 1024  # 32 x 32 patches, within the budget
    assert _patch_tokens(1800, 2400, unit) == 1452  # scaled to fit 1536 patches: 33 x 44
    assert image_tokens(1024, 1024, "high", IMAGE_RULES["gpt-4.1-mini"]) == 1659  # x 1.62, rounded up


def png_data_url(width: int, height: int) -> str:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return "data:image/png;base64," + base64.b64encode(png + b"\x00" * 100).decode()


def jpeg_data_url(width: int, height: int) -> str:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00" + b"\x00" * 9
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8" + app0 + sof + b"\xff\xd9").decode()


def test_image_sizes_are_read_from_data_url_headers_and_counted():
    assert image_size_from_data_url(png_data_url(640, 480)) == (640, 480)
    assert image_size_from_data_url(jpeg_data_url(1920, 1080)) == (1920, 1080)
    content = [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": png_data_url(1024, 1024), "detail": "high"}},
    ]
    result = EST.payload_input_tokens({"model": "gpt-4o", "messages": [{"role": "user", "content": content}]}, CHAT)
    assert result.image == 765 and result.exact
    unknown = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    result = EST.payload_input_tokens({"model": "gpt-4o", "messages": [{"role": "user", "content": unknown}]}, CHAT)
    assert result.image == 765 and not result.exact  # assumed 1024x1024, flagged as an estimate


def test_schema_counts_once_per_schema_and_flags_estimate():
    schema = {
        "type": "json_schema",
        "json_schema": {
            "name": "Answer",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"value": {"type": "integer"}},
                "required": ["value"],
                "additionalProperties": False,
            },
        },
    }
    base = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say 3"}]}
    plain = EST.payload_input_tokens(base, CHAT)
    with_schema = EST.payload_input_tokens({**base, "response_format": schema}, CHAT)
    assert with_schema.response_format > 10 and with_schema.total == plain.total + with_schema.response_format
    assert plain.exact and not with_schema.exact


def test_output_tokens_use_limit_ratio_and_n():
    est = TokenEstimator(assumed_completion_ratio=0.5)
    assert est.payload_output_tokens({"max_completion_tokens": 100, "n": 3}, CHAT) == 150
    assert est.payload_output_tokens({"max_output_tokens": 80}, "/v1/responses") == 40
    assert est.payload_output_tokens({"input": "x"}, "/v1/embeddings") == 0
    assert TokenEstimator().payload_output_tokens({"max_tokens": 70}, CHAT) == 70  # worst case by default


def test_embeddings_and_responses_inputs():
    assert (
        EST.payload_input_tokens(
            {"model": "text-embedding-3-small", "input": [[1, 2, 3], "hello world"]}, "/v1/embeddings"
        ).total
        == 5
    )
    responses = EST.payload_input_tokens(
        {"model": "gpt-4o", "instructions": "Be brief.", "input": "hello world"}, "/v1/responses"
    )
    assert responses.total > 5 and set(responses.roles) == {"developer", "user"}


text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200)


@settings(max_examples=60, deadline=None)
@given(text, text)
def test_estimates_are_monotone_in_content_length(a, b):
    def count(s: str) -> int:
        return EST.payload_input_tokens({"model": "gpt-4o", "messages": [{"role": "user", "content": s}]}, CHAT).total

    assert count(a + " " + b) >= count(a) - 1  # a merge at the join can save at most one token


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["system", "user", "assistant"]), text), min_size=1, max_size=6))
def test_estimates_are_additive_over_messages(messages):
    msgs = [{"role": role, "content": content} for role, content in messages]

    def count(ms: list) -> int:
        return EST.payload_input_tokens({"model": "gpt-4o-mini", "messages": ms}, CHAT).total

    priming = 3
    assert count(msgs) - priming == sum(count([m]) - priming for m in msgs)


def test_costs_from_prices_and_usage():
    coster = TokenCoster(
        cost_input_direct_mtoken=2.5,
        cost_input_cached_mtoken=1.25,
        cost_input_batch_mtoken=1.25,
        cost_output_direct_mtoken=10.0,
        cost_output_batch_mtoken=5.0,
    )
    assert coster.predicted_cost(1_000_000, 100_000, batch=False) == pytest.approx(3.5)
    assert coster.predicted_cost(1_000_000, 100_000, batch=True) == pytest.approx(1.75)
    usage = {
        "prompt_tokens": 2000,
        "completion_tokens": 500,
        "prompt_tokens_details": {"cached_tokens": 1024},
        "completion_tokens_details": {"reasoning_tokens": 200},
    }
    direct = coster.usage_cost(usage, batch=False)
    assert (direct.input_tokens, direct.cached_tokens, direct.output_tokens, direct.reasoning_tokens) == (
        2000,
        1024,
        500,
        200,
    )
    assert direct.total_cost == pytest.approx((976 * 2.5 + 1024 * 1.25 + 500 * 10) / 1e6)
    batch = coster.usage_cost(usage, batch=True)
    assert batch.total_cost == pytest.approx((976 * 1.25 + 1024 * 0.625 + 500 * 5) / 1e6)
    responses = coster.usage_cost({"input_tokens": 10, "output_tokens": 4}, batch=False)
    assert responses.total_cost == pytest.approx((10 * 2.5 + 4 * 10) / 1e6)


def test_tokens_test_tool_reports_zero_difference_on_text_against_the_simulator(capsys):
    from gpt_batch_api import tokens_test

    assert tokens_test.main(["--simulate"]) == 0
    out = capsys.readouterr().out
    assert "exact rows off: none" in out
    for case in ("text", "names", "multi-part", "unicode"):
        row = next(line for line in out.splitlines() if line.startswith(case + " "))
        assert row.split()[-1] == "0" and row.split()[2] == "exact"
    # The large image differences come with their explanation (the simulator counts no image tokens).
    image = next(line for line in out.splitlines() if line.startswith("image-low "))
    assert image.split()[2] == "approx" and int(image.split()[-1]) > 1000
    assert "diff = estimate - reported" in out and "counts no image tokens" in out


def test_each_endpoint_picks_its_recipe_and_a_new_endpoint_needs_no_change_here(monkeypatch):
    from gpt_batch_api import endpoints
    from gpt_batch_api.endpoints.embeddings import EmbeddingsEndpoint
    from gpt_batch_api.tokens import InputTokens

    class Rerank(EmbeddingsEndpoint):  # a made-up endpoint with its own recipe and output limit
        path = "/v1/rerank"

        def input_tokens(self, payload, estimator):
            return InputTokens(text=7 * len(payload["documents"]), exact=False)

        def output_limit(self, payload):
            return 3

    monkeypatch.setitem(endpoints.ENDPOINTS, Rerank.path, Rerank())
    est = TokenEstimator(warn="never", assumed_completion_ratio=1.0)
    assert est.payload_input_tokens({"documents": ["a", "b"]}, "/v1/rerank").total == 14
    assert est.payload_output_tokens({"documents": []}, "/rerank") == 3
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10, "n": 2}
    assert est.payload_input_tokens(chat, CHAT).exact and est.payload_output_tokens(chat, CHAT) == 20
    claude = {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    assert not est.payload_input_tokens(claude, "/v1/messages").exact  # Claude's count is an estimate
    assert est.payload_output_tokens({"model": "gpt-4o", "messages": []}, CHAT) == 4096  # no limit: the default
    unknown = est.payload_input_tokens({"model": "gpt-4o", "x": "some text"}, "/v1/unknown")
    assert unknown.total > 0 and not unknown.exact  # no recipe: the JSON body
