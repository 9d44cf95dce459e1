"""Small shared pieces of the simulator: API errors in OpenAI's shape and object ids."""

from __future__ import annotations

import itertools
import os
import threading
from typing import Any

__all__ = ["ApiError", "error_body", "new_id"]

_counter = itertools.count(1)
_counter_lock = threading.Lock()
_PROCESS_TAG = os.urandom(4).hex()


def new_id(prefix: str) -> str:
    """A unique id like OpenAI's (``file-...``, ``batch_...``): unique per process and across processes."""
    with _counter_lock:
        number = next(_counter)
    return f"{prefix}{_PROCESS_TAG}{number:016x}"


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """The JSON body OpenAI sends with an error status."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class ApiError(Exception):
    """An error answer: HTTP status, OpenAI error body and extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(message, type_, code, param)
        self.headers = headers or {}


def not_found_route(method: str, path: str) -> ApiError:
    return ApiError(404, f"Invalid URL ({method} {path})")
