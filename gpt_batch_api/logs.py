"""Logging set-up and flood control.

``configure_logging`` gives one readable line per event, with coloured level tags on a TTY.
``LogSummarizer`` shows the first N messages of each kind and then a single count, so a batch with
10,000 failed lines prints a dozen lines, not ten thousand.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter
from typing import TextIO

from .redact import RedactingFilter

_COLOURS = {
    logging.DEBUG: "\033[2m",
    logging.INFO: "\033[32m",
    logging.WARNING: "\033[33m",
    logging.ERROR: "\033[31m",
    logging.CRITICAL: "\033[1;31m",
}
_RESET = "\033[0m"


class ColorFormatter(logging.Formatter):
    """``[LEVEL] message`` with the level tag coloured (only when asked to, i.e. on a TTY)."""

    def __init__(self, colour: bool) -> None:
        super().__init__("%(asctime)s [%(levelname)s] %(message)s", datefmt="%H:%M:%S")
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not self.colour:
            return text
        tag = f"[{record.levelname}]"
        return text.replace(tag, f"{_COLOURS.get(record.levelno, '')}{tag}{_RESET}", 1)


def configure_logging(
    level: int | str = logging.INFO, *, stream: TextIO | None = None, colour: bool | None = None
) -> None:
    """Send the library's log lines to ``stream`` (stderr by default); idempotent."""
    stream = stream or sys.stderr
    if colour is None:
        colour = hasattr(stream, "isatty") and stream.isatty() and os.environ.get("NO_COLOR") is None
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_gpt_batch_api", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ColorFormatter(bool(colour)))
    handler.addFilter(RedactingFilter())  # URL credentials in the SDK's and httpx's lines too
    handler._gpt_batch_api = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "httpx2", "openai", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class LogSummarizer:
    """Log the first ``max_per_kind`` messages of each kind (negative = all), then one count per kind."""

    def __init__(self, logger: logging.Logger, max_per_kind: int) -> None:
        self.logger = logger
        self.max_per_kind = max_per_kind
        self.counts: Counter[str] = Counter()
        self.levels: dict[str, int] = {}

    def log(self, level: int, kind: str, msg: str, *args: object) -> None:
        self.counts[kind] += 1
        self.levels[kind] = max(level, self.levels.get(kind, level))
        if self.max_per_kind < 0 or self.counts[kind] <= self.max_per_kind:
            self.logger.log(level, msg, *args)

    def flush(self) -> None:
        for kind, count in self.counts.items():
            hidden = count - self.max_per_kind if self.max_per_kind >= 0 else 0
            if hidden > 0:
                self.logger.log(self.levels[kind], "... and %d more of kind '%s' (%d in total)", hidden, kind, count)
        self.counts.clear()
