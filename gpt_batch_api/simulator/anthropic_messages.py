"""Anthropic's Messages API, simulated: request checks, answers, token counts and error bodies.

The same ``AnthropicAnswerer.message`` builds the answer of ``POST /v1/messages`` and of every succeeded
line of a message batch, so a batch line carries exactly what the direct call would have returned.
Answers reuse the OpenAI side's ``Answerer`` (and so the demo tasks' responder): the Anthropic request is
read as a chat request, and the chat answer is written back as content blocks.

Claude's tokenizer is not public. The simulator counts ``ceil(1.1 * cl100k_base tokens)`` of each text,
plus ``TOKENS_PER_MESSAGE`` per message and the JSON text of tools and output schemas: a documented stand-in
that is deliberately not the estimator's method, so that the estimator's error can be measured against it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ..encodings import get_encoding
from .common import ApiError, new_id
from .direct_api import Answerer
from .tokens import count_text

__all__ = [
    "ANTHROPIC_MODELS",
    "AnthropicAnswerer",
    "anthropic_error_body",
    "claude_input_tokens",
]

ANTHROPIC_MODELS = (
    "claude-haiku-4-5",
    "claude-haiku-4-5-20251001",
    "claude-sonnet-4-5",
    "claude-sonnet-4-5-20250929",
    "claude-sonnet-4-6",
    "claude-opus-4-5",
    "claude-opus-4-6",
    "claude-haiku-5-5",
    "claude-sonnet-5-5",
    "claude-opus-5-5",
)
TOKENS_PER_MESSAGE = 4
SYSTEM_TOKENS = 3
IMAGE_TOKENS = 1_600  # a ~1 megapixel image: (width * height) / 750, Anthropic's published rule of thumb
CLAUDE_TOKEN_FACTOR = 1.1

# Anthropic's error type for each status (https://docs.anthropic.com/en/api/errors).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_PARAMS = {
    "model", "max_tokens", "messages", "system", "tools", "tool_choice", "temperature", "top_p", "top_k",
    "stop_sequences", "metadata", "output_config", "thinking", "service_tier", "cache_control",
}  # fmt: skip
_COUNT_PARAMS = {"model", "messages", "system", "tools", "tool_choice", "thinking", "output_config", "mcp_servers"}
_BLOCK_TYPES = {"text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"}


def anthropic_error_body(status: int, message: str, error_type: str | None = None) -> dict[str, Any]:
    """The JSON body Anthropic sends with an error status."""
    kind = error_type or ERROR_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": new_id("req_")}


def _invalid(message: str, status: int = 400) -> ApiError:
    error = ApiError(status, message)
    error.body = anthropic_error_body(status, message)
    return error


def _claude_count(text: str) -> int:
    return math.ceil(CLAUDE_TOKEN_FACTOR * count_text(get_encoding("cl100k_base"), text)) if text else 0


def _block_tokens(block: Any) -> int:
    if isinstance(block, str):
        return _claude_count(block)
    if not isinstance(block, dict):
        return 0
    kind = block.get("type")
    if kind == "text":
        return _claude_count(str(block.get("text", "")))
    if kind == "image":
        return IMAGE_TOKENS
    if kind == "tool_result":
        content = block.get("content")
        return sum(_block_tokens(b) for b in content) if isinstance(content, list) else _block_tokens(content)
    return _claude_count(json.dumps(block, sort_keys=True))


def claude_input_tokens(params: dict[str, Any]) -> int:
    """The simulator's input-token count of a Messages request (see the module docstring)."""
    total = 0
    system = params.get("system")
    if system:
        blocks = system if isinstance(system, list) else [system]
        total += SYSTEM_TOKENS + sum(_block_tokens(b) for b in blocks)
    for message in params.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        blocks = content if isinstance(content, list) else [content or ""]
        total += TOKENS_PER_MESSAGE + sum(_block_tokens(b) for b in blocks)
    for key in ("tools", "output_config"):
        if params.get(key):
            total += _claude_count(json.dumps(params[key], sort_keys=True))
    return total


def check_params(params: Any, *, count_only: bool = False) -> dict[str, Any]:
    """Refuse what the real Messages API refuses, naming the field like it does."""
    if not isinstance(params, dict):
        raise _invalid("The request body must be a JSON object.")
    for key in params:
        if key not in (_COUNT_PARAMS if count_only else _PARAMS):
            raise _invalid(f"{key}: Extra inputs are not permitted")
    model = params.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model: Field required")
    if model not in ANTHROPIC_MODELS:
        raise _invalid(f"model: {model}", status=404)
    if not count_only:
        max_tokens = params.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            problem = "Field required" if max_tokens is None else "Input should be a valid integer"
            raise _invalid(f"max_tokens: {problem}")
        if max_tokens < 1:
            raise _invalid("max_tokens: Input should be greater than or equal to 1")
    messages = params.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages: at least one message is required")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise _invalid(f"messages.{index}.role: Input should be 'user' or 'assistant'")
        content = message.get("content")
        if isinstance(content, list):
            for number, block in enumerate(content):
                if not isinstance(block, dict) or block.get("type") not in _BLOCK_TYPES:
                    raise _invalid(f"messages.{index}.content.{number}.type: unknown content block type")
        elif not isinstance(content, str):
            raise _invalid(f"messages.{index}.content: Input should be a valid string or list of content blocks")
    temperature = params.get("temperature")
    if temperature is not None and not (isinstance(temperature, int | float) and 0 <= temperature <= 1):
        raise _invalid("temperature: Input should be less than or equal to 1")
    _forced_schema(params)  # checks tools and tool_choice
    return params


def _forced_schema(params: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """``(tool name, input schema)`` of a forced tool, ``(None, schema)`` for a JSON output format, or Nones."""
    output_format = (params.get("output_config") or {}).get("format")
    if isinstance(output_format, dict):
        if output_format.get("type") != "json_schema" or not isinstance(output_format.get("schema"), dict):
            raise _invalid("output_config.format: expected {'type': 'json_schema', 'schema': {...}}")
        return None, output_format["schema"]
    tools = params.get("tools") or []
    if not isinstance(tools, list):
        raise _invalid("tools: Input should be a valid list")
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise _invalid(f"tools.{index}.name: Field required")
        if "type" not in tool and not isinstance(tool.get("input_schema"), dict):
            raise _invalid(f"tools.{index}.input_schema: Field required")
    choice = params.get("tool_choice")
    if choice is None:
        return None, None
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise _invalid("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    if choice["type"] == "any" and tools:
        return tools[0]["name"], tools[0].get("input_schema") or {}
    if choice["type"] == "tool":
        for tool in tools:
            if tool["name"] == choice.get("name"):
                return tool["name"], tool.get("input_schema") or {}
        raise _invalid(f"tool_choice.name: no tool named {choice.get('name')!r} in tools")
    return None, None


def _text_of(content: Any) -> Any:
    """A message's content as the chat answerer reads it: a string when it is text only."""
    if isinstance(content, str):
        return content
    parts = [b.get("text", "") for b in content if b.get("type") == "text"]
    return "".join(parts) if len(parts) == len(content) else [{"type": "text", "text": p} for p in parts]


class AnthropicAnswerer:
    """Builds Messages API answers on top of the chat ``Answerer`` (same seed, same responder)."""

    def __init__(self, answerer: Answerer) -> None:
        self.answerer = answerer

    def message(self, params: Any, batch: bool = False) -> tuple[dict[str, Any], int]:
        """Return ``(Message object, input tokens)``; raises ApiError (Anthropic's shape) for a bad request."""
        params = check_params(params)
        tool_name, schema = _forced_schema(params)
        chat: dict[str, Any] = {"model": "gpt-4o", "max_completion_tokens": params["max_tokens"]}
        messages = []
        system = params.get("system")
        if system:
            messages.append(
                {
                    "role": "system",
                    "content": _text_of([{"type": "text", "text": system}] if isinstance(system, str) else system),
                }
            )
        messages += [{"role": m["role"], "content": _text_of(m["content"])} for m in params["messages"]]
        chat["messages"] = messages
        if schema is not None:
            chat["response_format"] = {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}}
        answer, _ = self.answerer.chat(chat)
        choice = answer["choices"][0]
        text = choice["message"]["content"] or ""
        output_tokens = answer["usage"]["completion_tokens"]
        stop_reason = "max_tokens" if choice["finish_reason"] == "length" else "end_turn"
        content: list[dict[str, Any]]
        if tool_name is not None and stop_reason == "end_turn":
            content = [{"type": "tool_use", "id": new_id("toolu_"), "name": tool_name, "input": json.loads(text)}]
            stop_reason = "tool_use"
        else:
            content = [{"type": "text", "text": text}]
        input_tokens = claude_input_tokens(params)
        usage = {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "service_tier": "batch" if batch else "standard",
        }
        message = {
            "id": new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": params["model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }
        return message, input_tokens

    @staticmethod
    def count_tokens(params: Any) -> dict[str, int]:
        return {"input_tokens": claude_input_tokens(check_params(params, count_only=True))}


def is_custom_id(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value) is not None
