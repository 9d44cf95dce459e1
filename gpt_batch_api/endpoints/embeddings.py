"""``/v1/embeddings``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Endpoint, ParsedBody, ParseSpec, retryable, sdk_object

if TYPE_CHECKING:
    from ..tokens import InputTokens, TokenEstimator


class EmbeddingsEndpoint(Endpoint):
    path = "/v1/embeddings"

    def prepare(self, payload: dict[str, Any]) -> tuple[dict[str, Any], ParseSpec | None]:
        return payload, None

    def num_outputs(self, payload: dict[str, Any]) -> int:
        inputs = payload.get("input")
        if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int):
            return len(inputs)
        return 1

    def input_tokens(self, payload: dict[str, Any], estimator: TokenEstimator) -> InputTokens:
        return estimator.embeddings(payload)

    def output_limit(self, payload: dict[str, Any]) -> int | None:
        return 0  # embeddings generate no tokens

    def parse(self, body: dict[str, Any], num_outputs: int, spec: ParseSpec | None) -> ParsedBody:
        result = ParsedBody()
        got, expected = len(body.get("data") or []), num_outputs
        if got != expected:
            result.errors.append(retryable("EmbeddingsMismatch", f"expected {expected} embeddings, got {got}"))
        return result

    def to_sdk_object(self, body: dict[str, Any], parsed: list[Any] | None) -> Any:
        from openai.types import CreateEmbeddingResponse  # imported on first use: openai takes ~1 s to import

        return sdk_object(CreateEmbeddingResponse, body)
