"""``/v1/messages``: Anthropic's Messages API (its batch lines carry the same bodies).

Structured output: a pydantic model as ``response_format`` becomes a forced tool whose ``input_schema`` is
the model's JSON schema (``tool_choice: {"type": "tool"}``), the way every Claude model supports; the tool
call's ``input`` is validated back into the model. A refusal, an answer cut at ``max_tokens`` or an input
that does not match the schema is a retryable error line, as for OpenAI.

Input tokens: Claude's tokenizer is not public, so they are estimated offline and on the high side:
``ceil(1.2 * cl100k_base tokens)`` of every text, plus 5 per message, plus the JSON text of tools and
schemas at the same rate, plus ``IMAGE_TOKENS`` per image (see ``messages_input_tokens``).
"""

from __future__ import annotations

import functools
import json
import math
from typing import TYPE_CHECKING, Any

import pydantic

from .base import Endpoint, ParsedBody, ParseSpec, class_spec, resolve_class, retryable, sdk_object, warning

if TYPE_CHECKING:
    from ..tokens import InputTokens, TokenEstimator

__all__ = ["MessagesEndpoint", "messages_input_tokens", "tool_for"]

STRUCTURED_TOOL = "structured_output"
TOKEN_FACTOR = 1.2  # Claude tokens per cl100k token, on the high side (the simulator's stand-in uses 1.1)
TOKENS_PER_MESSAGE = 5
IMAGE_TOKENS = 1_600  # a ~1 megapixel image: width * height / 750


@functools.lru_cache(maxsize=256)
def tool_for(cls: type[pydantic.BaseModel]) -> dict[str, Any]:
    """The forced tool that carries ``cls`` as its input schema (built once per class; read-only)."""
    return {
        "name": STRUCTURED_TOOL,
        "description": f"Answer with a {cls.__name__} object.",
        "input_schema": cls.model_json_schema(),
    }


def messages_input_tokens(payload: dict[str, Any], count_text: Any) -> int:
    """Estimated input tokens of a Messages payload; ``count_text(text)`` counts cl100k_base tokens."""
    total = 0
    system = payload.get("system")
    if system:
        total += TOKENS_PER_MESSAGE + _blocks(system, count_text)
    for message in payload.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if type(content) is str:  # the common shape: one text
            total += TOKENS_PER_MESSAGE + (math.ceil(TOKEN_FACTOR * count_text(content)) if content else 0)
        else:
            total += TOKENS_PER_MESSAGE + _blocks(content, count_text)
    response_format = payload.get("response_format")
    tools = list(payload.get("tools") or ())
    if isinstance(response_format, type) and issubclass(response_format, pydantic.BaseModel):
        tools.append(tool_for(response_format))
    if tools:
        total += _scaled(json.dumps(tools, sort_keys=True), count_text)
    return total


def _scaled(text: str, count_text: Any) -> int:
    return math.ceil(TOKEN_FACTOR * count_text(text)) if text else 0


def _blocks(content: Any, count_text: Any) -> int:
    return sum(_block(b, count_text) for b in (content if isinstance(content, list) else [content]))


def _block(value: Any, count_text: Any) -> int:
    if isinstance(value, str):
        return _scaled(value, count_text)
    if not isinstance(value, dict):
        return 0
    kind = value.get("type")
    if kind == "text":
        return _scaled(str(value.get("text", "")), count_text)
    if kind == "image":
        return IMAGE_TOKENS
    content = value.get("content")
    if kind == "tool_result" and isinstance(content, list):
        return sum(_block(b, count_text) for b in content)
    return _scaled(json.dumps(value, sort_keys=True), count_text)


class MessagesEndpoint(Endpoint):
    path = "/v1/messages"

    def prepare(self, payload: dict[str, Any]) -> tuple[dict[str, Any], ParseSpec | None]:
        response_format = payload.get("response_format")
        if response_format is None:
            return payload, None
        if not (isinstance(response_format, type) and issubclass(response_format, pydantic.BaseModel)):
            raise TypeError("response_format of a Messages request must be a pydantic model class")
        body = {key: value for key, value in payload.items() if key != "response_format"}
        body["tools"] = [*(payload.get("tools") or []), tool_for(response_format)]
        body["tool_choice"] = {"type": "tool", "name": STRUCTURED_TOOL}
        return body, class_spec(response_format)

    def input_tokens(self, payload: dict[str, Any], estimator: TokenEstimator) -> InputTokens:
        return estimator.claude_messages(payload)

    def parse(self, body: dict[str, Any], num_outputs: int, spec: ParseSpec | None) -> ParsedBody:
        result = ParsedBody()
        content = body.get("content")
        stop = body.get("stop_reason")
        if not isinstance(content, list):
            result.errors.append(retryable("MalformedBody", "the message has no content list"))
            return result
        if stop == "refusal":
            result.errors.append(retryable("Refusal", "the model refused to answer"))
        cls = resolve_class(spec) if spec is not None else None
        if stop == "max_tokens":
            cut = "output cut at max_tokens"
            (result.errors if cls is not None else result.warnings).append(
                retryable("FinishLength", cut) if cls is not None else warning("FinishLength", cut)
            )
        if cls is None:
            return result
        calls = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_use"]
        call = next((b for b in calls if b.get("name") == STRUCTURED_TOOL), None)
        value = None
        if not result.errors:
            if call is None:
                result.errors.append(retryable("NoContent", f"the answer has no {STRUCTURED_TOOL} tool call"))
            else:
                try:
                    value = cls.model_validate(call.get("input"))
                except pydantic.ValidationError as exc:
                    message = f"the response does not match {cls.__name__}: {exc.errors()[:2]}"
                    result.errors.append(retryable("ParseError", message))
        result.parsed = [value]
        return result

    def to_sdk_object(self, body: dict[str, Any], parsed: list[Any] | None) -> Any:
        from ..backends.anthropic_backend import import_anthropic

        return sdk_object(import_anthropic().types.Message, body)
