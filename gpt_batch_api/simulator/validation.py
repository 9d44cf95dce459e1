"""Refuse what the real API refuses, with its error shape: an unknown model (404 ``model_not_found``) and
invalid parameters (400 ``invalid_request_error`` naming the parameter). A simulator that accepts a model
name typo or ``temperature`` 5 lets a task pass every test and then fail against a real server."""

from __future__ import annotations

import re
from typing import Any

from .common import ApiError

__all__ = ["CHAT_ROLES", "EMBEDDING_MODELS", "validate_request"]

EMBEDDING_MODELS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072}  # native dimensions
CHAT_ROLES = ("system", "assistant", "user", "function", "tool", "developer")
_SCHEMA_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def validate_request(endpoint: str, body: dict[str, Any], models: tuple[str, ...]) -> str:
    """Check ``body`` for ``endpoint`` as the real API does; return the model. Raises ApiError."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "you must provide a model parameter", param="model", code="missing_required_parameter")
    if model not in models:
        raise ApiError(
            404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found"
        )
    embedding = endpoint == "/v1/embeddings"
    if embedding != (model in EMBEDDING_MODELS):
        what = "an embedding model" if embedding else "a chat model"
        raise ApiError(400, f"The model `{model}` is not {what} and is not supported by {endpoint}.", param="model")
    if embedding:
        _check_embeddings(body, model)
        return model
    _check_range(body, "temperature", 2.0)
    _check_range(body, "top_p", 1.0)
    if endpoint == "/v1/chat/completions":
        _check_messages(body)
        response_format = body.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
            _check_schema_name(response_format.get("json_schema"), "response_format.json_schema")
    else:
        text_format = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
        if isinstance(text_format, dict) and text_format.get("type") == "json_schema":
            _check_schema_name(text_format, "text.format")
    return model


def _invalid_value(param: str, value: Any, allowed: tuple[str, ...]) -> ApiError:
    listed = ", ".join(f"'{a}'" for a in allowed[:-1]) + f", and '{allowed[-1]}'"
    return ApiError(
        400, f"Invalid value: '{value}'. Supported values are: {listed}.", param=param, code="invalid_value"
    )


def _check_range(body: dict[str, Any], key: str, maximum: float) -> None:
    value = body.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(400, f"Invalid type for '{key}': expected a decimal, but got a {type(value).__name__} instead.",
                       param=key, code="invalid_type")  # fmt: skip
    if value > maximum:
        raise ApiError(
            400,
            f"Invalid '{key}': decimal above maximum value. Expected a value <= {maximum:g}, but got {value} instead.",
            param=key,
            code="decimal_above_max_value",
        )
    if value < 0:
        raise ApiError(
            400,
            f"Invalid '{key}': decimal below minimum value. Expected a value >= 0, but got {value} instead.",
            param=key,
            code="decimal_below_min_value",
        )


def _check_messages(body: dict[str, Any]) -> None:
    for index, message in enumerate(body.get("messages") or []):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in CHAT_ROLES:
            raise _invalid_value(f"messages[{index}].role", role, CHAT_ROLES)


def _check_schema_name(spec: Any, where: str) -> None:
    name = spec.get("name") if isinstance(spec, dict) else None
    if name is None:
        raise ApiError(
            400,
            f"Missing required parameter: '{where}.name'.",
            param=f"{where}.name",
            code="missing_required_parameter",
        )
    if not isinstance(name, str) or not _SCHEMA_NAME.match(name):
        raise ApiError(
            400,
            f"Invalid '{where}.name': string does not match pattern. Expected a string that matches the pattern "
            "'^[a-zA-Z0-9_-]+$' (at most 64 characters).",
            param=f"{where}.name",
            code="invalid_value",
        )


def _check_embeddings(body: dict[str, Any], model: str) -> None:
    encoding_format = body.get("encoding_format")
    if encoding_format is not None and encoding_format not in ("float", "base64"):
        raise _invalid_value("encoding_format", encoding_format, ("float", "base64"))
    dims = body.get("dimensions")
    if dims is not None and (
        isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= EMBEDDING_MODELS[model]
    ):
        raise ApiError(
            400,
            f"Invalid 'dimensions': expected an integer from 1 to {EMBEDDING_MODELS[model]} for {model}, got {dims!r}.",
            param="dimensions",
            code="invalid_value",
        )
