"""The five limit levels (batch, remote, session, task, direct) and the arithmetic of "does it fit".

Limits apply to requests, input tokens, predicted cost (input + assumed output) and bytes. Token and
byte sizes are compared with safety factors (``max_token_safety``, ``max_mb_safety``): a batch of
predicted size ``t`` counts as ``t * safety`` against a limit, because predictions are estimates and
servers have fuzzy limits.
"""

from __future__ import annotations

import dataclasses
import math

from .errors import ConfigError

__all__ = ["Amounts", "Limit", "Limits"]


@dataclasses.dataclass
class Amounts:
    """A quantity of work: requests, input tokens, predicted cost and bytes."""

    requests: int = 0
    tokens: int = 0
    cost: float = 0.0
    size: int = 0

    def __add__(self, other: Amounts) -> Amounts:
        return Amounts(
            self.requests + other.requests,
            self.tokens + other.tokens,
            self.cost + other.cost,
            self.size + other.size,
        )

    def add(self, requests: int, tokens: int, cost: float, size: int) -> None:
        self.requests += requests
        self.tokens += tokens
        self.cost += cost
        self.size += size


@dataclasses.dataclass(frozen=True)
class Limit:
    """Maxima at one level; None means no limit of that kind at this level."""

    name: str  # e.g. "batch", "remote": used in the option names (max_<name>_requests ...)
    requests: int | None = None
    ktokens: float | None = None
    cost: float | None = None
    mb: float | None = None

    def caps(self) -> tuple[float, float, float, float]:
        """The maxima as plain numbers: requests, tokens, cost and bytes (inf where there is no limit).

        ``amount > cap`` (tokens and bytes times their safety factor) is the test; ``exceeded_by`` makes it,
        and a loop over many requests can make it on its own running sums.
        """
        inf = math.inf
        return (
            inf if self.requests is None else self.requests,
            inf if self.ktokens is None else self.ktokens * 1000,
            inf if self.cost is None else self.cost,
            inf if self.mb is None else self.mb * 1_000_000,
        )

    def exceeded_by(self, amounts: Amounts, token_safety: float, mb_safety: float) -> str | None:
        """The option whose limit ``amounts`` exceeds, or None if it fits."""
        max_requests, max_tokens, max_cost, max_size = self.caps()
        if amounts.requests > max_requests:
            return f"max_{self.name}_requests"
        if amounts.tokens * token_safety > max_tokens:
            return f"max_{self.name}_ktokens"
        if amounts.cost > max_cost:
            return f"max_{self.name}_cost"
        if amounts.size * mb_safety > max_size:
            return f"max_{self.name}_mb"
        return None


@dataclasses.dataclass(frozen=True)
class Limits:
    """All limits of a requester, validated together."""

    batch: Limit
    remote: Limit
    session: Limit
    task: Limit
    direct: Limit
    max_remote_batches: int
    max_unpushed_batches: int
    min_batch_requests: int
    max_token_safety: float
    max_mb_safety: float

    def validate(self) -> None:
        """Raise ConfigError naming the option to change if the limits are inconsistent."""
        for level in (self.batch, self.remote, self.session, self.task, self.direct):
            for kind in ("requests", "ktokens", "cost", "mb"):
                value = getattr(level, kind)
                if value is not None and value < 0:
                    raise ConfigError(f"--max_{level.name}_{kind} must be >= 0 (got {value}).")
        if self.max_token_safety < 1 or self.max_mb_safety < 1:
            raise ConfigError("--max_token_safety and --max_mb_safety must be >= 1.0 (they only add margin).")
        if self.max_remote_batches < 0 or self.max_unpushed_batches < 1:
            raise ConfigError(
                f"--max_remote_batches must be >= 0 (got {self.max_remote_batches}) and --max_unpushed_batches "
                f"must be >= 1 (got {self.max_unpushed_batches})."
            )
        if self.batch.requests is not None and self.batch.requests < 1:
            raise ConfigError(f"--max_batch_requests must be >= 1 (got {self.batch.requests}).")
        if self.batch.requests is not None and self.batch.requests > 50_000:
            raise ConfigError("--max_batch_requests cannot exceed 50000, the Batch API's limit per batch.")
        if self.batch.mb is not None and self.batch.mb > 200:
            raise ConfigError("--max_batch_mb cannot exceed 200, the Batch API's limit per input file.")
        if self.min_batch_requests > (self.batch.requests or self.min_batch_requests):
            raise ConfigError(
                f"--min_batch_requests ({self.min_batch_requests}) is above --max_batch_requests "
                f"({self.batch.requests}): no batch could ever use the Batch API. Lower --min_batch_requests."
            )
        for kind in ("requests", "ktokens", "cost", "mb"):
            per_batch, remote = getattr(self.batch, kind), getattr(self.remote, kind)
            if per_batch is not None and remote is not None and per_batch > remote:
                raise ConfigError(
                    f"--max_batch_{kind} ({per_batch}) is above --max_remote_{kind} ({remote}): a full batch "
                    f"would never fit on the remote. Lower --max_batch_{kind} or raise --max_remote_{kind}."
                )
