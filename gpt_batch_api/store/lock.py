"""One process per task: a ``filelock`` lock plus a holder note naming who has it."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import filelock

from ..errors import StopRequested, TaskLockedError
from .atomic import raise_as_disk_error

log = logging.getLogger(__name__)


class TaskLock:
    """Exclusive lock on a task directory.

    ``timeout`` < 0 waits forever, 0 fails at once, > 0 waits that many seconds; while waiting a
    "still waiting" line is logged every ``status_interval`` seconds, naming the holder.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float | None = None,
        poll_interval: float = 0.25,
        status_interval: float = 5.0,
    ) -> None:
        self.path = Path(path)
        self.holder_path = self.path.with_name(self.path.name + ".holder")
        self.timeout = -1.0 if timeout is None else float(timeout)
        self.poll_interval = max(0.01, poll_interval)
        self.status_interval = max(0.1, status_interval)
        self._lock = filelock.FileLock(str(self.path), is_singleton=False)

    def holder(self) -> str | None:
        try:
            return self.holder_path.read_text().strip() or None
        except OSError:
            return None

    def acquire(self, stop_check: Callable[[], bool] | None = None) -> None:
        """Wait for the lock; ``stop_check()`` true (a Ctrl+C noted by the caller) stops the wait with StopRequested."""
        start = last_note = time.monotonic()
        while True:
            if stop_check is not None and stop_check():
                raise StopRequested("stop requested while waiting for the task lock")
            try:
                self._lock.acquire(timeout=self.poll_interval)
                break
            except filelock.Timeout:
                now = time.monotonic()
                if self.timeout >= 0 and now - start >= self.timeout:
                    holder = self.holder()
                    raise TaskLockedError(
                        f"The task is in use by another process ({holder or 'holder unknown'}); could not lock "
                        f"{self.path} within {self.timeout:g}s. Wait for that run to finish or stop it; raise "
                        "--lock_timeout to wait longer.",
                        str(self.path),
                        holder,
                    ) from None
                if now - last_note >= self.status_interval:
                    last_note = now
                    log.info("Still waiting for the task lock %s (held by %s)", self.path, self.holder() or "unknown")
            except OSError as exc:  # after Timeout (an OSError too): e.g. a read-only or full file system
                raise_as_disk_error(self.path, exc)
        try:
            self.holder_path.write_text(f"pid {os.getpid()} on {socket.gethostname()}\n")
        except OSError:
            pass  # the note is informative only

    def release(self) -> None:
        if self._lock.is_locked:
            try:
                self.holder_path.unlink(missing_ok=True)
            except OSError:
                pass
            self._lock.release()

    def __enter__(self) -> TaskLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
