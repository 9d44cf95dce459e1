"""The SDK object a task reads (``resp_info.payload``) for an answer the SDK's types refuse.

A compatible server (vLLM, a gateway, a proxy) may answer with a status or a stop reason the SDK does not know,
or leave out a field the SDK requires. Such an answer was paid for and holds what the task needs: reading it as
the SDK's object must give the object (built without validation, as the SDK builds what it receives), not raise
a ValidationError in the task's code. Each body is a real answer of the simulator, one field changed.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from gpt_batch_api.endpoints import get_endpoint
from gpt_batch_api.simulator import Simulator, SimulatorConfig

CALLS = {
    "/v1/responses": {"model": "gpt-4o-mini", "input": "Say hi."},
    "/v1/embeddings": {"model": "text-embedding-3-small", "input": "hi"},
    "/v1/messages": {"model": "claude-sonnet-4-5", "max_tokens": 20, "messages": [{"role": "user", "content": "Hi"}]},
}
HEADERS = {"Authorization": "Bearer sk-test", "x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}


def real_answer(path: str) -> dict[str, Any]:
    with Simulator(SimulatorConfig()) as sim:
        url = sim.base_url.removesuffix("/v1") + path
        answer = requests.post(url, json=CALLS[path], headers=HEADERS, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.mark.parametrize(
    ("path", "field", "foreign", "kept"),
    [
        ("/v1/responses", "status", "aborted", lambda obj: obj.output_text),
        ("/v1/embeddings", "object", "embedding_list", lambda obj: obj.data[0].embedding),
        ("/v1/messages", "stop_reason", "abort", lambda obj: obj.content[0].text),
    ],
)
def test_an_answer_with_a_value_the_sdk_does_not_know_is_still_its_object(path, field, foreign, kept):
    body = real_answer(path)
    endpoint = get_endpoint(path)
    expected = kept(endpoint.to_sdk_object(body, None))
    assert expected, "the simulator's answer has nothing to keep"
    changed = {**body, field: foreign}
    obj = endpoint.to_sdk_object(changed, None)
    assert getattr(obj, field) == foreign
    assert kept(obj) == expected


@pytest.mark.parametrize(
    ("path", "required"), [("/v1/responses", "id"), ("/v1/embeddings", "model"), ("/v1/messages", "id")]
)
def test_an_answer_without_a_field_the_sdk_requires_is_still_its_object(path, required):
    body = real_answer(path)
    del body[required]
    obj = get_endpoint(path).to_sdk_object(body, None)
    assert not hasattr(obj, required) or getattr(obj, required, None) is None
    assert obj.usage is not None
