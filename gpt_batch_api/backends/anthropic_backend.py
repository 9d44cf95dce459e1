"""Anthropic's Message Batches API as a ``BatchBackend`` (``pip install "gpt_batch_api[anthropic]"``).

Anthropic batches carry no metadata, so the tag lives in every request's ``custom_id``:
``<tag token>_<engine custom_id>`` (``[A-Za-z0-9_-]``, at most 64 characters). A batch's ``custom_id``s
are only readable once it has ended, so ``find`` works from what is visible before that: batches created
since the push started with the same number of requests. Ended candidates are checked by their first result
line (certain); one candidate still running is returned uncertain (its results confirm or reject it in
``download``); several running candidates raise ``CandidatesUnresolved``, and the engine waits rather than
submit a second batch. See docs/DESIGN.md, "Exactly once without metadata".
"""

from __future__ import annotations

import contextlib
import datetime
import os
import tempfile
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import orjson

from ..api_errors import ANTHROPIC, describe_no_answer, status_error, unreachable
from ..errors import APIError, ConfigError, StopRequested
from ..server_answers import malformed
from ..store.atomic import TEMP_MARK, fsync_dir
from .anthropic_tokens import count_input_tokens
from .base import (
    BatchTag,
    CandidatesUnresolved,
    DownloadSummary,
    ForeignResults,
    RemoteBatch,
    RemoteStatus,
    TokenCounts,
)

__all__ = ["AnthropicBatchBackend", "import_anthropic"]

CLOCK_SKEW_S = 600.0
_STATUS_CODES = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


def import_anthropic() -> Any:
    """The ``anthropic`` SDK, or a ConfigError saying how to install it."""
    try:
        import anthropic
    except ImportError:
        raise ConfigError('Anthropic jobs need the anthropic SDK: pip install "gpt_batch_api[anthropic]"') from None
    return anthropic


def _stamp(value: Any) -> float:
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    return float(value or 0.0)


class AnthropicBatchBackend:
    """``BatchBackend`` over ``anthropic.Anthropic().messages.batches``."""

    name = "anthropic"
    max_requests = 100_000
    max_bytes = 256 * 1024 * 1024

    def __init__(self, client: Any = None, *, api_key: str | None = None, base_url: str | None = None) -> None:
        sdk = import_anthropic()
        self._sdk = sdk
        if client is None:
            key = api_key or os.environ.get("ANTHROPIC_API_KEY")
            if not key:
                raise ConfigError("No Anthropic API key: set ANTHROPIC_API_KEY.")
            client = sdk.Anthropic(api_key=key, base_url=base_url)
        self.client = client

    # --- calls ----------------------------------------------------------------------------------------

    def _call(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        sdk = self._sdk
        try:
            return call(*args, **kwargs)
        except sdk.APIError as exc:
            if isinstance(exc.__cause__, StopRequested):  # the SDK wraps what interrupted its HTTP call
                raise exc.__cause__ from None
            raise self._error(exc, what) from exc
        except (ValueError, AttributeError, TypeError) as exc:  # a body that is not the API's answer
            raise malformed(what, f"{type(exc).__name__}: {exc}") from None

    def _error(self, exc: Any, what: str) -> APIError:
        if isinstance(exc, self._sdk.APIStatusError):
            return status_error(what, exc.status_code, exc.body, _error_message(exc), ANTHROPIC)
        return unreachable(what, str(self.client.base_url), describe_no_answer(exc)[1], ANTHROPIC)

    def _view(self, batch: Any) -> RemoteBatch:
        counts = batch.request_counts
        total = counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired
        status = {"in_progress": RemoteStatus.RUNNING, "canceling": RemoteStatus.ENDING}.get(
            batch.processing_status, RemoteStatus.COMPLETED
        )
        if batch.processing_status == "ended":
            if batch.cancel_initiated_at is not None:
                status = RemoteStatus.CANCELLED
            elif counts.expired:
                status = RemoteStatus.EXPIRED
        elif status is RemoteStatus.COMPLETED:  # a word we do not know: not ended, so keep polling
            status = RemoteStatus.UNKNOWN
        return RemoteBatch(
            backend=self.name,
            batch_id=batch.id,
            status=status,
            provider_status=str(batch.processing_status),
            total=total,
            succeeded=counts.succeeded,
            failed=counts.errored + counts.canceled + counts.expired,
            created_at=_stamp(batch.created_at),
        )

    # --- BatchBackend ---------------------------------------------------------------------------------

    def prepare(self, batch_file: Path, tag: BatchTag) -> dict[str, str]:
        return {}  # the requests travel in the create call

    def discard(self, tag: BatchTag, handles: dict[str, str]) -> None:
        pass  # nothing is uploaded before a batch is created

    def submit(
        self, batch_file: Path, tag: BatchTag, num_requests: int, handles: dict[str, str] | None = None
    ) -> RemoteBatch:
        # The body is built as bytes (C-speed JSON per line): the SDK's typed path validates and copies every
        # request, which costs more than all the rest of a batch's local work.
        prefix = f"{tag.token}_"
        parts = []
        with open(batch_file, "rb") as file:
            for line in file:
                if line.strip():
                    request = orjson.loads(line)
                    custom_id = orjson.dumps(prefix + request["custom_id"])
                    parts.append(b'{"custom_id":' + custom_id + b',"params":' + orjson.dumps(request["body"]) + b"}")
        if len(parts) != num_requests:
            raise APIError(f"batch file {batch_file} holds {len(parts)} requests, expected {num_requests}")
        body = b'{"requests":[' + b",".join(parts) + b"]}"
        client = self.client.with_options(max_retries=0)  # a retry could submit twice
        batch_type = self._sdk.types.messages.MessageBatch
        batch = self._call(
            f"create batch {tag.batch_id}",
            client.post,
            "/v1/messages/batches",
            cast_to=batch_type,
            content=body,
            options={"headers": {"Content-Type": "application/json"}},
        )
        if not isinstance(batch, batch_type) or not isinstance(getattr(batch, "id", None), str):
            raise malformed(f"create batch {tag.batch_id}", f"got {type(batch).__name__}")
        return self._view(batch)

    def find(
        self, tag: BatchTag, num_requests: int, since: float, exclude: frozenset[str] = frozenset()
    ) -> RemoteBatch | None:
        running = []
        for batch in self._call("list batches", self.client.messages.batches.list, limit=100):
            view = self._view(batch)
            if view.created_at < since - CLOCK_SKEW_S:
                break  # newest first: the rest are older than the push
            if view.total != num_requests or view.batch_id in exclude:
                continue
            if batch.processing_status != "ended":
                running.append(view)
                continue
            with contextlib.closing(self._result_lines(view.batch_id)) as lines:  # the first line only
                first = next(lines, None)
            if first is not None and str(first.get("custom_id", "")).startswith(f"{tag.token}_"):
                return view
        if len(running) > 1:
            raise CandidatesUnresolved(
                f"{len(running)} running Anthropic batches of {num_requests} requests were created since batch "
                f"{tag.batch_id} was pushed: waiting until they end to tell which one is ours."
            )
        if running:
            running[0].certain = False
            return running[0]
        return None

    def status(self, remote: RemoteBatch) -> RemoteBatch:
        try:
            batch = self._call(f"poll batch {remote.batch_id}", self.client.messages.batches.retrieve, remote.batch_id)
        except APIError as exc:
            if exc.status_code == 404:
                raise KeyError(remote.batch_id) from exc
            raise
        view = self._view(batch)
        view.certain = remote.certain
        return view

    def _result_lines(self, batch_id: str) -> Generator[dict[str, Any], None, None]:
        """The batch's results stream, line by line, as plain dicts (streamed: never held whole)."""
        what = f"results of {batch_id}"
        try:
            with self.client.messages.batches.with_streaming_response.results(batch_id) as response:
                for line in response.iter_lines():
                    if line.strip():
                        entry = orjson.loads(line)
                        if not isinstance(entry, dict):
                            raise malformed(what, f"a line that is no result: {line[:60]!r}")
                        yield entry
        except (APIError, ForeignResults, StopRequested):
            raise
        except self._sdk.APIError as exc:
            if isinstance(exc.__cause__, StopRequested):
                raise exc.__cause__ from None
            raise self._error(exc, what) from exc
        except orjson.JSONDecodeError as exc:
            raise malformed(what, f"a line that is not JSON ({exc})") from None
        except Exception as exc:  # the HTTP library's error for a body cut short
            raise APIError(f"{what}: the download was cut short ({type(exc).__name__}: {exc})", transient=True) from exc

    def download(self, remote: RemoteBatch, tag: BatchTag, results: Path, errors: Path) -> DownloadSummary:
        """Streams the results into temp files next to ``results`` and ``errors``, renamed into place at the end."""
        prefix = f"{tag.token}_"
        outputs = {True: _TempFile(results), False: _TempFile(errors)}
        lines = succeeded = 0
        try:
            for entry in self._result_lines(remote.batch_id):
                custom_id = str(entry.get("custom_id", ""))
                if not custom_id.startswith(prefix):
                    if not remote.certain:
                        raise ForeignResults(f"Anthropic batch {remote.batch_id} is not batch {tag.batch_id}'s")
                    raise APIError(f"Anthropic batch {remote.batch_id} returned a foreign custom_id {custom_id!r}")
                result = entry.get("result")
                line, ok = _engine_line(custom_id[len(prefix) :], result if isinstance(result, dict) else {})
                outputs[ok].write(orjson.dumps(line) + b"\n")
                lines += 1
                succeeded += ok
            for output in outputs.values():
                output.commit()
        finally:
            for output in outputs.values():
                output.discard()
        return DownloadSummary(lines=lines, succeeded=succeeded)

    def count_input_tokens(
        self, bodies: list[dict[str, Any]], concurrency: int, stop_check: Callable[[], bool] = lambda: False
    ) -> TokenCounts:
        return count_input_tokens(self._sdk, self.client, bodies, concurrency, self._error, stop_check)

    def cancel(self, remote: RemoteBatch) -> None:
        try:
            self.client.messages.batches.cancel(remote.batch_id)
        except (self._sdk.NotFoundError, self._sdk.BadRequestError):
            pass  # gone, or already ended

    def delete(self, remote: RemoteBatch) -> None:
        try:
            self.client.messages.batches.delete(remote.batch_id)
        except self._sdk.NotFoundError:
            pass


def _error_message(exc: Any) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error")
    return str((error.get("message") if isinstance(error, dict) else None) or exc.message)


def _engine_line(custom_id: str, result: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """One Anthropic result as an engine result line, and whether it is an answer."""
    kind = result.get("type")
    if kind == "succeeded":
        return {"custom_id": custom_id, "response": {"status_code": 200, "body": result.get("message")}}, True
    if kind == "errored":
        body = result.get("error") or {}
        error_type = (body.get("error") or {}).get("type") if isinstance(body.get("error"), dict) else None
        status = _STATUS_CODES.get(str(error_type), 500)
        return {"custom_id": custom_id, "response": {"status_code": status, "body": body}}, False
    code = {"canceled": "batch_cancelled", "expired": "batch_expired"}.get(str(kind), "unknown_result")
    message = f"the Anthropic batch ended with this request {kind}"
    return {"custom_id": custom_id, "error": {"code": code, "message": message}}, False


class _TempFile:
    """A file written through a temp file next to it; ``commit`` fsyncs and renames it into place (only if
    anything was written), ``discard`` removes a temp file that was not committed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None
        self._temp: Path | None = None

    def write(self, data: bytes) -> None:
        if self._file is None:
            fd, name = tempfile.mkstemp(prefix=f"{self.path.name}{TEMP_MARK}", dir=self.path.parent)
            self._temp, self._file = Path(name), os.fdopen(fd, "wb")
        self._file.write(data)

    def commit(self) -> None:
        if self._file is None or self._temp is None:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._temp, self.path)
        self._file = self._temp = None
        fsync_dir(self.path.parent)

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)
            self._temp = None
