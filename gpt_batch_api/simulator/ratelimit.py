"""Requests-per-minute and tokens-per-minute limits with OpenAI's ``x-ratelimit-*`` headers.

Each limit is a bucket that refills continuously (limit per 60 s), like OpenAI's. A request that does not fit
is refused with 429 and a ``retry-after`` that says when it would fit. A limit of 0 means unlimited; the
headers then report a large nominal limit that is never used up.
"""

from __future__ import annotations

import math
import threading
import time

from .common import ApiError

__all__ = ["RateLimiter", "format_reset"]

UNLIMITED_NOMINAL = 1_000_000_000


def format_reset(seconds: float) -> str:
    """OpenAI's reset format: ``17ms``, ``1s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, int(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    if minutes:
        return f"{int(minutes)}m{int(rest)}s"
    return f"{rest:.3g}s"


class _Bucket:
    def __init__(self) -> None:
        self.limit = 0
        self.level = 0.0
        self.stamp = time.monotonic()

    def refill(self, limit: int, now: float) -> None:
        if limit != self.limit:  # a changed limit starts full
            self.limit, self.level, self.stamp = limit, float(limit), now
            return
        self.level = min(float(limit), self.level + (now - self.stamp) * limit / 60.0)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` fits (0 if it fits now)."""
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing * 60.0 / self.limit

    def reset_s(self) -> float:
        return (self.limit - self.level) * 60.0 / self.limit if self.limit else 0.0


class RateLimiter:
    """Checks and records direct calls against ``rpm`` and ``tpm``; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests = _Bucket()
        self._tokens = _Bucket()

    def admit(self, rpm: int, tpm: int, tokens: int) -> dict[str, str]:
        """Record one request of ``tokens``; return the headers, or raise ApiError 429 if it does not fit."""
        now = time.monotonic()
        with self._lock:
            waits = []
            for bucket, limit, amount, kind in (
                (self._requests, rpm, 1, "requests"),
                (self._tokens, tpm, tokens, "tokens"),
            ):
                if limit:
                    bucket.refill(limit, now)
                    # A request larger than the whole bucket can never fit; OpenAI rejects it outright.
                    wait = bucket.wait_for(min(amount, limit))
                    if wait > 0:
                        waits.append((wait, kind, limit, bucket))
            if not waits:
                if rpm:
                    self._requests.level -= 1
                if tpm:
                    self._tokens.level -= min(tokens, tpm)
            headers = self._headers(rpm, tpm)
        if waits:
            wait, kind, limit, bucket = max(waits, key=lambda w: w[0])
            used = limit - max(0, int(bucket.level))
            unit = "RPM" if kind == "requests" else "TPM"
            message = (
                f"Rate limit reached for requests in organization org-simulator on {kind} per min ({unit}): "
                f"Limit {limit}, Used {used}, Requested {1 if kind == 'requests' else tokens}. "
                f"Please try again in {format_reset(wait)}."
            )
            headers["retry-after"] = str(max(1, math.ceil(wait)))
            headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
            raise ApiError(429, message, type_=kind, code="rate_limit_exceeded", headers=headers)
        return headers

    def _headers(self, rpm: int, tpm: int) -> dict[str, str]:
        headers = {}
        for bucket, limit, kind in ((self._requests, rpm, "requests"), (self._tokens, tpm, "tokens")):
            headers[f"x-ratelimit-limit-{kind}"] = str(limit or UNLIMITED_NOMINAL)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(bucket.level)) if limit else UNLIMITED_NOMINAL)
            headers[f"x-ratelimit-reset-{kind}"] = format_reset(bucket.reset_s() if limit else 0.0)
        return headers
