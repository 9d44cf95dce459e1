"""Response bodies of a batch result, read from its results file when the task uses them.

A 50,000-line result file of ~200 MB parses to ~350 MB of Python objects (200 floats take 7 KB as a list
against 4.7 KB as text); holding every body of a batch while the task walks the results doubled the memory a
big batch needs. Each body is parsed once for classification, then only the most recent ones are kept, up
to ``BODY_BUDGET_BYTES`` of result lines: a batch whose lines fit keeps every body (no re-reading), a bigger
one reads a dropped body again from its line in the file, which stays untouched until the batch is committed
as processed.
"""

from __future__ import annotations

import collections
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ProcessingError
from .store import fastjson

if TYPE_CHECKING:
    from .results import ResponseInfo

__all__ = ["BODY_BUDGET_BYTES", "ResultBodies"]

BODY_BUDGET_BYTES = 48 * 1024 * 1024  # of result lines whose parsed bodies are held at once


class ResultBodies:
    """The bodies of one results file: which are held in memory, and reading a dropped one again."""

    def __init__(self, path: Path, budget: int | None = None) -> None:
        self.path = path
        self.budget = BODY_BUDGET_BYTES if budget is None else budget
        # Weak references: a ResponseInfo refers to its source, so strong ones back would make every result
        # of the batch a reference cycle, freed only by the cyclic collector (paused while a batch is processed).
        self._held: collections.deque[tuple[weakref.ref[ResponseInfo], int]] = collections.deque()
        self._held_bytes = 0

    @property
    def num_held(self) -> int:
        """How many bodies are in memory now."""
        return len(self._held)

    def hold(self, info: ResponseInfo, size: int) -> None:
        """``info`` has its body in memory (from a line of ``size`` bytes): drop the oldest beyond the budget."""
        self._held.append((weakref.ref(info), size))
        self._held_bytes += size
        while self._held_bytes > self.budget and len(self._held) > 1:
            old_ref, old_size = self._held.popleft()
            self._held_bytes -= old_size
            old = old_ref()
            if old is not None:
                old.drop_body()

    def read(self, offset: int, size: int) -> dict[str, Any]:
        """The response body of the result line at ``offset`` (as classified: a JSON object)."""
        try:
            with open(self.path, "rb") as file:
                file.seek(offset)
                raw = file.read(size)
        except FileNotFoundError:
            raise ProcessingError(
                f"A response body was to be read again from {self.path}, which is deleted once its batch is "
                "processed: read what you need from the results inside process_batch_result."
            ) from None
        try:
            body = fastjson.loads(raw)["response"]["body"]
        except (ValueError, KeyError, TypeError):
            body = None
        if not isinstance(body, dict):  # the file changed under us: never hand the task something else
            raise ProcessingError(f"{self.path} changed at byte {offset} while its batch was processed.")
        return body
