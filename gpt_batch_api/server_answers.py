"""Server answers are untrusted input: checks of what the Files and Batches routes gave back.

The SDK hands back whatever a 200 held: an HTML page from a proxy becomes a ``str``, an empty or cut body a
raw ``JSONDecodeError``, a JSON object of another kind a model whose fields are all None. A downloaded
result file may be a login page, cut short, or empty although the batch reports answers. Each of these is
named here, so that the caller can retry, or stop with a message, instead of taking it for "no result"
and buying the answers again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import APIError
from .store import fastjson

__all__ = ["KNOWN_BATCH_STATUSES", "MalformedAnswerError", "checked_answer", "result_file_problem"]

KNOWN_BATCH_STATUSES = frozenset(
    {"validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled"}
)

SHORT_LINES_TOLERATED = 2  # a result file may lack this many lines (or this share of them), if downloads agree
SHORT_SHARE_TOLERATED = 0.2


class MalformedAnswerError(APIError):
    """The server answered with something that is not the API's answer (HTML, empty, cut short, wrong kind)."""


def malformed(what: str, detail: str) -> MalformedAnswerError:
    return MalformedAnswerError(
        f"{what}: the server's answer is not an API answer ({detail}); a proxy or gateway in between may have "
        "answered instead. Nothing was lost: rerun the same command once the server answers properly.",
        transient=True,
    )


def checked_answer(what: str, answer: Any, kind: type) -> Any:
    """``answer`` if it is a ``kind`` (an SDK model) with an id and, for a batch, a status; else raise."""
    if not isinstance(answer, kind):
        shown = answer[:60] if isinstance(answer, str | bytes) else type(answer).__name__
        raise malformed(what, f"got {shown!r}")
    if not isinstance(getattr(answer, "id", None), str):
        raise malformed(what, f"a {kind.__name__} without an id")
    if hasattr(answer, "status") and not isinstance(answer.status, str):
        raise malformed(what, f"a {kind.__name__} without a status")
    return answer


def result_file_problem(path: Path, *, expected: int, total: int) -> tuple[str | None, bool]:
    """Why the downloaded ``path`` is not the result file of a batch, or None; and whether the only problem is
    that it lacks a few of the batch's ``expected`` lines (providers do drop a line now and then; a body cut
    short at a line end lacks many more).

    ``expected`` is the batch's own count for this file (completed for the output, failed for the errors),
    ``total`` its number of requests.
    """
    lines = good = 0
    first_ok: bool | None = None
    with open(path, "rb") as file:
        for raw in file:
            if raw.isspace():
                continue
            if not raw.endswith(b"\n"):
                return f"it ends inside a line at byte {path.stat().st_size}: the download was cut short", False
            lines += 1
            try:
                obj = fastjson.loads(raw)
            except ValueError:
                obj = None
            ok = isinstance(obj, dict) and isinstance(obj.get("custom_id"), str)
            good += ok
            if first_ok is None:
                first_ok = ok
    if lines and not first_ok:
        return "it is not JSON lines of batch results (an HTML page or an error message?)", False
    if good * 2 < lines:
        return f"only {good} of its {lines} lines are batch results", False
    if total and lines > total:
        return f"it has {lines} lines for a batch of {total} requests", False
    if lines < expected:
        few = expected - lines <= max(SHORT_LINES_TOLERATED, int(expected * SHORT_SHARE_TOLERATED))
        return f"it has {lines} result lines but the batch reports {expected}", lines > 0 and few
    return None, False
