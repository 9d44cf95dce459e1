"""Deciding a label from several model opinions: ask for more until the answer is clear or the budget ends.

Any task that polls a model several times per sample (classification, grading, extraction with
voting) can use it: feed it the opinions received so far and it says how many more to request and,
once decided, the majority label, its share of the votes and whether that share is convincing.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Hashable, Sequence

__all__ = ["OpinionAdviser", "OpinionDecision"]


@dataclasses.dataclass(frozen=True)
class OpinionDecision:
    label: Hashable | None  # the majority label (None if no opinion succeeded)
    votes: int  # votes for that label
    total: int  # successful opinions
    confidence: float  # votes / total
    clear: bool  # confidence reached the required level with at least ``opinions_min`` opinions


@dataclasses.dataclass(frozen=True)
class OpinionAdviser:
    """``opinions_min`` <= opinions requested <= ``opinions_max``; stop early once ``confidence`` is certain."""

    opinions_min: int = 3
    opinions_max: int = 5
    confidence: float = 0.78

    def __post_init__(self) -> None:
        if not 1 <= self.opinions_min <= self.opinions_max:
            raise ValueError("need 1 <= opinions_min <= opinions_max")
        if not 0 < self.confidence <= 1:
            raise ValueError("confidence must be in (0, 1]")

    def decide(self, opinions: Sequence[Hashable]) -> OpinionDecision:
        counts = Counter(opinions)
        if not counts:
            return OpinionDecision(None, 0, 0, 0.0, False)
        # Ties go to the label seen first, so a decision never depends on dict ordering.
        label, votes = max(counts.items(), key=lambda kv: (kv[1], -opinions.index(kv[0])))
        total = len(opinions)
        share = votes / total
        return OpinionDecision(label, votes, total, share, total >= self.opinions_min and share >= self.confidence)

    def num_more(self, opinions: Sequence[Hashable], num_failed: int = 0, num_pending: int = 0) -> int:
        """How many more opinions to request now (0: decided, or wait for the pending ones)."""
        asked = len(opinions) + num_failed + num_pending
        if asked >= self.opinions_max:
            return 0
        if asked < self.opinions_min:
            return self.opinions_min - asked
        if num_pending:
            return 0
        decision = self.decide(opinions)
        if decision.clear:
            return 0
        # Request just enough that the current majority could reach the confidence level.
        votes, total = decision.votes, decision.total
        needed = 1
        while needed < self.opinions_max - asked and (votes + needed) / (total + needed) < self.confidence:
            needed += 1
        return min(needed, self.opinions_max - asked)

    def is_final(self, opinions: Sequence[Hashable], num_failed: int = 0, num_pending: int = 0) -> bool:
        return num_pending == 0 and self.num_more(opinions, num_failed, 0) == 0
