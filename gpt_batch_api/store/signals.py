"""Ctrl+C and SIGTERM handling: stop at a safe point, never in the middle of a write."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from ..errors import StopRequested

log = logging.getLogger(__name__)
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class DeferSignals:
    """Hold SIGINT/SIGTERM during a critical section; re-deliver the first one afterwards."""

    def __init__(self) -> None:
        self._pending: tuple[int, FrameType | None] | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self._pending is None:
            self._pending = (signum, frame)
            log.warning("Signal %s received: finishing the current write first", signal.Signals(signum).name)

    def __enter__(self) -> DeferSignals:
        if _in_main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        if self._pending is not None:
            signum, _frame = self._pending
            self._pending = None
            signal.raise_signal(signum)


class StopMonitor:
    """First SIGINT/SIGTERM sets a flag the loop checks at safe points; a second one interrupts at once.

    Inside ``interruptible()`` (waiting for the task lock, or for the server on a Batch API call, which a
    SIGKILL could interrupt just as well) the first signal stops at once too: such a wait may last minutes.
    """

    def __init__(self) -> None:
        self.stop_requested = False
        self._previous: dict[int, Any] = {}
        self._interruptible = 0

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A section that the first Ctrl+C ends at once with StopRequested (it must be safe to abandon)."""
        self.check()
        self._interruptible += 1
        try:
            yield
        except StopRequested:
            raise
        except Exception as exc:
            if self.stop_requested:  # the StopRequested raised inside was turned into another error by library
                raise StopRequested("stop requested by a signal") from exc  # code (e.g. pydantic: SchemaError)
            raise
        finally:
            self._interruptible -= 1

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_requested:
            raise KeyboardInterrupt
        self.stop_requested = True
        if self._interruptible:
            log.warning(
                "Stop requested (%s): stopping the wait at once (safe: nothing was being written).",
                signal.Signals(signum).name,
            )
            raise StopRequested("stop requested by a signal")
        log.warning(
            "Stop requested (%s): finishing the current step, then saving. Press Ctrl+C again to stop at once "
            "(also safe: the task resumes from its last commit).",
            signal.Signals(signum).name,
        )

    def check(self) -> None:
        if self.stop_requested:
            raise StopRequested("stop requested by a signal")

    def __enter__(self) -> StopMonitor:
        if _in_main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
