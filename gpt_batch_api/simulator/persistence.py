"""The simulator's memory on disk: its files and batches in one JSON file, so a new simulator continues.

The demo's ``--simulate`` starts a simulator inside the demo process. Without this, a Ctrl+C would take the
simulated remote down with the process, and the rerun would find none of the batches it had pushed (as if
someone had deleted them), and push their requests again. With a state file, the rerun's simulator loads
every file and batch; batch lifecycles are computed from their timestamps, so a batch that was in progress
when the demo stopped has completed by the time the rerun looks at it, like a real remote batch.

What is on disk: ``{"version": 1, "files": [...], "batches": [...]}``. It is rewritten atomically (temp file,
fsync, rename) after each request that changed a file or a batch, before that request is answered, so a
client never holds an id the file does not have. Configuration, counters and injected faults are not kept.
"""

from __future__ import annotations

import base64
import dataclasses
import glob
import json
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..store.atomic import TEMP_MARK, atomic_write_bytes
from .batches_api import _Batch, _Plan
from .files_api import StoredFile

if TYPE_CHECKING:
    from .server import Simulator

__all__ = ["SimulatorStateFile"]

log = logging.getLogger(__name__)

VERSION = 1


class SimulatorStateFile:
    """Loads a simulator's files and batches from ``path`` and saves them there when they change."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._saved: Any = None  # fingerprint of the last saved content
        self._save_lock = threading.Lock()  # one writer at a time, so an older snapshot never lands last

    def load(self, sim: Simulator) -> None:
        """Restore the files and batches saved by an earlier simulator (nothing if there is no file)."""
        for stale in self.path.parent.glob(glob.escape(self.path.name) + TEMP_MARK + "*"):
            stale.unlink(missing_ok=True)  # a save cut short by a kill: the file itself is intact
        try:
            data = json.loads(self.path.read_bytes())
            if data.get("version") != VERSION:
                raise ValueError(f"unknown version {data.get('version')!r}")
            files = [_file_from_json(item) for item in data["files"]]
            batches = [_batch_from_json(item) for item in data["batches"]]
        except (FileNotFoundError, NotADirectoryError):
            return  # a first run (or a folder that cannot exist: the task reports that itself)
        except OSError as exc:
            log.warning("Simulator state %s cannot be read (%s): starting empty", self.path, exc)
            return
        except (ValueError, KeyError, TypeError) as exc:
            # Only a rehearsal remote is lost: the task's own files say what it still needs.
            aside = self.path.with_name(self.path.name + ".damaged")
            log.warning("Simulator state %s is damaged (%s): moved to %s, starting empty", self.path, exc, aside)
            os.replace(self.path, aside)
            return
        with sim.lock:
            sim.files.files.update((f.id, f) for f in files)
            sim.batches.batches.update((b.id, b) for b in batches)
            self._saved = _fingerprint(sim)

    def save_if_changed(self, sim: Simulator) -> None:
        """Write the files and batches if any was added, deleted, cancelled or finished since the last save."""
        with self._save_lock:
            with sim.lock:
                fingerprint = _fingerprint(sim)
                if fingerprint == self._saved:
                    return
                data = {
                    "version": VERSION,
                    "files": [_file_to_json(f) for f in sim.files.files.values()],
                    "batches": [_batch_to_json(b) for b in sim.batches.batches.values()],
                }
            atomic_write_bytes(self.path, json.dumps(data, ensure_ascii=False).encode())
            self._saved = fingerprint


def _fingerprint(sim: Simulator) -> Any:
    batches = tuple((b.id, b.final is not None, b.cancelled_at) for b in sim.batches.batches.values())
    return tuple(sim.files.files), batches


def _file_to_json(stored: StoredFile) -> dict[str, Any]:
    item: dict[str, Any] = {k: v for k, v in dataclasses.asdict(stored).items() if k != "data"}
    try:
        item["text"] = stored.data.decode("utf-8")
    except UnicodeDecodeError:
        item["base64"] = base64.b64encode(stored.data).decode("ascii")
    return item


def _file_from_json(item: dict[str, Any]) -> StoredFile:
    data = item["text"].encode("utf-8") if "text" in item else base64.b64decode(item["base64"])
    return StoredFile(item["id"], item["filename"], item["purpose"], data, int(item["created_at"]))


def _batch_to_json(batch: _Batch) -> dict[str, Any]:
    item = dataclasses.asdict(batch)
    item.pop("producing")  # output files being written by a thread of the old process: produced again
    return item


def _batch_from_json(item: dict[str, Any]) -> _Batch:
    fields = dict(item)
    fields["plan"] = _Plan(**fields["plan"])
    fields["requests"] = [(str(custom_id), body) for custom_id, body in fields["requests"]]
    return _Batch(**fields)
