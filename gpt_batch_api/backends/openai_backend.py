"""OpenAI's Files + Batches API (and any server that offers it, e.g. through LiteLLM) as a ``BatchBackend``.

The tag is the batch's metadata (``gpt_batch_api_task``, ``gpt_batch_api_batch``), so ``find`` is certain.
``submit`` uploads the file (named after the tag, so that an upload that never became a batch can be found
and deleted by ``discard``) and creates the batch with the SDK's retries off: a retried create could make a
second batch, so a lost answer is settled by ``find`` instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai

from ..errors import APIError
from ..remote import translate_api_error
from ..store.atomic import atomic_write_bytes
from .base import BatchTag, DownloadSummary, ForeignResults, RemoteBatch, RemoteStatus

__all__ = ["OpenAIBatchBackend"]

META_TASK = "gpt_batch_api_task"
META_BATCH = "gpt_batch_api_batch"
CLOCK_SKEW_S = 600.0
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


class OpenAIBatchBackend:
    """``BatchBackend`` over ``client.files`` and ``client.batches`` for one endpoint path."""

    name = "openai"
    max_requests = 50_000
    max_bytes = 200 * 1024 * 1024

    def __init__(self, client: openai.OpenAI, endpoint: str) -> None:
        self.client = client
        self.endpoint = endpoint  # e.g. "/v1/chat/completions"

    def _call(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except openai.OpenAIError as exc:
            raise translate_api_error(exc, what, str(self.client.base_url)) from exc

    @staticmethod
    def _filename(tag: BatchTag) -> str:
        return f"gpt_batch_api_{tag.token}.jsonl"

    def _view(self, batch: Any) -> RemoteBatch:
        counts = batch.request_counts
        errors = getattr(batch.errors, "data", None) or []
        handles = {"input_file_id": batch.input_file_id}
        for key in ("output_file_id", "error_file_id"):
            if getattr(batch, key, None):
                handles[key] = getattr(batch, key)
        return RemoteBatch(
            backend=self.name,
            batch_id=batch.id,
            status=_STATUSES.get(batch.status, RemoteStatus.RUNNING),  # unknown: keep polling, log the word
            provider_status=str(batch.status),
            total=counts.total if counts else 0,
            succeeded=counts.completed if counts else 0,
            failed=counts.failed if counts else 0,
            created_at=float(batch.created_at),
            congested=any(e.code == "token_limit_exceeded" for e in errors),
            errors=[f"{e.code}: {e.message}" for e in errors],
            handles=handles,
        )

    def submit(self, batch_file: Path, tag: BatchTag, num_requests: int) -> RemoteBatch:
        with open(batch_file, "rb") as file:
            uploaded = self._call(
                f"upload of batch {tag.batch_id}", self.client.files.create,
                file=(self._filename(tag), file), purpose="batch",
            )  # fmt: skip
        batch = self._call(
            f"create batch {tag.batch_id}",
            self.client.with_options(max_retries=0).batches.create,
            input_file_id=uploaded.id,
            endpoint=self.endpoint,
            completion_window="24h",
            metadata=self._metadata(tag),
        )
        return self._view(batch)

    @staticmethod
    def _metadata(tag: BatchTag) -> dict[str, str]:
        return {META_TASK: tag.task_uid, META_BATCH: str(tag.batch_id)}

    def find(self, tag: BatchTag, num_requests: int, since: float) -> RemoteBatch | None:
        wanted = self._metadata(tag)
        for batch in self._call("list batches", self.client.batches.list, limit=100):
            if batch.created_at < since - CLOCK_SKEW_S:
                break  # newest first
            metadata = batch.metadata or {}
            if all(metadata.get(key) == value for key, value in wanted.items()):
                return self._view(batch)
        return None

    def discard(self, tag: BatchTag) -> None:
        """Delete files uploaded for ``tag`` that never became a batch (call only after ``find`` said None)."""
        name = self._filename(tag)
        for file in self._call("list files", self.client.files.list, purpose="batch"):
            if file.filename == name:
                self._delete_file(file.id)

    def status(self, remote: RemoteBatch) -> RemoteBatch:
        try:
            batch = self._call(f"poll batch {remote.batch_id}", self.client.batches.retrieve, remote.batch_id)
        except APIError as exc:
            if exc.status_code == 404:
                raise KeyError(remote.batch_id) from exc
            raise
        return self._view(batch)

    def download(self, remote: RemoteBatch, tag: BatchTag, results: Path, errors: Path) -> DownloadSummary:
        batch = self._call(f"poll batch {remote.batch_id}", self.client.batches.retrieve, remote.batch_id)
        if (batch.metadata or {}) != self._metadata(tag):
            if not remote.certain:
                raise ForeignResults(f"remote batch {remote.batch_id} is not batch {tag.batch_id}'s")
            raise APIError(f"remote batch {remote.batch_id} carries metadata {batch.metadata}, not {tag}'s")
        lines = succeeded = 0
        for key, path in (("output_file_id", results), ("error_file_id", errors)):
            file_id = remote.handles.get(key)
            if not file_id:
                continue
            content = self._call(f"download of batch {remote.batch_id}", self.client.files.content, file_id)
            data = content.read()
            atomic_write_bytes(path, data)
            count = sum(1 for line in data.splitlines() if line.strip())
            lines += count
            succeeded += count if key == "output_file_id" else 0
        return DownloadSummary(lines=lines, succeeded=succeeded)

    def cancel(self, remote: RemoteBatch) -> None:
        try:
            self.client.batches.cancel(remote.batch_id)
        except (openai.NotFoundError, openai.ConflictError):
            pass  # gone, or already ended

    def delete(self, remote: RemoteBatch) -> None:
        # OpenAI keeps batch objects; deleting means deleting the files behind them.
        for file_id in remote.handles.values():
            self._delete_file(file_id)

    def _delete_file(self, file_id: str) -> None:
        try:
            self.client.files.delete(file_id)
        except openai.NotFoundError:
            pass
