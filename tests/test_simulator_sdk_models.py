"""Every simulator answer, on every route and under every fault knob, validates with the installed openai SDK's
own response models (the SDK builds its objects without validation, so a missing field would otherwise only
surface in a user's code, as ``usage.input_tokens_details.cache_write_tokens`` did for every responses answer).

Answers are recorded at the HTTP layer (an httpx response hook) while the real SDK makes the calls, then each
one is validated strictly with ``Model.model_validate``: 200 bodies with the route's model, error bodies with
``ErrorObject``, and the lines of batch output and error files with the model of the batch's endpoint.
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
from typing import Any, Literal

import httpx
import openai
import pydantic
import pytest
from openai.types import Batch, CreateEmbeddingResponse, FileDeleted, FileObject, Model
from openai.types.chat import ChatCompletion
from openai.types.responses import Response
from openai.types.shared import ErrorObject

from gpt_batch_api.results import ResponseInfo
from gpt_batch_api.simulator import Simulator, SimulatorConfig

BODY_MODELS: dict[str, type[pydantic.BaseModel]] = {
    "/v1/chat/completions": ChatCompletion,
    "/v1/responses": Response,
    "/v1/embeddings": CreateEmbeddingResponse,
}
REQUESTS: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hi."}],
                             "max_completion_tokens": 20},
    "/v1/responses": {"model": "gpt-4o-mini", "input": "Say hi.", "max_output_tokens": 20},
    "/v1/embeddings": {"model": "text-embedding-3-small", "input": ["alpha", "beta"]},
}  # fmt: skip
STRUCTURED = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "A number as JSON."}],
    "response_format": {"type": "json_schema", "json_schema": {"name": "n", "strict": True, "schema": {
        "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": False}}},
}  # fmt: skip


class _ResultResponse(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    status_code: int
    request_id: str
    body: dict[str, Any]


class _ResultLine(pydantic.BaseModel):
    """A line of a batch output or error file, as the Batch API guide documents it."""

    model_config = pydantic.ConfigDict(extra="forbid")
    id: str
    custom_id: str
    response: _ResultResponse | None
    error: dict[str, Any] | None


class _ListPage(pydantic.BaseModel):
    object: Literal["list"]
    data: list[dict[str, Any]]


@dataclasses.dataclass
class Recorded:
    method: str
    path: str
    status: int
    content: bytes


class Recorder:
    """Records every answer the SDK receives and validates it."""

    def __init__(self) -> None:
        self.answers: list[Recorded] = []
        self.batch_endpoints: dict[str, str] = {}  # output/error file id -> endpoint of its batch

    def hook(self, response: httpx.Response) -> None:
        response.read()
        request = response.request
        self.answers.append(Recorded(request.method, request.url.path, response.status_code, response.content))

    def validate(self) -> set[str]:
        """Validate every recorded answer; return the kinds seen (e.g. ``"200 POST /v1/batches"``)."""
        seen = set()
        for answer in self.answers:
            route = _route(answer.method, answer.path)
            seen.add(f"{answer.status} {route}")
            if answer.status != 200:
                body = json.loads(answer.content)
                assert set(body) == {"error"}, f"{route}: an error body has only 'error': {body}"
                ErrorObject.model_validate(body["error"])
                continue
            if route == "GET /v1/files/{id}/content":
                continue  # validated by validate_files (which knows the batch's endpoint)
            body = json.loads(answer.content)
            _validate_ok(route, body)
            if route.endswith("/v1/batches/{id}") or route == "POST /v1/batches":
                for key in ("output_file_id", "error_file_id"):
                    if body.get(key):
                        self.batch_endpoints[body[key]] = body["endpoint"]
        return seen

    def validate_files(self, client: openai.OpenAI) -> int:
        """Validate every line of every batch output/error file seen; returns how many lines."""
        count = 0
        for file_id, endpoint in self.batch_endpoints.items():
            for text in client.files.content(file_id).text.splitlines():
                try:
                    raw = json.loads(text)
                except ValueError:
                    continue  # malformed_line_rate cuts lines on purpose
                line = _ResultLine.model_validate(raw)
                count += 1
                if line.response is None:
                    assert line.error is not None and {"code", "message"} <= set(line.error)
                elif line.response.status_code == 200:
                    BODY_MODELS[endpoint].model_validate(line.response.body)
                else:
                    ErrorObject.model_validate(line.response.body["error"])
        return count


def _route(method: str, path: str) -> str:
    parts = path.split("/")
    if len(parts) >= 4 and parts[2] in ("files", "batches", "models"):
        parts[3] = "{id}"
    return f"{method} {'/'.join(parts)}"


def _validate_ok(route: str, body: Any) -> None:
    method, path = route.split(" ")
    if method == "POST" and path in BODY_MODELS:
        BODY_MODELS[path].model_validate(body)
    elif path == "/v1/models":
        for item in _ListPage.model_validate(body).data:
            Model.model_validate(item)
    elif path == "/v1/models/{id}":
        Model.model_validate(body)
    elif route == "GET /v1/files":
        for item in _ListPage.model_validate(body).data:
            FileObject.model_validate(item)
    elif route == "DELETE /v1/files/{id}":
        FileDeleted.model_validate(body)
    elif path.startswith("/v1/files"):
        FileObject.model_validate(body)
    elif route == "GET /v1/batches":
        for item in _ListPage.model_validate(body).data:
            Batch.model_validate(item)
    elif path.startswith("/v1/batches"):
        Batch.model_validate(body)
    else:
        raise AssertionError(f"no SDK model known for {route}")


@pytest.fixture()
def recorded():
    """``(sim, client, recorder)`` with fast batches; every answer is validated at the end of the test."""
    config = SimulatorConfig(validating_s=0.05, in_progress_s=0.1, finalizing_s=0.05)
    recorder = Recorder()
    with Simulator(config) as sim:
        http = httpx.Client(event_hooks={"response": [recorder.hook]})
        client = openai.OpenAI(base_url=sim.base_url, api_key="sk-models", max_retries=0, http_client=http)
        yield sim, client, recorder
        seen = recorder.validate()
        recorder.validate_files(client)
        assert seen, "nothing was recorded"


def call_direct(client: openai.OpenAI) -> None:
    """One call per direct endpoint (and a structured one); API errors are recorded, not raised."""
    for path, body in [*REQUESTS.items(), ("/v1/chat/completions", STRUCTURED)]:
        try:
            client.post(path.removeprefix("/v1"), body=body, cast_to=httpx.Response)
        except (openai.APIStatusError, openai.APIConnectionError):
            pass


def run_batch(client: openai.OpenAI, endpoint: str, n: int = 6, cancel: bool = False) -> Batch | None:
    """Upload, create, poll (and list, retrieve files) one batch; None if a call was refused."""
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": endpoint, "body": REQUESTS[endpoint]} for i in range(n)]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    try:
        upload = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
        client.files.retrieve(upload.id)
        client.files.list()
        batch = client.batches.create(input_file_id=upload.id, endpoint=endpoint, completion_window="24h")  # type: ignore[arg-type]
        if cancel:
            client.batches.cancel(batch.id)
        deadline = time.monotonic() + 10
        while batch.status not in ("completed", "failed", "expired", "cancelled") and time.monotonic() < deadline:
            time.sleep(0.02)
            batch = client.batches.retrieve(batch.id)
        client.batches.list()
        client.files.delete(upload.id)
        return batch
    except (openai.APIStatusError, openai.APIConnectionError):
        return None


def test_every_route_validates_with_the_sdk_models(recorded):
    sim, client, recorder = recorded
    call_direct(client)
    client.models.list()
    client.models.retrieve("gpt-4o-mini")
    for endpoint in REQUESTS:
        batch = run_batch(client, endpoint)
        assert batch is not None and batch.status == "completed"
    run_batch(client, "/v1/chat/completions", cancel=True)
    seen = recorder.validate()
    assert recorder.validate_files(client) >= 18
    for route in ("POST /v1/chat/completions", "POST /v1/responses", "POST /v1/embeddings", "GET /v1/models",
                  "GET /v1/models/{id}", "POST /v1/files", "GET /v1/files", "GET /v1/files/{id}",
                  "DELETE /v1/files/{id}", "POST /v1/batches", "GET /v1/batches", "GET /v1/batches/{id}",
                  "POST /v1/batches/{id}/cancel"):  # fmt: skip
        assert f"200 {route}" in seen, route


def test_a_responses_answer_becomes_the_sdk_object_our_results_give(recorded):
    """The case of the issue: ``ResultInfo.resp_info.payload`` raised for every responses answer."""
    _, client, _ = recorded
    body = client.post("/responses", body=REQUESTS["/v1/responses"], cast_to=httpx.Response).json()
    payload = ResponseInfo(endpoint="/v1/responses", body=body).payload
    assert payload.usage.input_tokens_details.cache_write_tokens == 0


# Each fault knob, set to a value that makes it act; the test below fails for a knob added without a case.
FAULTS: dict[str, Any] = {
    "latency_ms": 5.0,
    "latency_jitter_ms": 5.0,
    "load_latency_ms": 2.0,  # each call waits longer with more calls being served
    "straggler_rate": 0.5,
    "straggler_ms": 5.0,
    "max_concurrent_calls": 1,  # 503 beyond one call at once
    "ratelimit_headers": False,
    "rpm": 2,
    "tpm": 200,
    "enqueued_token_limit": 1,
    "files_api_enabled": False,
    "batches_api_enabled": False,
    "error_line_rate": 0.5,
    "fail_next_batches": 1,
    "expire_next_batches": 1,
    "missing_line_rate": 0.5,
    "malformed_line_rate": 0.5,
    "http_500_rate": 0.5,
    "http_429_rate": 0.5,
    "drop_connection_rate": 0.5,
    "http_529_rate": 1.0,  # Anthropic routes only: OpenAI answers must stay valid
    "lose_next_create_responses": 1,
    "batch_api_faults": True,
    "malformed_json_rate": 1.0,
    "insufficient_quota": True,
    "require_api_key": "sk-another",
    "seed": 7,
}
NOT_FAULTS = {"validating_s", "in_progress_s", "finalizing_s", "server_kind"}  # timing; the shape of local servers


def test_every_knob_has_a_case():
    knobs = {f.name for f in dataclasses.fields(SimulatorConfig)} - NOT_FAULTS
    assert knobs == set(FAULTS), f"add a case to FAULTS for {knobs - set(FAULTS)}"


@pytest.mark.parametrize("knob", sorted(FAULTS))
def test_answers_under_each_fault_validate_with_the_sdk_models(recorded, knob):
    sim, client, recorder = recorded
    setattr(sim.config, knob, FAULTS[knob])
    if knob == "batch_api_faults":
        sim.config.http_500_rate = 0.3
    for _ in range(3):
        call_direct(client)
    for endpoint in REQUESTS:
        run_batch(client, endpoint)
    seen = recorder.validate()
    recorder.validate_files(client)
    if knob in ("http_500_rate", "batch_api_faults"):
        assert any(s.startswith("500 ") for s in seen)
    if knob in ("http_429_rate", "rpm", "tpm", "insufficient_quota"):
        assert any(s.startswith("429 ") for s in seen)
    if knob == "require_api_key":
        assert any(s.startswith("401 ") for s in seen)
    if knob in ("files_api_enabled", "batches_api_enabled"):
        assert any(s.startswith("404 ") for s in seen)


@pytest.mark.parametrize("fault", ["none", "expire_next_batches"])
def test_batch_timestamps_stay_consistent_while_polled(recorded, fault):
    """Each status has its timestamp once it is shown, timestamps keep their order, and the batch files
    carry an expiry."""
    sim, client, _ = recorded
    if fault != "none":
        setattr(sim.config, fault, 1)
    # Long enough that a poll sees the batch running even when polls are slow (a loaded machine): the
    # timestamp checks below mean something only if a running status was seen.
    sim.config.in_progress_s = 1.0
    data = "".join(
        json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                    "body": REQUESTS["/v1/chat/completions"]}) + "\n" for i in range(5)
    ).encode()  # fmt: skip
    upload = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
    assert upload.expires_at is not None and upload.expires_at > upload.created_at
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    statuses = []
    while batch.status not in ("completed", "expired"):
        batch = client.batches.retrieve(batch.id)
        statuses.append(batch.status)
        stamp = {"in_progress": batch.in_progress_at, "finalizing": batch.finalizing_at}.get(batch.status, 0)
        assert stamp is not None, f"status {batch.status} without its timestamp"
    ended = batch.completed_at or batch.expired_at
    assert ended is not None and batch.created_at <= (batch.in_progress_at or 0) <= ended
    if batch.finalizing_at is not None:
        assert batch.in_progress_at <= batch.finalizing_at <= ended
    assert batch.output_file_id and client.files.retrieve(batch.output_file_id).expires_at is not None
    assert "finalizing" in statuses or "in_progress" in statuses
