"""Terminal progress bars (tqdm) for the long parts of a run, driven by engine events.

Three kinds of bar: request generation (samples committed so far), remote batches (one bar per batch with
completed+failed out of total, plus an overall bar), and direct calls (one bar per direct batch). The
display is quiet when stdout is not a terminal, so logs redirected to a file stay clean. It never raises:
a broken display logs once and turns itself off, the work goes on.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

from .events import (
    BATCH_PROCESSED,
    DIRECT_PROGRESS,
    GENERATION_PROGRESS,
    REMOTE_PROGRESS,
    RUN_FINISHED,
    WAITING,
)

log = logging.getLogger(__name__)

_OVERALL = "overall"


class ProgressDisplay:
    """Event subscriber drawing tqdm bars.

    ``enabled``: True draws, False draws nothing, None draws only when ``file`` (stdout by default) is a TTY.
    ``mininterval`` is tqdm's minimum number of seconds between redraws of a bar.
    """

    def __init__(self, enabled: bool | None = None, *, file: IO[str] | None = None, mininterval: float = 0.5) -> None:
        self.file = file if file is not None else sys.stdout
        if enabled is None:
            enabled = _is_tty(self.file)
        self.enabled = bool(enabled)
        self.mininterval = mininterval
        self._generation: Any = None
        self._remote: dict[Any, Any] = {}  # batch id (or _OVERALL) -> bar
        self._direct: dict[Any, Any] = {}  # batch id -> bar

    # ------------------------------------------------------------------ subscriber

    def handle(self, name: str, fields: dict[str, Any]) -> None:
        """Update the bars for one event; never raises."""
        if not self.enabled:
            return
        try:
            if name == GENERATION_PROGRESS:
                self._on_generation(fields)
            elif name == REMOTE_PROGRESS:
                self._on_remote(fields.get("batches") or [])
            elif name == DIRECT_PROGRESS:
                self._on_direct(fields)
            elif name == BATCH_PROCESSED:
                self._close_batch(fields.get("batch_id"))
            elif name == WAITING:
                self._on_waiting(fields)
            elif name == RUN_FINISHED:
                self.close()
        except Exception as exc:  # a progress bar must never break the work
            log.warning("Progress display failed and is switched off (the run continues): %s", exc)
            self.close()
            self.enabled = False

    def close(self) -> None:
        """Close every bar (idempotent, never raises)."""
        # Bottom-up: tqdm clears a bar by moving the cursor down to its line and back, so a bar above that is
        # closed (or leaves its last line and a newline) first would shift the lines of the bars still open,
        # and their remnants would overwrite the next log line ("Task complete" split by a bar's tail).
        bars = [*reversed(self._direct.values()), *reversed(self._remote.values()), self._generation]
        self._generation = None
        self._remote.clear()
        self._direct.clear()
        for bar in bars:
            if bar is not None:
                try:
                    bar.close()
                except Exception:  # closing is best effort
                    pass

    # ------------------------------------------------------------------ handlers

    def _bar(self, desc: str, total: int | None, unit: str, leave: bool) -> Any:
        from tqdm import tqdm  # lazily: importing the package must stay cheap

        return tqdm(
            desc=desc,
            total=total,
            unit=unit,
            file=self.file,
            leave=leave,
            mininterval=self.mininterval,
            dynamic_ncols=True,
        )

    @staticmethod
    def _set(bar: Any, done: int, total: int | None) -> None:
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(max(0, int(done)) - bar.n)

    def _on_generation(self, fields: dict[str, Any]) -> None:
        total = fields.get("total")
        if self._generation is None:
            self._generation = self._bar("Generating requests", total, " samples", leave=True)
        self._set(self._generation, fields.get("done") or 0, total)

    def _on_remote(self, batches: list[dict[str, Any]]) -> None:
        seen = set()
        done_all = total_all = 0
        for info in batches:
            batch_id = info.get("batch_id")
            seen.add(batch_id)
            done = int(info.get("completed") or 0) + int(info.get("failed") or 0)
            total = int(info.get("total") or 0) or None
            done_all += done
            total_all += total or 0
            bar = self._remote.get(batch_id)
            if bar is None:
                bar = self._remote[batch_id] = self._bar(f"Batch {batch_id}", total, " req", leave=False)
            bar.set_postfix_str(str(info.get("status") or ""), refresh=False)
            self._set(bar, done, total)
        for batch_id in [b for b in self._remote if b != _OVERALL and b not in seen]:
            self._close_batch(batch_id)
        overall = self._remote.get(_OVERALL)
        if not batches:
            if overall is not None:
                overall.close()
                del self._remote[_OVERALL]
            return
        if overall is None:
            # Created after the first per-batch bar so it keeps its place when batch bars come and go.
            overall = self._remote[_OVERALL] = self._bar("Remote batches", total_all or None, " req", leave=False)
        overall.set_postfix_str(f"{len(batches)} batches", refresh=False)
        self._set(overall, done_all, total_all or None)

    def _on_direct(self, fields: dict[str, Any]) -> None:
        batch_id = fields.get("batch_id")
        total = fields.get("total")
        bar = self._direct.get(batch_id)
        if bar is None:
            bar = self._direct[batch_id] = self._bar(f"Direct batch {batch_id}", total, " req", leave=False)
        self._set(bar, fields.get("done") or 0, total)
        if total is not None and bar.n >= total:
            bar.close()
            del self._direct[batch_id]

    def _on_waiting(self, fields: dict[str, Any]) -> None:
        overall = self._remote.get(_OVERALL)
        if overall is not None:
            overall.set_postfix_str(f"next poll in {float(fields.get('seconds') or 0):.0f}s")

    def _close_batch(self, batch_id: Any) -> None:
        for bars in (self._remote, self._direct):
            bar = bars.pop(batch_id, None)
            if bar is not None:
                bar.close()


def _is_tty(file: Any) -> bool:
    try:
        return bool(file.isatty())
    except Exception:  # closed or unusual streams: treat as not a terminal
        return False
