"""Offline prediction of a request's input tokens (and assumed output tokens) before it is sent.

Chat messages follow OpenAI's published counting recipe (3 tokens per message, 1 per ``name``, 3 to
prime the reply; the role and every string field are encoded), which is exact for text. Tools follow
the cookbook's function-definition recipe. Images follow ``token_images``. Response-format schemas and
Responses-API items are counted by encoding their JSON, which is an estimate: those parts are flagged
in the breakdown, and the run compares predictions with the API's ``usage`` (see
``--warn_predicted_input_factor`` and ``python -m gpt_batch_api.tokens_test``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from typing import Any

import tiktoken

from .encodings import encoding_for_model, get_encoding
from .endpoints import ENDPOINTS, Endpoint
from .endpoints.base import requested_output_limit
from .endpoints.messages import messages_input_tokens
from .token_images import image_rule_for_model, image_size_from_data_url, image_tokens

__all__ = ["InputTokens", "TokenEstimator"]

log = logging.getLogger(__name__)

WARN_MODES = ("once", "always", "never")
ASSUMED_IMAGE_SIZE = (1024, 1024)
DEFAULT_MAX_OUTPUT_TOKENS = 4096  # assumed when a request sets no output limit (warned about)
RESPONSE_FORMAT_OVERHEAD = 8  # wrapper tokens around a JSON schema (estimate)


@dataclasses.dataclass
class InputTokens:
    """Predicted prompt tokens of one request, by part; ``total`` is what limits and costs use."""

    fixed: int = 0  # per-message and reply-priming overhead
    roles: dict[str, int] = dataclasses.field(default_factory=dict)  # message tokens by role
    text: int = 0
    image: int = 0
    response_format: int = 0
    tools: int = 0
    functions: int = 0
    exact: bool = True  # False when any part is an estimate (schemas, unknown image sizes or models)

    @property
    def total(self) -> int:
        return self.fixed + self.text + self.image + self.response_format + self.tools + self.functions


@dataclasses.dataclass(frozen=True)
class _ToolConstants:
    func_init: int
    prop_init: int = 3
    prop_key: int = 3
    enum_init: int = -3
    enum_item: int = 3
    func_end: int = 12


class TokenEstimator:
    """``payload_input_tokens(payload, endpoint).total`` and ``payload_output_tokens(payload, endpoint)``."""

    def __init__(self, assumed_completion_ratio: float | None = None, warn: str = "once") -> None:
        if warn not in WARN_MODES:
            raise ValueError(f"warn must be one of {WARN_MODES}, not {warn!r}")
        if assumed_completion_ratio is not None and not 0 <= assumed_completion_ratio <= 1:
            raise ValueError("assumed_completion_ratio must be between 0 and 1")
        # Worst case by default: cost caps must hold even if every request uses its whole output budget.
        self.assumed_completion_ratio = 1.0 if assumed_completion_ratio is None else assumed_completion_ratio
        self.warn_mode = warn
        self._warned: set[str] = set()
        self.allow_image_fetch = False

    # ------------------------------------------------------------------ warnings

    def _warn(self, key: str, msg: str) -> None:
        if self.warn_mode == "never" or (self.warn_mode == "once" and key in self._warned):
            return
        self._warned.add(key)
        log.warning("Token estimate: %s", msg)

    def _encoding(self, model: str) -> tiktoken.Encoding:
        encoding, known = _cached_encoding_for_model(model)
        if not known:
            self._warn(f"model:{model}", f"unknown model {model!r}, counting with o200k_base")
        return encoding

    # ------------------------------------------------------------------ input

    def payload_input_tokens(self, payload: dict[str, Any], endpoint: str) -> InputTokens:
        """Predicted input tokens of ``payload`` sent to ``endpoint`` (the endpoint picks its recipe below)."""
        recipe = _endpoint(endpoint)
        if recipe is None:
            self._warn(f"endpoint:{endpoint}", f"no recipe for {endpoint}; counting the JSON body")
            return self.json_body(payload)
        return recipe.input_tokens(payload, self)

    # The recipes, one per request shape; each endpoint's ``input_tokens`` says which applies.

    def json_body(self, payload: dict[str, Any]) -> InputTokens:
        """The JSON text of the whole body (an estimate, for a shape with no recipe)."""
        enc = self._encoding(str(payload.get("model", "")))
        return InputTokens(text=len(enc.encode(json.dumps(payload, default=str))), exact=False)

    def claude_messages(self, payload: dict[str, Any]) -> InputTokens:
        """Anthropic Messages: Claude's tokenizer is not public, so a high-side estimate (endpoints/messages.py)."""
        return InputTokens(text=messages_input_tokens(payload, _count_cl100k), exact=False)

    def chat(self, payload: dict[str, Any]) -> InputTokens:
        model = str(payload.get("model", ""))
        enc = self._encoding(model)
        legacy = model.startswith("gpt-3.5-turbo-0301")
        per_message, per_name = (4, -1) if legacy else (3, 1)
        result = InputTokens(fixed=3)  # every reply is primed with <|start|>assistant<|message|>
        for message in payload.get("messages", ()):
            content = message.get("content")
            if len(message) == 2 and type(content) is str and type(message.get("role")) is str:
                # The common shape, {"role", "content": text}: the general loop below, without its bookkeeping.
                role = message["role"]
                tokens = _count(enc, content) + _count(enc, role)
                result.fixed += per_message
                result.text += tokens
                result.roles[role] = result.roles.get(role, 0) + tokens + per_message
                continue
            role = str(message.get("role", ""))
            before = result.text + result.image + result.fixed
            result.fixed += per_message
            for key, value in message.items():
                if key == "content":
                    self._content(value, enc, model, result)
                elif key == "name":
                    result.fixed += per_name
                    result.text += _count(enc, str(value))
                elif key == "tool_calls":
                    result.text += _count(enc, json.dumps(value, separators=(",", ":")))
                    result.exact = False
                elif isinstance(value, str):
                    result.text += _count(enc, value)
            result.roles[role] = result.roles.get(role, 0) + result.text + result.image + result.fixed - before
        if payload.get("tools"):
            result.tools = self._tools([t for t in payload["tools"] if t.get("type") == "function"], model)
        if payload.get("functions"):
            result.functions = self._tools([{"function": f} for f in payload["functions"]], model)
        response_format = payload.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
            result.response_format = self._schema_tokens(response_format.get("json_schema", {}), model)
            result.exact = False
        return result

    def _content(self, content: Any, enc: tiktoken.Encoding, model: str, result: InputTokens) -> None:
        if isinstance(content, str):
            result.text += _count(enc, content)
            return
        for part in content or ():
            kind = part.get("type")
            if kind in ("text", "input_text", "output_text"):
                result.text += _count(enc, part.get("text", ""))
            elif kind in ("image_url", "input_image"):
                image = part.get("image_url")
                url = image.get("url", "") if isinstance(image, dict) else str(image or "")
                detail = (image.get("detail") if isinstance(image, dict) else None) or part.get("detail") or "auto"
                result.image += self._image(url, detail, model, result)
            else:
                result.text += _count(enc, json.dumps(part, separators=(",", ":")))
                result.exact = False

    def _image(self, url: str, detail: str, model: str, result: InputTokens) -> int:
        rule, known = image_rule_for_model(model)
        if not known:
            self._warn(f"image-model:{model}", f"no image rule for {model!r}; using the gpt-4o rule")
            result.exact = False
        size = image_size_from_data_url(url)
        if size is None:
            size = ASSUMED_IMAGE_SIZE
            result.exact = False
            self._warn("image-url", f"image size unknown for a URL image; assuming {size[0]}x{size[1]}")
        return image_tokens(size[0], size[1], detail, rule)

    def _tools(self, tools: list[dict[str, Any]], model: str) -> int:
        key = json.dumps(tools, sort_keys=True, separators=(",", ":"), default=str)
        return _tool_tokens(key, _tool_family(model), _encoding_name(model))

    def _schema_tokens(self, schema: dict[str, Any], model: str) -> int:
        key = json.dumps(schema, sort_keys=False, separators=(",", ":"), default=str)
        return _json_tokens(key, _encoding_name(model)) + RESPONSE_FORMAT_OVERHEAD

    def responses(self, payload: dict[str, Any]) -> InputTokens:
        model = str(payload.get("model", ""))
        enc = self._encoding(model)
        result = InputTokens(fixed=3)
        if payload.get("instructions"):
            result.fixed += 3
            result.text += _count(enc, str(payload["instructions"]))
            result.roles["developer"] = result.text + 3
        items = payload.get("input", "")
        if isinstance(items, str):
            items = [{"role": "user", "content": items}]
        for item in items:
            role = str(item.get("role", item.get("type", "")))
            before = result.text + result.image + result.fixed
            result.fixed += 3
            if "content" in item:
                self._content(item["content"], enc, model, result)
                result.text += _count(enc, role)
            else:
                result.text += _count(enc, json.dumps(item, separators=(",", ":")))
                result.exact = False
            result.roles[role] = result.roles.get(role, 0) + result.text + result.image + result.fixed - before
        tools = [{"function": t} if "function" not in t else t for t in payload.get("tools", ()) if t.get("name")]
        if tools:
            result.tools = self._tools(tools, model)
        text_format = (payload.get("text") or {}).get("format")
        if isinstance(text_format, dict) and text_format.get("type") == "json_schema":
            result.response_format = self._schema_tokens(text_format, model)
            result.exact = False
        return result

    def embeddings(self, payload: dict[str, Any]) -> InputTokens:
        model = str(payload.get("model", ""))
        data = payload.get("input", "")
        enc = get_encoding("cl100k_base") if model.startswith("text-embedding") else self._encoding(model)
        if isinstance(data, str):
            return InputTokens(text=_count(enc, data))
        if data and isinstance(data[0], int):
            return InputTokens(text=len(data))
        total = 0
        for item in data:
            total += len(item) if isinstance(item, list) else _count(enc, str(item))
        return InputTokens(text=total)

    # ------------------------------------------------------------------ output

    def payload_output_tokens(self, payload: dict[str, Any], endpoint: str) -> int:
        """Assumed output tokens: the request's output limit x completion ratio x number of choices."""
        return round(self.payload_output_limit(payload, endpoint) * self.assumed_completion_ratio)

    def payload_output_limit(self, payload: dict[str, Any], endpoint: str, *, warn: bool = True) -> int:
        """The most output tokens the request allows: its output limit x number of outputs (the endpoint's)."""
        recipe = _endpoint(endpoint)
        limit = recipe.output_limit(payload) if recipe is not None else requested_output_limit(payload)
        if limit is None:
            if warn:
                self._warn("no-limit", f"a request sets no output token limit; assuming {DEFAULT_MAX_OUTPUT_TOKENS}")
            limit = DEFAULT_MAX_OUTPUT_TOKENS
            if recipe is not None:
                limit *= recipe.num_outputs(payload)
        return limit


def _endpoint(path: str) -> Endpoint | None:
    """The endpoint of ``path``, given with or without its ``/v1`` prefix (None: no such endpoint)."""
    return ENDPOINTS.get(path if path.startswith("/v1") else f"/v1{path}")


def _count_cl100k(text: str) -> int:
    return _count(get_encoding("cl100k_base"), text)


def _count(enc: tiktoken.Encoding, text: str) -> int:
    """Tokens of ``text`` as the API counts user text (special-token strings are plain text there)."""
    if len(text) <= 24:
        return _count_short(enc.name, text)
    return len(enc.encode_ordinary(text))


@functools.lru_cache(maxsize=65536)
def _count_short(encoding_name: str, text: str) -> int:
    """Roles, names and short values repeat in every request: count each once."""
    return len(get_encoding(encoding_name).encode_ordinary(text))


@functools.lru_cache(maxsize=256)
def _cached_encoding_for_model(model: str) -> tuple[tiktoken.Encoding, bool]:
    return encoding_for_model(model)


def _encoding_name(model: str) -> str:
    return _cached_encoding_for_model(model)[0].name


def _tool_family(model: str) -> _ToolConstants:
    if model.startswith(("gpt-3.5", "gpt-4-", "gpt-4")) and not model.startswith(("gpt-4o", "gpt-4.")):
        return _ToolConstants(func_init=10)
    return _ToolConstants(func_init=7)


@functools.lru_cache(maxsize=4096)
def _json_tokens(text: str, encoding_name: str) -> int:
    return len(get_encoding(encoding_name).encode(text))


@functools.lru_cache(maxsize=4096)
def _tool_tokens(tools_json: str, consts: _ToolConstants, encoding_name: str) -> int:
    """The cookbook's recipe for function definitions (counted once per distinct tool list)."""
    enc = get_encoding(encoding_name)
    total = 0
    for tool in json.loads(tools_json):
        function = tool.get("function", tool)
        total += consts.func_init
        desc = str(function.get("description", "")).removesuffix(".")
        total += _count(enc, f"{function.get('name', '')}:{desc}")
        properties = (function.get("parameters") or {}).get("properties") or {}
        if properties:
            total += consts.prop_init
            for name, prop in properties.items():
                total += consts.prop_key
                if "enum" in prop:
                    total += consts.enum_init
                    for item in prop["enum"]:
                        total += consts.enum_item + _count(enc, str(item))
                p_desc = str(prop.get("description", "")).removesuffix(".")
                total += _count(enc, f"{name}:{prop.get('type', 'object')}:{p_desc}")
    return total + consts.func_end
