"""Exact input tokens through Anthropic's free ``/v1/messages/count_tokens`` endpoint (``exact_input_tokens``).

Counting is a separate rate limit on Anthropic's side (its own requests-per-minute), so calls run a few at a
time on their own event loop, each retried by the SDK (it honours ``retry-after``). A body that still cannot
be counted keeps the engine's offline estimate (high side), so a counting outage never stops a task; a
rejected key stops it, as it would stop the batch that follows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..errors import APIError, AuthenticationError, QuotaExceededError, StopRequested
from .base import TokenCounts

__all__ = ["COUNT_PARAMS", "count_input_tokens"]

# What count_tokens accepts of a Messages request; the rest (max_tokens, temperature, metadata, ...) changes
# no input token and is refused by the endpoint.
COUNT_PARAMS = frozenset(
    {"model", "messages", "system", "tools", "tool_choice", "thinking", "output_config", "mcp_servers"}
)
COUNT_TIMEOUT_S = 60.0
COUNT_RETRIES = 2  # the SDK's own backoff, honouring retry-after
STOP_POLL_S = 0.05  # how often the counting looks for a Ctrl+C


def count_input_tokens(
    sdk: Any,
    client: Any,
    bodies: list[dict[str, Any]],
    concurrency: int,
    translate: Callable[[Any, str], APIError],
    stop_check: Callable[[], bool] = lambda: False,
) -> TokenCounts:
    """See ``InputTokenCounter.count_input_tokens``; ``translate(exc, what)`` turns an SDK error into ours."""
    result = asyncio.run(_count_all(sdk, client, bodies, max(1, concurrency), translate, stop_check))
    if result is None:
        raise StopRequested("stop requested by a signal")
    return result


async def _count_all(
    sdk: Any,
    client: Any,
    bodies: list[dict[str, Any]],
    concurrency: int,
    translate: Callable[[Any, str], APIError],
    stop_check: Callable[[], bool],
) -> TokenCounts | None:
    """The counts, or None if ``stop_check()`` turned true first."""
    aclient = sdk.AsyncAnthropic(
        api_key=client.api_key,
        auth_token=getattr(client, "auth_token", None),
        base_url=str(client.base_url),
        max_retries=COUNT_RETRIES,
        timeout=COUNT_TIMEOUT_S,
    )
    result = TokenCounts(counts=[None] * len(bodies))
    slots = asyncio.Semaphore(concurrency)
    count_type = sdk.types.MessageTokensCount

    async def count(index: int, body: dict[str, Any]) -> None:
        params = {key: value for key, value in body.items() if key in COUNT_PARAMS}
        async with slots:
            try:
                answer = await aclient.post("/v1/messages/count_tokens", cast_to=count_type, body=params)
            except sdk.APIError as exc:
                error = translate(exc, "count input tokens")
                if isinstance(error, (AuthenticationError, QuotaExceededError)):
                    raise error from None
                result.failure = result.failure or str(error)
                return
            except (ValueError, TypeError, AttributeError) as exc:  # an answer that is not a count
                result.failure = result.failure or f"count input tokens: a malformed answer ({exc})"
                return
        tokens = getattr(answer, "input_tokens", None)
        if type(tokens) is int and tokens >= 0:
            result.counts[index] = tokens
        else:
            result.failure = result.failure or f"count input tokens: a malformed answer (input_tokens={tokens!r})"

    async def count_every_body() -> None:
        async with asyncio.TaskGroup() as group:
            for index, body in enumerate(bodies):
                group.create_task(count(index, body))

    counting = asyncio.ensure_future(count_every_body())
    try:
        # Ctrl+C is watched for, not only raised where it lands: raised inside a call, the SDK takes it for a
        # connection error and retries, and the stop would wait for every count.
        while not counting.done():
            await asyncio.wait([counting], timeout=STOP_POLL_S)
            if stop_check() and not counting.done():
                counting.cancel()
                await asyncio.wait([counting])
                return None
        counting.result()
    except* (AuthenticationError, QuotaExceededError) as errors:
        raise errors.exceptions[0] from None
    finally:
        await aclient.close()
    return result
