"""Client-side pacing of direct API calls: rate-limit headers, ``retry-after``, and AIMD.

Every answer says how many requests and tokens are left in the current minute's budget and how fast it
refills (``limit`` per 60 s). When what is left would not cover the calls that may be in flight at once
(``concurrency`` requests, of about the tokens answers have used so far), new calls wait until the budget
has refilled that far, instead of sending a burst that comes back as 429s. A 429 pauses every worker for
its ``retry-after``, since the budget is shared. OpenAI names them ``x-ratelimit-{remaining,limit,reset}-
{requests,tokens}`` (resets as ``6m0s``); Anthropic ``anthropic-ratelimit-{requests,tokens}-{remaining,limit,
reset}`` (resets as RFC 3339 times), with tokens counted as input plus output.

A server without those headers (vLLM, llama.cpp, Ollama, most gateways) says it is saturated only by answering
429 or 503. Then the number of calls in flight is halved (at most once per round trip, since the calls already
sent answer alike) and grows back by one per four windows of successful calls (additive increase, multiplicative
decrease, as TCP does), up to ``--direct_concurrency``.
"""

from __future__ import annotations

import datetime
import logging
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

from .costs import MAX_USAGE_TOKENS

__all__ = ["RateLimitGate", "has_ratelimit_headers", "parse_duration"]

log = logging.getLogger(__name__)

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_PAUSE_S = 60.0
INCREASE_EVERY = 4  # the window grows by one call per this many windows of successful calls


def parse_duration(text: str | None) -> float | None:
    """Seconds from OpenAI's reset format (``17ms``, ``1s``, ``6m0s``, ``1h2m3.5s``); None if unreadable."""
    if not text:
        return None
    parts = _DURATION_PART.findall(text.strip())
    if not parts or "".join(number + unit for number, unit in parts) != text.strip():
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def _seconds_until(stamp: str | None) -> float | None:
    """Seconds from now until an RFC 3339 time (Anthropic's resets); None if unreadable."""
    if not stamp:
        return None
    try:
        when = datetime.datetime.fromisoformat(stamp.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())


def has_ratelimit_headers(headers: Mapping[str, str] | None) -> bool:
    """Whether an answer carries a provider's rate-limit headers (OpenAI's or Anthropic's)."""
    try:
        return any(headers.get(name) is not None for name in _LIMIT_NAMES)  # type: ignore[union-attr]
    except AttributeError:
        return False


_LIMIT_NAMES = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-tokens-limit",
)


def _number(headers: Mapping[str, str], name: str) -> float | None:
    try:
        value = headers.get(name)
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class RateLimitGate:
    """Shared by the calls of one executor: ``delay()`` says how long a new call should wait."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = max(1, concurrency)
        self._lock = threading.Lock()
        self._resume_at = 0.0  # time.monotonic() before which no new call starts
        self._avg_tokens: float | None = None  # tokens per answered request (moving average)
        self.pauses = 0
        self._window = float(self.concurrency)  # calls allowed in flight (AIMD, without rate-limit headers)
        self._avg_latency = 0.0  # seconds per answered call (moving average): one round trip
        self._quiet_until = 0.0  # no second decrease before the calls sent at the first one have answered
        self.decreases = 0

    def window(self) -> int:
        """How many calls may be in flight now."""
        return max(1, int(self._window + 1e-9))

    def answered(self, latency: float) -> None:
        """A call succeeded after ``latency`` seconds: grow the window by one per window of successes."""
        self._avg_latency = latency if not self._avg_latency else 0.9 * self._avg_latency + 0.1 * latency
        if self._window < self.concurrency:  # a quarter of TCP's pace: a saturated GPU is probed less often
            self._window = min(float(self.concurrency), self._window + 1.0 / (INCREASE_EVERY * self._window))

    def overloaded(self, status: int) -> None:
        """The server answered 429/503 without rate-limit headers: halve the window (once per round trip)."""
        now = time.monotonic()
        with self._lock:
            if now < self._quiet_until:
                return
            self._quiet_until = now + max(0.2, 2 * self._avg_latency)
            self._window = max(1.0, self._window / 2)
            self.decreases += 1
        log.info(
            "Direct API: HTTP %d without rate-limit headers; at most %d calls in flight now", status, self.window()
        )

    def delay(self) -> float:
        return max(0.0, self._resume_at - time.monotonic())

    def pause(self, seconds: float, reason: str) -> None:
        seconds = min(MAX_PAUSE_S, max(0.0, seconds))
        if seconds <= 0:
            return
        with self._lock:
            resume_at = time.monotonic() + seconds
            if resume_at <= self._resume_at:
                return
            self._resume_at = resume_at
            self.pauses += 1
        # Pacing at the budget's edge pauses often and briefly: only a 429's pause is worth the user's attention.
        log.log(
            logging.INFO if reason.startswith("HTTP") else logging.DEBUG,
            "Direct API: %s; pausing new calls for %.2f s",
            reason,
            seconds,
        )

    def observe(self, headers: Mapping[str, str] | None, usage: Mapping[str, Any] | None = None) -> None:
        """Read the rate-limit headers (and the answer's token usage) and pause if the budget runs short."""
        if usage and isinstance(usage, Mapping):  # the server's word: a proxy may send a string or a list
            tokens = usage.get("total_tokens")
            if tokens is None:  # Anthropic: input and output counted apart
                tokens = _number(usage, "input_tokens") or 0.0
                tokens += _number(usage, "output_tokens") or 0.0
            if isinstance(tokens, int | float) and 0 < tokens <= MAX_USAGE_TOKENS:
                with self._lock:
                    previous = self._avg_tokens
                    self._avg_tokens = tokens if previous is None else 0.9 * previous + 0.1 * tokens
        if not headers:
            return
        need_tokens = self.concurrency * (self._avg_tokens or 0.0)
        for kind, need in (("requests", float(self.concurrency)), ("tokens", need_tokens)):
            remaining = _number(headers, f"x-ratelimit-remaining-{kind}")
            if remaining is not None:
                limit = _number(headers, f"x-ratelimit-limit-{kind}")
            else:
                remaining = _number(headers, f"anthropic-ratelimit-{kind}-remaining")
                limit = _number(headers, f"anthropic-ratelimit-{kind}-limit")
            if remaining is None or not limit or need <= 0 or remaining >= need:
                continue
            refill = (need - remaining) * 60.0 / limit  # the budget refills continuously, limit per minute
            reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
            if reset is None:
                reset = _seconds_until(headers.get(f"anthropic-ratelimit-{kind}-reset"))
            seconds = min(refill, reset) if reset is not None else refill
            self.pause(seconds, f"{int(remaining)} {kind} left of {int(limit)} per minute")
