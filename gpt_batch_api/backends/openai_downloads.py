"""Result files streamed from the Files API to the task directory, never held whole in memory.

A batch's output file can be hundreds of megabytes: it is written to a temp file next to its final name in
chunks of ``CHUNK_BYTES`` as it arrives, fsynced, and renamed into place. A body cut short (the connection
dropped, or fewer bytes than the ``Content-Length`` said) is downloaded again, up to ``ATTEMPTS`` times; the
temp file of a failed attempt is removed (and a crash leaves only a temp file, which the next start deletes).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import openai

from ..store.atomic import TEMP_MARK, fsync_dir, raise_as_disk_error

__all__ = ["download_file"]

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
ATTEMPTS = 3


class _CutShort(Exception):
    pass


def _transport_errors() -> tuple[type[BaseException], ...]:
    """What the SDK's HTTP library raises when a body stops half way (httpx2 in openai 3, httpx before)."""
    from openai import _base_client

    module = getattr(_base_client, "httpx2", None) or _base_client.httpx  # type: ignore[attr-defined]
    return (module.TransportError, openai.APIConnectionError, _CutShort)


def download_file(client: Any, file_id: str, path: Path) -> int:
    """Stream the Files API content of ``file_id`` into ``path`` (atomically, fsynced); returns its size.

    Status errors (404, 401, ...) propagate as the SDK raises them; a body cut short is fetched again.
    """
    for attempt in range(1, ATTEMPTS + 1):
        fd, name = tempfile.mkstemp(prefix=f"{path.name}{TEMP_MARK}", dir=path.parent)
        temp = Path(name)
        try:
            with os.fdopen(fd, "wb") as file:
                size = _stream(client, file_id, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, path)
        except _transport_errors() as exc:
            temp.unlink(missing_ok=True)
            if attempt == ATTEMPTS:
                raise openai.APIConnectionError(
                    message=f"the download of {file_id} was cut short {ATTEMPTS} times ({exc})",
                    request=None,  # type: ignore[arg-type]
                ) from None
            log.warning("The download of %s was cut short (%s); downloading it again", file_id, exc)
            time.sleep(0.5 * attempt)
            continue
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise_as_disk_error(path, exc)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)
        return size
    raise AssertionError("unreachable")


def _stream(client: Any, file_id: str, file: Any) -> int:
    with client.files.with_streaming_response.content(file_id) as response:
        expected = response.headers.get("content-length")
        size = 0
        for chunk in response.iter_bytes(CHUNK_BYTES):
            file.write(chunk)
            size += len(chunk)
        if expected is not None and expected.isdigit() and size != int(expected):
            raise _CutShort(f"{size} of {expected} bytes")
        return size
