"""``/v1/responses``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pydantic

from .base import (
    Endpoint,
    ParsedBody,
    ParseSpec,
    class_spec,
    parse_model,
    resolve_class,
    response_format_for,
    retryable,
    sdk_object,
    warning,
)

if TYPE_CHECKING:
    from ..tokens import InputTokens, TokenEstimator


class ResponsesEndpoint(Endpoint):
    path = "/v1/responses"

    def prepare(self, payload: dict[str, Any]) -> tuple[dict[str, Any], ParseSpec | None]:
        cls = payload.get("text_format")
        text = payload.get("text") or {}
        if cls is None and isinstance(text, dict):
            cls = text.get("format")
        if not (isinstance(cls, type) and issubclass(cls, pydantic.BaseModel)):
            return payload, None
        body = {k: v for k, v in payload.items() if k != "text_format"}
        schema = response_format_for(cls)["json_schema"]
        body["text"] = {
            **(text if isinstance(text, dict) else {}),
            "format": {"type": "json_schema", **schema},
        }
        return body, class_spec(cls)

    def input_tokens(self, payload: dict[str, Any], estimator: TokenEstimator) -> InputTokens:
        return estimator.responses(payload)

    def parse(self, body: dict[str, Any], num_outputs: int, spec: ParseSpec | None) -> ParsedBody:
        result = ParsedBody()
        status = body.get("status")
        if status == "incomplete":
            reason = (body.get("incomplete_details") or {}).get("reason", "unknown")
            target = result.errors if spec is not None or reason != "max_output_tokens" else result.warnings
            make = retryable if target is result.errors else warning
            target.append(make("Incomplete", f"the response is incomplete ({reason})"))
        elif status not in (None, "completed"):
            result.errors.append(retryable("Status", f"the response has status {status!r}"))
        texts: list[str] = []
        for item in body.get("output") or []:
            if item.get("type") != "message":
                continue
            for part in item.get("content") or []:
                if part.get("type") == "refusal":
                    result.errors.append(retryable("Refusal", f"the model refused: {part.get('refusal')}"))
                elif part.get("type") == "output_text":
                    texts.append(part.get("text", ""))
        if spec is not None:
            value = None
            if not result.errors:
                value, error = parse_model(resolve_class(spec), "".join(texts) if texts else None)
                if error is not None:
                    result.errors.append(error)
            result.parsed = [value]
        return result

    def to_sdk_object(self, body: dict[str, Any], parsed: list[Any] | None) -> Any:
        from openai.types.responses import Response  # imported on first use: openai takes ~1 s to import

        return sdk_object(Response, body)
