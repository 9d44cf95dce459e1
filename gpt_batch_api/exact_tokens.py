"""``exact_input_tokens``: replace the offline input-token estimates of new requests by the provider's counts.

Runs when requests are committed, before the task sees them: the queue, the limits and the predicted costs
then use exact counts. A request the provider could not count keeps its estimate (on the high side), so
caps stay safe. Counting buys nothing and writes nothing: a Ctrl+C in the middle loses no work.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson

from .backends import InputTokenCounter
from .costs import TokenCoster
from .request import CachedGPTRequest

__all__ = ["EXACT_COUNT_CONCURRENCY", "count_exactly"]

log = logging.getLogger(__name__)

EXACT_COUNT_CONCURRENCY = 8  # calls in flight: count_tokens has its own, modest, requests-per-minute limit
# A count below this share of the offline estimate (which errs high by ~10%) is not believed: a gateway that
# answers 0 must not open the caps. Keeping the estimate only ever errs on the safe side.
IMPLAUSIBLE_SHARE = 1 / 3


def count_exactly(
    counter: InputTokenCounter,
    cached_reqs: list[CachedGPTRequest],
    coster: TokenCoster,
    stop_check: Callable[[], bool] = lambda: False,
) -> None:
    """Set the input tokens (and input costs) of ``cached_reqs`` to the provider's exact counts, in place
    (``stop_check``: see ``InputTokenCounter.count_input_tokens``)."""
    if not cached_reqs:
        return
    bodies: list[dict[str, Any]] = [orjson.loads(cached.line)["body"] for cached in cached_reqs]
    result = counter.count_input_tokens(bodies, EXACT_COUNT_CONCURRENCY, stop_check)
    estimated = exact = counted = 0
    failure = result.failure
    for cached, tokens in zip(cached_reqs, result.counts, strict=True):
        if tokens is None:
            continue
        info = cached.info
        if tokens < info.tokens_input * IMPLAUSIBLE_SHARE:
            failure = failure or f"an implausible count of {tokens} for an estimate of {info.tokens_input}"
            continue
        estimated += info.tokens_input
        exact += tokens
        counted += 1
        info.tokens_input = tokens
        info.cost_batch = coster.predicted_cost(tokens, info.tokens_output, batch=True)
        info.cost_direct = coster.predicted_cost(tokens, info.tokens_output, batch=False)
    if counted:
        log.info(
            "Counted the input tokens of %d requests exactly: %d (the offline estimate was %d, %+.1f%%)",
            counted,
            exact,
            estimated,
            100.0 * (estimated - exact) / exact if exact else 0.0,
        )
    if counted < len(cached_reqs):
        log.warning(
            "Could not count the input tokens of %d of %d requests (%s); they keep their offline estimate, "
            "which is on the high side.",
            len(cached_reqs) - counted,
            len(cached_reqs),
            failure,
        )
