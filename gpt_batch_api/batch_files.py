"""Checks of a local batch's files before anything of it is sent."""

from __future__ import annotations

from .errors import TaskFileError
from .queue_records import QueueRecord
from .requester_state import BatchState
from .store import fastjson
from .store.layout import TaskLayout

__all__ = ["check_batch_file"]


def check_batch_file(layout: TaskLayout, batch: BatchState) -> None:
    """Refuse to upload (and pay for) a local batch file that was damaged since it was written."""
    path, info_path = layout.batch_input(batch.id), layout.batch_info(batch.id)
    size = path.stat().st_size if path.exists() else -1
    problem = None
    if size != batch.size:
        problem = f"{path} has {max(size, 0)} bytes but was written with {batch.size}"
    else:  # C-speed counts: every line is one request of ours, and the info file lists each of them
        data = path.read_bytes()
        n = batch.num_requests
        if not data.startswith(b'{"custom_id":"') or data.count(b'\n{"custom_id":"') != n - 1:
            problem = f"{path} does not hold the {n} request lines it was written with"
        elif not info_path.exists() or (info := info_path.read_bytes()).count(b"\n") != n:
            problem, path = f"{info_path} does not list the {n} requests of batch {batch.id}", info_path
        elif (bad := _first_bad_info_line(info)) is not None:
            problem, path = f"{info_path} line {bad} is not the info of a request", info_path
    if problem is not None:
        raise TaskFileError(
            f"{problem}: it was changed outside gpt_batch_api. Nothing was uploaded. Restore the file, or drop "
            "the pending batches with --wipe_requests (answered samples are kept).",
            str(path),
        )


def _first_bad_info_line(data: bytes) -> int | None:
    """The number of the first line that is not a request's info (what processing its results reads), or None."""
    for number, line in enumerate(data.splitlines(), 1):
        try:
            head = fastjson.loads(line)
            QueueRecord.from_head(head)
        except (ValueError, KeyError, TypeError):
            return number
    return None
