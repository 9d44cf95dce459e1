"""OpenAI's Files + Batches API (and any server that offers it, e.g. through LiteLLM) as a ``BatchBackend``.

The tag is the batch's metadata (``gpt_batch_api_task``, ``gpt_batch_api_batch``), so ``find`` is certain.
``prepare`` uploads the file (named after the tag, so that an upload that never became a batch can be found
and deleted by ``discard``); ``submit`` creates the batch with the SDK's retries off: a retried create could
make a second batch, so a lost answer is settled by ``find`` instead.

Every answer is untrusted: an HTML page, an empty or cut body, or a JSON object of another kind becomes a
``MalformedAnswerError`` (transient), never an attribute error deep in the engine.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import openai

from ..error_kinds import STOPS_RUN, error_kind
from ..errors import APIError, BatchAPIUnavailableError, StopRequested
from ..redact import redact
from ..server_answers import KNOWN_BATCH_STATUSES, checked_answer, malformed
from .base import BatchTag, DownloadSummary, ForeignResults, RemoteBatch, RemoteStatus
from .openai_downloads import download_file
from .openai_errors import translate_api_error

__all__ = ["OpenAIBatchBackend"]

log = logging.getLogger(__name__)

META_TASK = "gpt_batch_api_task"
META_BATCH = "gpt_batch_api_batch"
CLOCK_SKEW_S = 600.0
SDK_PARSE_ERRORS = (ValueError, AttributeError, TypeError)  # what the SDK raises on a body that is not JSON
_STATUSES = {
    "validating": RemoteStatus.PENDING,
    "in_progress": RemoteStatus.RUNNING,
    "finalizing": RemoteStatus.ENDING,
    "cancelling": RemoteStatus.ENDING,
    "completed": RemoteStatus.COMPLETED,
    "expired": RemoteStatus.EXPIRED,
    "cancelled": RemoteStatus.CANCELLED,
    "failed": RemoteStatus.FAILED,
}
assert set(_STATUSES) == KNOWN_BATCH_STATUSES
T = TypeVar("T")


class OpenAIBatchBackend:
    """``BatchBackend`` over ``client.files`` and ``client.batches`` for one endpoint path."""

    name = "openai"
    max_requests = 50_000
    max_bytes = 200 * 1024 * 1024

    def __init__(self, client: openai.OpenAI, endpoint: str) -> None:
        self.client = client
        self.endpoint = endpoint  # e.g. "/v1/chat/completions"

    # ------------------------------------------------------------------ calls

    def _call(self, what: str, call: Callable[[], T], kind: type | None = None) -> T:
        """``call()``; its failures as our errors, and an answer that is no ``kind`` refused as malformed."""
        try:
            answer = call()
        except openai.OpenAIError as exc:
            if isinstance(exc.__cause__, StopRequested):  # the SDK wraps what interrupted its HTTP call
                raise exc.__cause__ from None
            raise self._error(exc, what) from exc
        except SDK_PARSE_ERRORS as exc:
            raise malformed(what, f"{type(exc).__name__}: {exc}") from None
        return checked_answer(what, answer, kind) if kind is not None else answer

    def _error(self, exc: Exception, what: str) -> Exception:
        base_url = str(self.client.base_url)
        if isinstance(exc, openai.NotFoundError) and what.startswith(("upload", "create batch", "list batches")):
            if not base_url.rstrip("/").endswith("/v1"):  # most often the URL, not the server
                return BatchAPIUnavailableError(
                    f"{what}: the URL answers 404 for /files. Check --client_base_url {redact(base_url)}: does it "
                    "end in /v1? (A local server without a Batch API needs --force_direct as well.)",
                    404,
                )
            return BatchAPIUnavailableError(
                f"{what}: the server at {redact(base_url)} has no Files/Batches API (HTTP 404). Local "
                "OpenAI-compatible servers (Ollama, vLLM, llama.cpp) only offer the direct API: rerun with "
                "--force_direct.",
                404,
            )
        return translate_api_error(exc, what, base_url)

    @staticmethod
    def _filename(tag: BatchTag) -> str:
        return f"gpt_batch_api_{tag.token}.jsonl"

    @staticmethod
    def _metadata(tag: BatchTag) -> dict[str, str]:
        return {META_TASK: tag.task_uid, META_BATCH: str(tag.batch_id)}

    def _view(self, batch: Any) -> RemoteBatch:
        counts = batch.request_counts
        errors = getattr(batch.errors, "data", None) or []
        handles = {"input_file_id": batch.input_file_id} if isinstance(batch.input_file_id, str) else {}
        for key in ("output_file_id", "error_file_id"):
            if isinstance(getattr(batch, key, None), str):
                handles[key] = getattr(batch, key)
        return RemoteBatch(
            backend=self.name,
            batch_id=batch.id,
            status=_STATUSES.get(batch.status, RemoteStatus.UNKNOWN),
            provider_status=str(batch.status),
            total=counts.total if counts else 0,
            succeeded=counts.completed if counts else 0,
            failed=counts.failed if counts else 0,
            created_at=float(batch.created_at) if isinstance(batch.created_at, int | float) else 0.0,
            congested=any(e.code == "token_limit_exceeded" for e in errors),
            errors=[f"{e.code}: {e.message}" for e in errors],
            handles=handles,
        )

    # ------------------------------------------------------------------ BatchBackend

    def prepare(self, batch_file: Path, tag: BatchTag) -> dict[str, str]:
        what = f"upload of batch {tag.batch_id}"
        with open(batch_file, "rb") as file:
            uploaded = self._call(what, lambda: self._upload(tag, file), openai.types.FileObject)
        return {"input_file_id": uploaded.id}

    def _upload(self, tag: BatchTag, file: Any) -> Any:
        """A first try without the SDK's retries: an answer that no retry can change (quota, key, URL) stops
        at once rather than after the SDK's back-off; anything else is tried again with them."""
        name = self._filename(tag)
        try:
            return self.client.with_options(max_retries=0).files.create(file=(name, file), purpose="batch")
        except openai.APIStatusError as exc:
            if error_kind(exc.status_code, exc.body) in STOPS_RUN:
                raise
        except openai.APIConnectionError:
            pass
        file.seek(0)
        return self.client.files.create(file=(name, file), purpose="batch")

    def submit(
        self, batch_file: Path, tag: BatchTag, num_requests: int, handles: dict[str, str] | None = None
    ) -> RemoteBatch:
        if not handles or "input_file_id" not in handles:
            handles = self.prepare(batch_file, tag)
        try:
            return self._create(tag, handles["input_file_id"])
        except APIError as exc:
            # The upload of an earlier run is gone (a server that restarted without its files, or a file
            # deleted meanwhile): the create was refused, so no batch exists; upload again, once.
            if exc.status_code not in (400, 404) or "input_file_id" not in str(exc):
                raise
            log.warning("Batch %d: its uploaded file is gone (%s); uploading it again", tag.batch_id, exc)
            return self._create(tag, self.prepare(batch_file, tag)["input_file_id"])

    def _create(self, tag: BatchTag, input_file_id: str) -> RemoteBatch:
        client = self.client.with_options(max_retries=0)  # an SDK retry could create a second batch
        batch = self._call(
            f"create batch {tag.batch_id}",
            lambda: client.batches.create(
                input_file_id=input_file_id,
                endpoint=self.endpoint,  # type: ignore[arg-type]
                completion_window="24h",
                metadata=self._metadata(tag),
            ),
            openai.types.Batch,
        )
        return self._view(batch)

    def find(
        self, tag: BatchTag, num_requests: int, since: float, exclude: frozenset[str] = frozenset()
    ) -> RemoteBatch | None:
        wanted = self._metadata(tag)
        page = self._call("list batches", lambda: self.client.batches.list(limit=100))
        while True:
            data = getattr(page, "data", None)
            if not isinstance(data, list):
                raise malformed("list batches", f"got {type(page).__name__}")
            for remote in data:
                checked_answer("list batches", remote, openai.types.Batch)
                if not isinstance(remote.created_at, int | float) or remote.created_at < since - CLOCK_SKEW_S:
                    return None  # newest first
                metadata = remote.metadata if isinstance(remote.metadata, dict) else {}
                if all(metadata.get(key) == value for key, value in wanted.items()):
                    return self._view(remote)
            if not data or not page.has_next_page():
                return None
            page = self._call("list batches", page.get_next_page)

    def discard(self, tag: BatchTag, handles: dict[str, str]) -> None:
        name = self._filename(tag)
        try:
            listed = self.client.files.list(purpose="batch")
            orphans = {f.id for f in listed if getattr(f, "filename", None) == name}
        except (openai.NotFoundError, openai.APIConnectionError, *SDK_PARSE_ERRORS):
            orphans = set()
        if handles.get("input_file_id"):
            orphans.add(handles["input_file_id"])
        for file_id in orphans:
            log.info("Deleting uploaded file %s of batch %d: it never became a batch", file_id, tag.batch_id)
            self._delete_file(file_id)

    def status(self, remote: RemoteBatch) -> RemoteBatch:
        what = f"poll batch {remote.batch_id}"
        try:
            batch = self._call(what, lambda: self.client.batches.retrieve(remote.batch_id), openai.types.Batch)
        except APIError as exc:
            if isinstance(exc.__cause__, openai.NotFoundError):
                raise KeyError(remote.batch_id) from exc
            raise
        return self._view(batch)

    def download(self, remote: RemoteBatch, tag: BatchTag, results: Path, errors: Path) -> DownloadSummary:
        """Streams each file to the task directory (a 200 MB result file is never held in memory)."""
        what = f"poll batch {remote.batch_id}"
        batch = self._call(what, lambda: self.client.batches.retrieve(remote.batch_id), openai.types.Batch)
        metadata = batch.metadata if isinstance(batch.metadata, dict) else {}
        if any(metadata.get(key) != value for key, value in self._metadata(tag).items()):
            if not remote.certain:
                raise ForeignResults(f"remote batch {remote.batch_id} is not batch {tag.batch_id}'s")
            raise APIError(f"remote batch {remote.batch_id} carries metadata {metadata}, not batch {tag.batch_id}'s")
        if remote.succeeded > 0 and not remote.handles.get("output_file_id"):
            raise APIError(
                f"the server reports {remote.succeeded} answered requests of {remote.batch_id} "
                f"({remote.provider_status}) but names no output file"
            )
        lines = succeeded = 0
        for key, path in (("output_file_id", results), ("error_file_id", errors)):
            file_id = remote.handles.get(key)
            if file_id:
                what = f"download of file {file_id} of batch {tag.batch_id}"
                self._call(what, functools.partial(download_file, self.client, file_id, path))
                count = _count_lines(path)
                lines += count
                succeeded += count if key == "output_file_id" else 0
        return DownloadSummary(lines=lines, succeeded=succeeded)

    def cancel(self, remote: RemoteBatch) -> None:
        try:
            self.client.batches.cancel(remote.batch_id)
        except (openai.NotFoundError, openai.ConflictError):
            pass  # gone, or already ended
        except openai.OpenAIError as exc:
            raise translate_api_error(exc, f"cancel batch {remote.batch_id}", str(self.client.base_url)) from exc

    def delete(self, remote: RemoteBatch) -> None:
        # OpenAI keeps batch objects; deleting means deleting the files behind them.
        for file_id in remote.handles.values():
            self._delete_file(file_id)

    def _delete_file(self, file_id: str) -> None:
        try:
            self.client.files.delete(file_id)
        except openai.NotFoundError:
            pass
        except openai.OpenAIError as exc:
            raise translate_api_error(exc, f"delete file {file_id}", str(self.client.base_url)) from exc


def _count_lines(path: Path) -> int:
    count = 0
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            count += chunk.count(b"\n")
    return count
