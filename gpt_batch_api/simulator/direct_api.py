"""Answer bodies of the direct endpoints: chat completions, responses, embeddings and models.

The same functions produce the ``body`` of every batch output line, so a batch line carries exactly what the
direct endpoint would have returned for the same request.
"""

from __future__ import annotations

import base64
import json
import math
import random
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any

from .answers import default_text, value_for_schema
from .common import ApiError, new_id
from .tokens import (
    PrefixCache,
    chat_prompt_tokens,
    count_text,
    embedding_input_tokens,
    embedding_inputs,
    encoding_for,
    responses_input_tokens,
)
from .validation import EMBEDDING_MODELS, validate_request

__all__ = ["ENDPOINTS", "MODELS", "Answerer", "Responder", "model_object"]

Responder = Callable[[str, dict[str, Any]], "str | dict[str, Any] | None"]
ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/embeddings")
MODELS = (
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "o3-mini",
    "o4-mini",
    "gpt-4",
    "gpt-3.5-turbo",
    "text-embedding-3-small",
    "text-embedding-3-large",
)


def model_object(model: str, server_kind: str = "openai") -> dict[str, Any]:
    """A /v1/models entry as the OpenAI API, vLLM or Ollama lists it."""
    owner = {"openai": "system", "vllm": "vllm", "ollama": "library"}[server_kind]
    return {"id": model, "object": "model", "created": 1_700_000_000, "owned_by": owner}


def _require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "you must provide a model parameter", param="model")
    return model


def _max_tokens(body: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                raise ApiError(
                    400, f"Invalid '{key}': integer below minimum value 1.", param=key, code="integer_below_min_value"
                )
            return value
    return None


def _forced_tool(body: dict[str, Any], responses: bool) -> dict[str, Any] | None:
    """The tool definition a request forces (tool_choice "required" or a named function), else None."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"]
    choice = body.get("tool_choice")
    if not tools or choice in (None, "auto", "none"):
        return None
    specs = [t if responses else t.get("function", {}) for t in tools]
    if choice == "required":
        return specs[0]
    if isinstance(choice, dict):
        name = choice.get("name") if responses else (choice.get("function") or {}).get("name")
        for spec in specs:
            if spec.get("name") == name:
                return spec
        raise ApiError(
            400, f"Invalid value for 'tool_choice': no function named {name!r} in 'tools'.", param="tool_choice"
        )
    return None


class Answerer:
    """Builds answer bodies; ``responder`` may supply the content text of chat and responses answers."""

    def __init__(self, seed_fn: Callable[[], int], responder: Responder | None = None) -> None:
        self._seed_fn = seed_fn
        self.responder = responder
        self.prefix_cache = PrefixCache()

    def answer(self, endpoint: str, body: Any, malformed: bool = False) -> tuple[dict[str, Any], int]:
        """Return ``(response body, prompt tokens)`` for ``endpoint``; raises ApiError for a bad request."""
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        if endpoint in ENDPOINTS:
            validate_request(endpoint, body, MODELS)
        if endpoint == "/v1/chat/completions":
            return self.chat(body, malformed)
        if endpoint == "/v1/responses":
            return self.responses(body, malformed)
        if endpoint == "/v1/embeddings":
            return self.embeddings(body)
        raise ApiError(404, f"Invalid URL (POST {endpoint})")

    def _rng(self, body: dict[str, Any], key: str) -> random.Random:
        return random.Random(self._seed_fn() * 1_000_003 + zlib.crc32(repr(body.get(key)).encode()))

    def _content(
        self, endpoint: str, body: dict[str, Any], schema: dict[str, Any] | None, json_mode: bool, rng: random.Random
    ) -> str:
        if self.responder is not None:
            supplied = self.responder(endpoint, body)
            if isinstance(supplied, str):
                return supplied
            if supplied is not None:
                return json.dumps(supplied)
        if schema is not None:
            return json.dumps(value_for_schema(schema, rng))
        if json_mode:
            return json.dumps({"answer": default_text(rng)})
        return default_text(rng)

    def _cached(self, model: str, body: dict[str, Any], key: str, prompt_tokens: int) -> int:
        if prompt_tokens < PrefixCache.MIN_TOKENS:
            return 0
        return self.prefix_cache.cached_tokens(model, json.dumps(body.get(key)), prompt_tokens)

    def chat(self, body: dict[str, Any], malformed: bool = False) -> tuple[dict[str, Any], int]:
        model = _require_model(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(
                400, "Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter"
            )
        n = body.get("n") or 1
        if not isinstance(n, int) or not 1 <= n <= 128:
            raise ApiError(400, f"Invalid 'n': expected an integer from 1 to 128, got {n!r}.", param="n")
        limit = _max_tokens(body, "max_completion_tokens", "max_tokens")
        response_format = body.get("response_format") or {}
        schema, json_mode = None, False
        if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema") or {}
        json_mode = isinstance(response_format, dict) and response_format.get("type") == "json_object"
        tool = _forced_tool(body, responses=False)
        encoding = encoding_for(model)
        rng = self._rng(body, "messages")
        choices, completion_tokens = [], 0
        for index in range(n):
            message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None, "annotations": []}
            if tool is not None:
                arguments = json.dumps(value_for_schema(tool.get("parameters") or {}, rng))
                call = {
                    "id": new_id("call_"),
                    "type": "function",
                    "function": {"name": tool.get("name"), "arguments": arguments},
                }
                message["tool_calls"] = [call]
                finish = "tool_calls" if body.get("tool_choice") == "required" else "stop"
                completion_tokens += count_text(encoding, arguments) + count_text(encoding, str(tool.get("name")))
            else:
                content = self._content("/v1/chat/completions", body, schema, json_mode, rng)
                if malformed and (schema is not None or json_mode):
                    content = content[: max(1, len(content) // 2)]
                tokens = encoding.encode_ordinary(content)
                finish = "stop"
                if limit is not None and len(tokens) > limit:
                    tokens = tokens[:limit]
                    content = encoding.decode(tokens)
                    finish = "length"
                message["content"] = content
                completion_tokens += len(tokens)
            choices.append({"index": index, "message": message, "logprobs": None, "finish_reason": finish})
        prompt_tokens = chat_prompt_tokens(body)
        cached = self._cached(model, body, "messages", prompt_tokens)
        answer = {
            "id": new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": "fp_simulator",
        }
        return answer, prompt_tokens

    def responses(self, body: dict[str, Any], malformed: bool = False) -> tuple[dict[str, Any], int]:
        model = _require_model(body)
        if body.get("input") in (None, "", []):
            raise ApiError(
                400, "Missing required parameter: 'input'.", param="input", code="missing_required_parameter"
            )
        limit = _max_tokens(body, "max_output_tokens")
        text_format = (body.get("text") or {}).get("format") or {"type": "text"}
        schema = text_format.get("schema") or {} if text_format.get("type") == "json_schema" else None
        json_mode = text_format.get("type") == "json_object"
        tool = _forced_tool(body, responses=True)
        encoding = encoding_for(model)
        rng = self._rng(body, "input")
        status, incomplete = "completed", None
        if tool is not None:
            arguments = json.dumps(value_for_schema(tool.get("parameters") or {}, rng))
            item: dict[str, Any] = {
                "type": "function_call",
                "id": new_id("fc_"),
                "call_id": new_id("call_"),
                "name": tool.get("name"),
                "arguments": arguments,
                "status": "completed",
            }
            output_tokens = count_text(encoding, arguments) + count_text(encoding, str(tool.get("name")))
        else:
            content = self._content("/v1/responses", body, schema, json_mode, rng)
            if malformed and (schema is not None or json_mode):
                content = content[: max(1, len(content) // 2)]
            tokens = encoding.encode_ordinary(content)
            if limit is not None and len(tokens) > limit:
                tokens = tokens[:limit]
                content = encoding.decode(tokens)
                status, incomplete = "incomplete", {"reason": "max_output_tokens"}
            output_tokens = len(tokens)
            item = {
                "type": "message",
                "id": new_id("msg_"),
                "status": status,
                "role": "assistant",
                "content": [{"type": "output_text", "text": content, "annotations": [], "logprobs": []}],
            }
        input_tokens = responses_input_tokens(body)
        cached = self._cached(model, body, "input", input_tokens)
        answer = {
            "id": new_id("resp_"),
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "error": None,
            "incomplete_details": incomplete,
            "instructions": body.get("instructions"),
            "max_output_tokens": limit,
            "model": model,
            "output": [item],
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "temperature": body.get("temperature", 1.0),
            "top_p": body.get("top_p", 1.0),
            "text": {"format": text_format},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "metadata": body.get("metadata") or {},
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            },
        }
        return answer, input_tokens

    def embeddings(self, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        model = _require_model(body)
        inputs = embedding_inputs(body)
        if not inputs or any(item in ("", []) for item in inputs):
            raise ApiError(400, "'input' must be a non-empty string or a list of non-empty inputs.", param="input")
        dims = body.get("dimensions") or EMBEDDING_MODELS[model]
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, item in enumerate(inputs):
            rng = random.Random(f"{self._seed_fn()}:{model}:{item}")
            vector = [rng.gauss(0.0, 1.0) for _ in range(dims)]
            norm = math.sqrt(sum(v * v for v in vector)) or 1.0
            vector = [v / norm for v in vector]
            embedding: Any = vector
            if as_base64:
                embedding = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = embedding_input_tokens(body)
        answer = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return answer, tokens
