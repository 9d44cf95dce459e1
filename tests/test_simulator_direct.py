"""The simulator's direct endpoints, rate limits and faults through the real openai SDK over HTTP."""

from __future__ import annotations

import concurrent.futures
import enum
import json
import time

import openai
import pydantic
import pytest

from gpt_batch_api.encodings import get_encoding
from gpt_batch_api.simulator import Simulator, SimulatorConfig

MESSAGES = [{"role": "user", "content": "Reply with a number."}]


@pytest.fixture()
def sim():
    with Simulator(SimulatorConfig(validating_s=0.05, in_progress_s=0.15, finalizing_s=0.05)) as simulator:
        yield simulator


@pytest.fixture()
def client(sim):
    return openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)


class Answer(pydantic.BaseModel):
    value: int


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Item(pydantic.BaseModel):
    name: str
    weight: float
    colour: Colour


class Nested(pydantic.BaseModel):
    title: str
    items: list[Item]
    best: Item | None
    flags: list[bool]
    count: int


def chat(client, **kwargs):
    return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, **kwargs)


def test_structured_output_parses_with_pydantic(client):
    parsed = client.chat.completions.parse(model="gpt-4o-mini", messages=MESSAGES, response_format=Answer)
    assert isinstance(parsed.choices[0].message.parsed, Answer)
    nested = client.chat.completions.parse(model="gpt-4o-mini", messages=MESSAGES, response_format=Nested)
    value = nested.choices[0].message.parsed
    assert isinstance(value, Nested) and value.items and isinstance(value.items[0].colour, Colour)
    assert nested.choices[0].finish_reason == "stop"


def test_default_text_n_and_length(client):
    reply = chat(client)
    assert reply.choices[0].message.content and reply.choices[0].finish_reason == "stop"
    three = chat(client, n=3)
    assert [c.index for c in three.choices] == [0, 1, 2]
    encoding = get_encoding("o200k_base")
    expected = sum(len(encoding.encode(c.message.content)) for c in three.choices)
    assert three.usage.completion_tokens == expected
    assert three.usage.total_tokens == three.usage.prompt_tokens + expected
    short = chat(client, max_completion_tokens=2)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 2
    legacy = chat(client, max_tokens=1)
    assert legacy.choices[0].finish_reason == "length" and legacy.usage.completion_tokens == 1


def test_tools_forced_and_auto(client):
    tool = openai.pydantic_function_tool(Answer, name="give_answer")
    forced = client.chat.completions.parse(model="gpt-4o-mini", messages=MESSAGES, tools=[tool], tool_choice="required")
    call = forced.choices[0].message.tool_calls[0]
    assert call.function.name == "give_answer" and isinstance(call.function.parsed_arguments, Answer)
    assert forced.choices[0].finish_reason == "tool_calls"
    named = chat(client, tools=[tool], tool_choice={"type": "function", "function": {"name": "give_answer"}})
    assert json.loads(named.choices[0].message.tool_calls[0].function.arguments)["value"] is not None
    auto = chat(client, tools=[tool])
    assert auto.choices[0].message.tool_calls is None and auto.choices[0].message.content


def test_prompt_tokens_follow_openais_recipe(client):
    cases = [
        ("gpt-4o-mini", "o200k_base", [{"role": "user", "content": "Hello there, how are you today?"}]),
        (
            "gpt-4.1",
            "o200k_base",
            [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "name": "alice", "content": "Count the words in: one two three."},
                {"role": "assistant", "content": "Three."},
            ],
        ),
        ("gpt-4", "cl100k_base", [{"role": "user", "content": [{"type": "text", "text": "Part one."},
                                                                {"type": "text", "text": "Part two!"}]}]),
    ]  # fmt: skip
    for model, encoding_name, messages in cases:
        encoding = get_encoding(encoding_name)
        expected = 3  # every reply is primed with <|start|>assistant<|message|>
        for message in messages:
            expected += 3
            for key, value in message.items():
                if isinstance(value, list):
                    expected += sum(len(encoding.encode(part["text"])) for part in value)
                else:
                    expected += len(encoding.encode(value))
                if key == "name":
                    expected += 1
        usage = client.chat.completions.create(model=model, messages=messages).usage
        assert usage.prompt_tokens == expected, (model, messages)
        assert usage.prompt_tokens_details.cached_tokens == 0
        assert usage.completion_tokens_details.reasoning_tokens == 0


def test_repeated_long_prefix_is_cached(client):
    long_text = "The quick brown fox jumps over the lazy dog. " * 150
    first = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": long_text}])
    assert first.usage.prompt_tokens >= 1024 and first.usage.prompt_tokens_details.cached_tokens == 0
    again = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": long_text + "?"}])
    cached = again.usage.prompt_tokens_details.cached_tokens
    assert cached >= 1024 and cached % 128 == 0 and cached <= again.usage.prompt_tokens


def test_responses_endpoint(client):
    reply = client.responses.create(model="gpt-4o-mini", input="Say hi.", instructions="Be brief.")
    assert reply.output_text and reply.status == "completed"
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens == len(
        get_encoding("o200k_base").encode(reply.output_text)
    )
    assert reply.usage.total_tokens == reply.usage.input_tokens + reply.usage.output_tokens
    parsed = client.responses.parse(model="gpt-4o-mini", input=[{"role": "user", "content": "n?"}], text_format=Answer)
    assert isinstance(parsed.output_parsed, Answer)
    cut = client.responses.create(model="gpt-4o-mini", input="Say hi.", max_output_tokens=16)
    assert cut.status in ("completed", "incomplete")
    tiny = client.responses.create(model="gpt-4o-mini", input="Say hi.", max_output_tokens=1)
    assert tiny.status == "incomplete" and tiny.incomplete_details.reason == "max_output_tokens"


def test_embeddings_endpoint(client):
    result = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"])
    assert [d.index for d in result.data] == [0, 1] and len(result.data[0].embedding) == 1536, "the real default"
    large = client.embeddings.create(model="text-embedding-3-large", input="alpha")
    assert len(large.data[0].embedding) == 3072
    assert result.usage.prompt_tokens == 2
    again = client.embeddings.create(model="text-embedding-3-small", input="alpha", encoding_format="float")
    assert again.data[0].embedding == pytest.approx(result.data[0].embedding, rel=1e-6), "vectors are deterministic"
    assert result.data[0].embedding != result.data[1].embedding
    wide = client.embeddings.create(model="text-embedding-3-small", input="alpha", dimensions=5)
    assert len(wide.data[0].embedding) == 5
    assert sum(v * v for v in wide.data[0].embedding) == pytest.approx(1.0, rel=1e-5)


def test_models(client):
    ids = [m.id for m in client.models.list()]
    assert "gpt-4o-mini" in ids and "text-embedding-3-small" in ids
    assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_refuses_what_the_real_api_refuses(client):
    """Each case with the real status, error code and the parameter named, so a typo cannot pass a test."""
    with pytest.raises(openai.NotFoundError) as typo:
        client.chat.completions.create(model="gpt-4o-minii", messages=[{"role": "user", "content": "Hi"}])
    assert typo.value.code == "model_not_found" and "gpt-4o-minii" in typo.value.message
    cases = [
        ({"temperature": 5}, "temperature"),
        ({"messages": [{"role": "robot", "content": "Hi"}]}, "messages[0].role"),
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}},
         "response_format.json_schema.name"),
    ]  # fmt: skip
    for extra, param in cases:
        kwargs = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], **extra}
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(**kwargs)
        assert refused.value.param == param and refused.value.type == "invalid_request_error", extra
    with pytest.raises(openai.BadRequestError) as fmt:
        client.responses.create(model="gpt-4o-mini", input="Hi", text={"format": {"type": "json_schema", "schema": {}}})
    assert fmt.value.param == "text.format.name"
    with pytest.raises(openai.BadRequestError) as hexed:
        client.embeddings.create(model="text-embedding-3-small", input="a", encoding_format="hex")  # type: ignore[arg-type]
    assert hexed.value.param == "encoding_format"
    with pytest.raises(openai.BadRequestError) as wide:
        client.embeddings.create(model="text-embedding-3-small", input="a", dimensions=2000)
    assert wide.value.param == "dimensions"
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="gpt-4o-mini", input="a")


def test_bad_request_body(client):
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[])


def test_rate_limit_headers_on_every_direct_response(client, sim):
    sim.config.rpm = 100
    sim.config.tpm = 100_000
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    headers = raw.headers
    assert headers["x-ratelimit-limit-requests"] == "100" and headers["x-ratelimit-remaining-requests"] == "99"
    assert headers["x-ratelimit-limit-tokens"] == "100000"
    assert int(headers["x-ratelimit-remaining-tokens"]) == 100_000 - raw.parse().usage.prompt_tokens
    assert headers["x-ratelimit-reset-requests"].endswith("s")
    for call in (
        lambda: client.embeddings.with_raw_response.create(model="text-embedding-3-small", input="x"),
        lambda: client.responses.with_raw_response.create(model="gpt-4o-mini", input="x"),
    ):
        assert "x-ratelimit-remaining-tokens" in call().headers


def test_rpm_and_tpm_limits_answer_429_with_retry_after(client, sim):
    sim.config.rpm = 3
    for _ in range(3):
        chat(client)
    with pytest.raises(openai.RateLimitError) as caught:
        chat(client)
    response = caught.value.response
    assert caught.value.code == "rate_limit_exceeded"
    assert int(response.headers["retry-after"]) >= 1 and response.headers["x-ratelimit-remaining-requests"] == "0"
    sim.config.rpm = 0
    sim.config.tpm = 40
    chat(client, max_completion_tokens=20)
    with pytest.raises(openai.RateLimitError) as caught:
        chat(client, max_completion_tokens=20)
    assert "tokens per min" in caught.value.message and caught.value.response.headers["retry-after"]


def test_require_api_key_401_everywhere(client, sim):
    sim.config.require_api_key = "sk-right"
    for call in (lambda: chat(client), lambda: client.models.list(), lambda: client.batches.list()):
        with pytest.raises(openai.AuthenticationError) as caught:
            call()
        assert caught.value.code == "invalid_api_key"
    right = openai.OpenAI(base_url=sim.base_url, api_key="sk-right", max_retries=0)
    assert right.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices


def test_insufficient_quota(client, sim):
    sim.config.insufficient_quota = True
    with pytest.raises(openai.RateLimitError) as caught:
        chat(client)
    assert caught.value.code == "insufficient_quota" and caught.value.type == "insufficient_quota"


def test_injected_500_429_and_dropped_connections(client, sim):
    start = sim.stats()["direct_requests"]
    sim.config.http_500_rate = 1.0
    with pytest.raises(openai.InternalServerError):
        chat(client)
    sim.config.http_500_rate, sim.config.http_429_rate = 0.0, 1.0
    with pytest.raises(openai.RateLimitError) as caught:
        chat(client)
    assert caught.value.response.headers["retry-after"] == "1"
    assert "x-ratelimit-limit-requests" in caught.value.response.headers
    sim.config.http_429_rate, sim.config.drop_connection_rate = 0.0, 1.0
    with pytest.raises(openai.APIConnectionError):
        chat(client)
    sim.config.drop_connection_rate = 0.0
    assert chat(client).choices
    assert sim.stats()["direct_requests"] == start + 4


def test_fault_rates_are_seeded_and_mixed(sim):
    def outcomes() -> list[str]:
        client = openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)
        seen = []
        for _ in range(60):
            try:
                chat(client)
                seen.append("ok")
            except openai.APIStatusError as exc:
                seen.append(str(exc.status_code))
            except openai.APIConnectionError:
                seen.append("drop")
        return seen

    sim.config.http_500_rate = sim.config.http_429_rate = sim.config.drop_connection_rate = 0.2
    sim.config.seed = 11
    first = outcomes()
    assert {"ok", "500", "429", "drop"} <= set(first)
    sim.config.seed = 12
    sim.config.seed = 11  # the same seed again restarts the same sequence
    assert outcomes() == first


def test_latency_and_malformed_json(client, sim):
    sim.config.latency_ms = 150
    started = time.perf_counter()
    chat(client)
    assert time.perf_counter() - started >= 0.15
    sim.config.latency_ms = 0
    sim.config.malformed_json_rate = 1.0
    reply = chat(client, response_format={"type": "json_schema", "json_schema": {"name": "a", "strict": True,
                 "schema": Answer.model_json_schema()}})  # fmt: skip
    with pytest.raises(ValueError):
        json.loads(reply.choices[0].message.content)
    assert chat(client).choices[0].message.content, "plain text answers are not affected"


def test_responder_supplies_content():
    seen = []

    def responder(endpoint: str, body: dict):
        seen.append(endpoint)
        return {"value": 42} if endpoint == "/v1/chat/completions" else "from the responder"

    with Simulator(SimulatorConfig(), responder=responder) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)
        parsed = client.chat.completions.parse(model="gpt-4o-mini", messages=MESSAGES, response_format=Answer)
        assert parsed.choices[0].message.parsed == Answer(value=42)
        assert client.responses.create(model="gpt-4o-mini", input="x").output_text == "from the responder"
    assert seen == ["/v1/chat/completions", "/v1/responses"]


def test_straggler_rate_is_exact_over_each_100_calls_and_follows_the_seed(sim, client):
    """5% means 5 stragglers in every 100 calls (a draw per call gave 6.3% over seed 0's first 1,200 calls,
    which a heavy-tail benchmark then measured instead of the client); the places come from the seed."""
    sim.config.straggler_rate, sim.config.straggler_ms = 0.05, 3000.0
    with concurrent.futures.ThreadPoolExecutor(10) as pool:

        def timed_call(_: int) -> float:
            started = time.monotonic()
            chat(client)
            return time.monotonic() - started

        latencies = list(pool.map(timed_call, range(100)))
    assert sum(latency >= 3.0 for latency in latencies) == 5  # a plain call takes milliseconds

    def places(seed: int) -> list[int]:
        with Simulator(SimulatorConfig(seed=seed, straggler_rate=0.05)) as other:
            drawn = [other._straggler() for _ in range(1000)]
        assert [sum(drawn[i : i + 100]) for i in range(0, 1000, 100)] == [5] * 10
        return [i for i, straggler in enumerate(drawn) if straggler]

    assert places(3) == places(3) != places(4)
