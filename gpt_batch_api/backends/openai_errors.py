"""The openai SDK's errors in our words (``translate_api_error``), for the batch backend and direct calls."""

from __future__ import annotations

import openai

from ..api_errors import OPENAI, describe_no_answer, status_error, unreachable

__all__ = ["describe_connection_error", "translate_api_error"]

describe_connection_error = describe_no_answer  # the name the SDK-facing code and its tests use


def translate_api_error(exc: Exception, what: str, base_url: str | None = None) -> Exception:
    """Our error for an SDK error, with a message that names the fix (read by ``error_kind``: a gateway
    may answer a quota or key problem with another status), and no credentials of the base URL."""
    if isinstance(exc, openai.APIStatusError):
        return status_error(what, exc.status_code, exc.body, exc.message, OPENAI)
    if isinstance(exc, openai.APIConnectionError):
        return unreachable(what, base_url, describe_no_answer(exc)[1], OPENAI)
    return exc
