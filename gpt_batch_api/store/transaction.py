"""All-or-nothing updates of several task files: a small redo journal.

Protocol (see docs/DESIGN.md): each new file content is staged as an fsynced temp file; the journal,
listing every staged write, rename and delete, is written atomically — that is the commit point; then
the operations are applied, the folder fsynced, and the journal removed. After a crash, an existing
journal is replayed (every operation is idempotent), and staged files without a journal are garbage.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ..errors import TaskFileError
from .atomic import atomic_write_bytes, crash_point, dumps_json, fsync_dir, write_temp

log = logging.getLogger(__name__)
JOURNAL_VERSION = 1


class Transaction:
    """Collects writes/renames/deletes of files in one folder and commits them atomically."""

    def __init__(self, journal: str | os.PathLike[str]) -> None:
        self.journal = Path(journal)
        self.folder = self.journal.parent
        self._ops: list[dict[str, str]] = []
        self._staged: list[Path] = []
        self.committed = False

    def _name(self, path: str | os.PathLike[str]) -> str:
        path = Path(path)
        if path.parent.resolve() != self.folder.resolve():
            raise ValueError(f"{path} is outside the transaction folder {self.folder}")
        return path.name

    def write_bytes(self, path: str | os.PathLike[str], data: bytes) -> None:
        name = self._name(path)
        temp = write_temp(self.folder / name, data)
        self._staged.append(temp)
        self._ops.append({"op": "write", "temp": temp.name, "path": name})

    def write_json(self, path: str | os.PathLike[str], obj: Any) -> None:
        self.write_bytes(path, dumps_json(obj))

    def rename(self, src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        self._ops.append({"op": "rename", "src": self._name(src), "path": self._name(dst)})

    def delete(self, path: str | os.PathLike[str]) -> None:
        self._ops.append({"op": "delete", "path": self._name(path)})

    def commit(self) -> None:
        if self.committed:
            raise RuntimeError("transaction committed twice")
        crash_point("txn_after_stage")
        if self._ops:
            atomic_write_bytes(self.journal, dumps_json({"version": JOURNAL_VERSION, "ops": self._ops}))
            crash_point("txn_after_journal")
            _apply(self.folder, self._ops)
            crash_point("txn_before_journal_remove")
            self.journal.unlink()
            fsync_dir(self.folder)
        self.committed = True
        self._staged = []

    def abort(self) -> None:
        for temp in self._staged:
            temp.unlink(missing_ok=True)
        self._staged = []
        self._ops = []

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def _apply(folder: Path, ops: list[dict[str, str]]) -> None:
    for i, op in enumerate(ops):
        target = folder / op["path"]
        if op["op"] == "write":
            temp = folder / op["temp"]
            if temp.exists():  # else: already applied before a crash
                os.replace(temp, target)
        elif op["op"] == "rename":
            src = folder / op["src"]
            if src.exists():
                os.replace(src, target)
        elif op["op"] == "delete":
            target.unlink(missing_ok=True)
        else:
            raise ValueError(f"unknown journal operation {op!r}")
        if i == 0:
            crash_point("txn_mid_apply")
    fsync_dir(folder)


def recover_transaction(journal: str | os.PathLike[str]) -> bool:
    """Finish a commit interrupted after its commit point; return True if there was one."""
    journal = Path(journal)
    if not journal.exists():
        return False
    try:
        data = json.loads(journal.read_bytes())
        ops = data["ops"]
        if data.get("version") != JOURNAL_VERSION:
            raise ValueError(f"unsupported journal version {data.get('version')!r}")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        # The journal is written atomically, so a corrupt one was damaged from outside: refuse to guess.
        raise TaskFileError(
            f"The commit journal {journal} is corrupt ({exc}). It was not modified; restore it, or delete it to "
            "fall back to the state before the interrupted commit.",
            str(journal),
        ) from None
    _apply(journal.parent, ops)
    journal.unlink()
    fsync_dir(journal.parent)
    return True
