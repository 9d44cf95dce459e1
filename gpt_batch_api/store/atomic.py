"""Durable whole-file writes, strict JSON reads, temp-file hygiene and test crash points.

A file written with ``atomic_write_*`` is either entirely the old content or entirely the new one under
its real name, whatever happens to the process: the bytes go to a temp file in the same folder, are
flushed and fsynced, renamed over the target, and the folder is fsynced so the rename itself survives a
power cut.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from ..errors import TaskFileError

TEMP_MARK = ".tmp-"  # every temp file we create contains this in its name
CRASH_POINT_ENV = "GPT_BATCH_API_CRASH_POINT"
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make renames/creations/deletions inside ``folder`` durable (a no-op where not supported)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def disk_error(path: str | os.PathLike[str], exc: OSError) -> TaskFileError:
    """A TaskFileError that says what went wrong with the disk and that nothing was damaged."""
    reason = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return TaskFileError(
        f"Cannot write {path}: {reason}. The task files were not modified; free space or fix permissions, then "
        "rerun the same command to continue.",
        str(path),
    )


def raise_as_disk_error(path: str | os.PathLike[str], exc: OSError) -> NoReturn:
    """Re-raise ``exc``: as a TaskFileError naming ``path`` if the disk is full, read-only or forbidden."""
    if exc.errno in DISK_ERRNOS:
        raise disk_error(path, exc) from None
    raise exc


_umask: int | None = None


def current_umask() -> int:
    """The process umask (read once: setting it to read it is not thread-safe, so not done per file)."""
    global _umask
    if _umask is None:
        try:  # Linux shows it without changing it
            with open("/proc/self/status") as status:
                _umask = next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
        except (OSError, StopIteration, ValueError, IndexError):
            _umask = os.umask(0o022)
            os.umask(_umask)
    return _umask


def write_temp(target: Path, data: bytes) -> Path:
    """Write ``data`` to a fresh fsynced temp file next to ``target`` and return its path."""
    fd, name = tempfile.mkstemp(prefix=f"{target.name}{TEMP_MARK}", dir=target.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; task files all get the mode open() gives
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except OSError as exc:
        Path(name).unlink(missing_ok=True)
        raise_as_disk_error(target, exc)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    target = Path(path)
    temp = write_temp(target, data)
    try:
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def dumps_json(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, indent=1).encode("utf-8")


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_bytes(path, dumps_json(obj))


def read_json(
    path: str | os.PathLike[str],
    *,
    what: str = "file",
    fix: str = "start the task afresh with --wipe_task (this forgets all progress)",
) -> Any:
    """Parse a JSON file, turning corruption into a TaskFileError that names the file and the way out."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TaskFileError(f"The {what} file {path} is missing.", str(path)) from None
    except OSError as exc:
        raise TaskFileError(f"Cannot read the {what} file {path}: {exc.strerror or exc}.", str(path)) from None
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TaskFileError(
            f"The {what} file {path} is corrupt ({exc}); it was not modified. Restore it from a backup, or {fix}.",
            str(path),
        ) from None


def is_temp_file(path: str | os.PathLike[str]) -> bool:
    return TEMP_MARK in Path(path).name


def cleanup_temp_files(folder: str | os.PathLike[str], owns: Callable[[str], bool]) -> list[Path]:
    """Delete temp files a killed process left behind (never referenced by committed state).

    Only those ``owns(name)`` accepts: another task sharing the folder may be staging its own right now.
    """
    removed = []
    for path in Path(folder).iterdir():
        if is_temp_file(path) and owns(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        fsync_dir(folder)
    return removed


def crash_point(name: str) -> None:
    """Die here, like a SIGKILL would, if the environment names this point (used by crash tests only)."""
    if os.environ.get(CRASH_POINT_ENV) == name:
        os._exit(137)
