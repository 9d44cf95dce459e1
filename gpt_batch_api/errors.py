"""Every error gpt_batch_api raises on purpose, grouped by who must act.

- ``GPTBatchError``: base class; its message is meant for the user and names the fix.
  - ``ConfigError``: an option, or a combination of options, is invalid (the user's input).
  - ``TaskDataError``: task code stored something the task files cannot hold exactly (a non-string
    sample key, NaN in a payload or meta).
  - ``TaskFileError``: a file in the task directory is corrupt, truncated, from a newer version or
    unreadable. The file is left untouched; the message names it and how to recover.
  - ``TaskLockedError``: another process holds the task lock (names the lock file and the holder).
  - ``APIError``: the API server refused or failed, after any retries.
    - ``AuthenticationError``: the API key is missing or wrong (401).
    - ``QuotaExceededError``: the account is out of credit (429 ``insufficient_quota``).
    - ``BatchAPIUnavailableError``: the server has no Files/Batches API (use ``--force_direct``).
    - ``ServerRefusedError``: every request got the same refusal (a wrong URL, model or gateway setting):
      the run stops without using up samples or retries.
  - ``LimitError``: a configured limit makes progress impossible (e.g. one request above a batch limit).
  - ``ProcessingError``: results could not be processed (too many failed passes, failed batches).
- ``StopRequested``: control flow, not an error: Ctrl+C asked the run to stop at the next safe point.
"""

from __future__ import annotations

__all__ = [
    "APIError",
    "AuthenticationError",
    "BatchAPIUnavailableError",
    "ConfigError",
    "GPTBatchError",
    "LimitError",
    "ProcessingError",
    "QuotaExceededError",
    "ServerRefusedError",
    "StopRequested",
    "TaskDataError",
    "TaskFileError",
    "TaskLockedError",
]


class GPTBatchError(Exception):
    """Base class of all errors raised on purpose by gpt_batch_api; the message is for the user."""


class ConfigError(GPTBatchError, ValueError):
    """An option or a combination of options is invalid; the message names the option to change."""


class TaskDataError(GPTBatchError, TypeError):
    """Task code stored a value that would not come back the same from the task files; names it and the fix."""


class TaskFileError(GPTBatchError):
    """A task file is corrupt, truncated, from a newer version or unreadable; it was not modified."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class TaskLockedError(GPTBatchError):
    """Another process holds the task lock."""

    def __init__(self, message: str, lock_path: str, holder: str | None = None) -> None:
        super().__init__(message)
        self.lock_path = lock_path
        self.holder = holder


class APIError(GPTBatchError):
    """The API server refused or failed a call that we could not (or must not) retry.

    ``transient``: a later call may succeed (a 5xx, a rate limit that is not out-of-credit, no connection, a
    garbled answer); for a create call it also means the batch may have been created.
    """

    def __init__(self, message: str, status_code: int | None = None, *, transient: bool = False) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.transient = transient


class AuthenticationError(APIError):
    """The API key is missing or not accepted by the server."""


class QuotaExceededError(APIError):
    """The account has run out of credit (``insufficient_quota``); retrying cannot help."""


class BatchAPIUnavailableError(APIError):
    """The server does not offer the Files/Batches API (e.g. a local model server)."""


class ServerRefusedError(APIError):
    """The server refuses the configuration (404 for the URL, an unknown model, the same 4xx for every request
    of a batch): nothing was marked failed; fix the cause named in the message and rerun."""


class LimitError(GPTBatchError):
    """A configured limit makes further progress impossible."""


class ProcessingError(GPTBatchError):
    """Batch results could not be processed safely (failed batches, too many failed passes)."""


class StopRequested(Exception):
    """Raised at a safe point after Ctrl+C/SIGTERM asked the run to stop; nothing is lost."""
