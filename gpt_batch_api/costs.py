"""Prices: predicted cost of a request before sending it, and true cost from the API's ``usage``.

Prices are per million tokens. Cached input tokens are billed at the cached rate; in the Batch API the
cached rate gets the same discount as other batch input (cached x batch/direct input price).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

__all__ = ["TokenCoster", "UsageCost", "usage_tokens"]

log = logging.getLogger(__name__)

# More tokens than any one request reads or writes: a larger count in a ``usage`` is not a count (a server's bug)
MAX_USAGE_TOKENS = 10**9
_warned: set[str] = set()  # the usage fields already reported as unreadable (once per process, not per answer)


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


def usage_tokens(usage: Any) -> tuple[int, int, int, int]:
    """``(input, cached, output, reasoning)`` tokens of one ``usage`` (chat, responses, embeddings or Anthropic).

    Anthropic's ``input_tokens`` leaves out cache reads and cache writes; they are added back here (cache
    writes at the plain input price: Anthropic bills them 25 % higher, not modelled yet).

    The usage is the server's word (a local server or a proxy may send anything): a count that is not a number
    from 0 to ``MAX_USAGE_TOKENS`` counts as 0 (with one warning), so that it can neither stop the processing of
    the batch nor make its cost negative or absurd.
    """
    if type(usage) is dict and "cache_read_input_tokens" not in usage and "cache_creation_input_tokens" not in usage:
        # The usual answer, read at C speed (this runs once per result): plain counts, or None
        in_details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or _NO_DETAILS
        out_details = usage.get("completion_tokens_details") or usage.get("output_tokens_details") or _NO_DETAILS
        if type(in_details) is dict and type(out_details) is dict:
            prompt = (usage["prompt_tokens"] if "prompt_tokens" in usage else usage.get("input_tokens")) or 0
            output = (usage["completion_tokens"] if "completion_tokens" in usage else usage.get("output_tokens")) or 0
            cached = in_details.get("cached_tokens") or 0
            reasoning = out_details.get("reasoning_tokens") or 0
            if (
                type(prompt) is int
                and type(output) is int
                and type(cached) is int
                and type(reasoning) is int
                and 0 <= min(prompt, output, cached, reasoning)
                and max(prompt, output, cached, reasoning) <= MAX_USAGE_TOKENS
            ):
                return prompt, min(prompt, cached), output, reasoning
    return _checked_usage_tokens(usage)


_NO_DETAILS: dict[str, Any] = {}


def _checked_usage_tokens(usage: Any) -> tuple[int, int, int, int]:
    if not isinstance(usage, dict):
        if usage:
            _unreadable("usage", usage)
        return 0, 0, 0, 0
    if "cache_read_input_tokens" in usage or "cache_creation_input_tokens" in usage:
        read = _count(usage, "cache_read_input_tokens")
        written = _count(usage, "cache_creation_input_tokens")
        return _count(usage, "input_tokens") + read + written, read, _count(usage, "output_tokens"), 0
    prompt = _count(usage, "prompt_tokens" if "prompt_tokens" in usage else "input_tokens")
    output = _count(usage, "completion_tokens" if "completion_tokens" in usage else "output_tokens")
    in_details = _details(usage, "prompt_tokens_details", "input_tokens_details")
    out_details = _details(usage, "completion_tokens_details", "output_tokens_details")
    cached = min(prompt, _count(in_details, "cached_tokens"))
    reasoning = _count(out_details, "reasoning_tokens")
    return prompt, cached, output, reasoning


def _count(fields: dict[str, Any], name: str) -> int:
    value = fields.get(name)
    if value is None:
        return 0
    number = value
    if isinstance(number, str):
        try:
            number = float(number)
        except ValueError:
            pass
    if isinstance(number, int | float) and not isinstance(number, bool) and 0 <= number <= MAX_USAGE_TOKENS:
        return int(number)
    _unreadable(name, value)
    return 0


def _details(usage: dict[str, Any], *names: str) -> dict[str, Any]:
    for name in names:
        details = usage.get(name)
        if details:
            if isinstance(details, dict):
                return details
            _unreadable(name, details)
    return {}


def _unreadable(name: str, value: Any) -> None:
    if name not in _warned:
        _warned.add(name)
        log.warning(
            "The server's answers give %s = %.80r, which is not a token count: counted as 0 in the costs", name, value
        )
