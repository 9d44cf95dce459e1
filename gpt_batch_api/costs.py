"""Prices: predicted cost of a request before sending it, and true cost from the API's ``usage``.

Prices are per million tokens. Cached input tokens are billed at the cached rate; in the Batch API the
cached rate gets the same discount as other batch input (cached x batch/direct input price).
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["TokenCoster", "UsageCost", "usage_tokens"]


@dataclasses.dataclass
class UsageCost:
    input_tokens: int = 0  # all prompt tokens, cached ones included
    cached_tokens: int = 0
    output_tokens: int = 0  # reasoning tokens included
    reasoning_tokens: int = 0
    input_cost: float = 0.0
    output_cost: float = 0.0

    @property
    def total_cost(self) -> float:
        return self.input_cost + self.output_cost


@dataclasses.dataclass(frozen=True)
class TokenCoster:
    cost_input_direct_mtoken: float = 2.5
    cost_input_cached_mtoken: float = 1.25
    cost_input_batch_mtoken: float = 1.25
    cost_output_direct_mtoken: float = 10.0
    cost_output_batch_mtoken: float = 5.0

    def input_cost(self, tokens: int, *, batch: bool) -> float:
        return tokens * (self.cost_input_batch_mtoken if batch else self.cost_input_direct_mtoken) / 1e6

    def output_cost(self, tokens: int, *, batch: bool) -> float:
        return tokens * (self.cost_output_batch_mtoken if batch else self.cost_output_direct_mtoken) / 1e6

    def predicted_cost(self, input_tokens: int, output_tokens: int, *, batch: bool) -> float:
        return self.input_cost(input_tokens, batch=batch) + self.output_cost(output_tokens, batch=batch)

    def cached_price(self, *, batch: bool) -> float:
        if not batch or not self.cost_input_direct_mtoken:
            return self.cost_input_cached_mtoken
        return self.cost_input_cached_mtoken * self.cost_input_batch_mtoken / self.cost_input_direct_mtoken

    def usage_cost(self, usage: dict[str, Any] | None, *, batch: bool) -> UsageCost:
        """True cost of one response from its ``usage`` (chat, responses or embeddings shape)."""
        prompt, cached, output, reasoning = usage_tokens(usage or {})
        return UsageCost(
            prompt,
            cached,
            output,
            reasoning,
            self.input_cost_of(prompt, cached, batch=batch),
            self.output_cost(output, batch=batch),
        )

    def input_cost_of(self, input_tokens: int, cached_tokens: int, *, batch: bool) -> float:
        """True cost of ``input_tokens`` of which ``cached_tokens`` were cached (a sum over requests works too)."""
        uncached_price = self.cost_input_batch_mtoken if batch else self.cost_input_direct_mtoken
        return ((input_tokens - cached_tokens) * uncached_price + cached_tokens * self.cached_price(batch=batch)) / 1e6


def usage_tokens(usage: dict[str, Any]) -> tuple[int, int, int, int]:
    """``(input, cached, output, reasoning)`` tokens of one ``usage`` (chat, responses, embeddings or Anthropic).

    Anthropic's ``input_tokens`` leaves out cache reads and cache writes; they are added back here (cache
    writes at the plain input price: Anthropic bills them 25 % higher, not modelled yet).
    """
    if "cache_read_input_tokens" in usage or "cache_creation_input_tokens" in usage:
        read = int(usage.get("cache_read_input_tokens") or 0)
        written = int(usage.get("cache_creation_input_tokens") or 0)
        return int(usage.get("input_tokens") or 0) + read + written, read, int(usage.get("output_tokens") or 0), 0
    prompt = int(usage.get("prompt_tokens", usage.get("input_tokens", 0)) or 0)
    output = int(usage.get("completion_tokens", usage.get("output_tokens", 0)) or 0)
    in_details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    out_details = usage.get("completion_tokens_details") or usage.get("output_tokens_details") or {}
    cached = min(prompt, int(in_details.get("cached_tokens", 0) or 0))
    reasoning = int(out_details.get("reasoning_tokens", 0) or 0)
    return prompt, cached, output, reasoning
