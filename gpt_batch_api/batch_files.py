"""Checks of a local batch's files before anything of it is sent."""

from __future__ import annotations

import zlib

from .errors import TaskFileError
from .queue_records import REQUIRED_HEAD_KEYS
from .requester_state import BatchState
from .store.layout import TaskLayout

__all__ = ["check_batch_file"]


def check_batch_file(layout: TaskLayout, batch: BatchState) -> None:
    """Refuse to upload (and pay for) a local batch file that was damaged since it was written."""
    path, info_path = layout.batch_input(batch.id), layout.batch_info(batch.id)
    size = path.stat().st_size if path.exists() else -1
    problem = None
    if size != batch.size:
        problem = f"{path} has {max(size, 0)} bytes but was written with {batch.size}"
    elif batch.input_crc is not None and batch.info_crc is not None:  # any change, even a field's type
        if zlib.crc32(path.read_bytes()) != batch.input_crc:
            problem = f"{path} is not the request file it was written as (its CRC-32 differs)"
        elif not info_path.exists() or zlib.crc32(info_path.read_bytes()) != batch.info_crc:
            problem, path = f"{info_path} is not the info file of batch {batch.id} it was written as", info_path
    else:  # cut before CRCs were kept. C-speed counts: every line is one request of ours, and the info file
        data = path.read_bytes()  # lists each of them
        n = batch.num_requests
        if not data.startswith(b'{"custom_id":"') or data.count(b'\n{"custom_id":"') != n - 1:
            problem = f"{path} does not hold the {n} request lines it was written with"
        elif not info_path.exists() or (info := info_path.read_bytes()).count(b"\n") != n:
            problem, path = f"{info_path} does not list the {n} requests of batch {batch.id}", info_path
        elif (lack := _info_lacks(info, n)) is not None:
            problem, path = f"{info_path} has lines that are not a request's info ({lack})", info_path
    if problem is not None:
        raise TaskFileError(
            f"{problem}: it was changed outside gpt_batch_api. Nothing was uploaded. Restore the file, or drop "
            "the pending batches with --wipe_requests (answered samples are kept).",
            str(path),
        )


# The keys every info line has, counted at C speed over the whole file: a key inside a string value is escaped
# (\"ti\":), so only keys count; a meta key of the same name can only add.
_INFO_KEYS = tuple(f'"{key}":'.encode() for key in REQUIRED_HEAD_KEYS)


def _info_lacks(data: bytes, n: int) -> str | None:
    """What some of the ``n`` lines of an info file lack (a line damaged or edited by hand), or None."""
    if not data.startswith(b"{") or data.count(b"\n{") != n - 1:
        return "not every line is a JSON object"
    key = next((key for key in _INFO_KEYS if data.count(key) < n), None)
    return None if key is None else f"a line lacks {key.decode().rstrip(':')}"
