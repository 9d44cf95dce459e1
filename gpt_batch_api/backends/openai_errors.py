"""The openai SDK's errors in our words (``translate_api_error``), for the batch backend and direct calls."""

from __future__ import annotations

import openai

from ..error_kinds import ErrorKind, error_kind
from ..errors import APIError, AuthenticationError, QuotaExceededError
from ..redact import redact

__all__ = ["describe_connection_error", "translate_api_error"]


def translate_api_error(exc: Exception, what: str, base_url: str | None = None) -> Exception:
    """Our error for an SDK error, with a message that names the fix (read by ``error_kind``: a gateway
    may answer a quota or key problem with another status), and no credentials of the base URL."""
    error = _translate_api_error(exc, what, base_url)
    if isinstance(error, APIError):
        error.args = (redact(str(error)),)
    return error


def _translate_api_error(exc: Exception, what: str, base_url: str | None = None) -> Exception:
    if isinstance(exc, openai.APIStatusError):
        kind = error_kind(exc.status_code, exc.body)
        if kind == ErrorKind.AUTH:
            return AuthenticationError(
                f"{what}: the API key was rejected ({exc.status_code}: {exc.message}). Check OPENAI_API_KEY or "
                "--openai_api_key (through a gateway: the gateway's key).",
                exc.status_code,
            )
        if kind == ErrorKind.QUOTA:
            return QuotaExceededError(
                f"{what}: the account is out of credit (insufficient_quota). Add credit or raise the usage limit "
                "on the OpenAI billing page (or the gateway's budget), then rerun the same command.",
                exc.status_code,
            )
        transient = exc.status_code >= 500 or exc.status_code in (408, 409, 429)
        advice = (
            " The server may be overloaded or failing: nothing is lost, rerun the same command later."
            if transient
            else ""
        )
        return APIError(
            f"{what} failed with HTTP {exc.status_code}: {exc.message}.{advice}", exc.status_code, transient=transient
        )
    if isinstance(exc, openai.APIConnectionError):
        _, detail = describe_connection_error(exc)
        return APIError(
            f"{what}: cannot reach the API server{f' at {base_url}' if base_url else ''} ({detail}). Check the "
            "network or --client_base_url, then rerun the same command (nothing is lost).",
            transient=True,
        )
    return exc


def describe_connection_error(exc: Exception) -> tuple[str, str]:
    """``("timeout" | "connection_error", message)`` for a call that got no answer.

    The innermost cause decides and is named in the message: the SDK's aiohttp transport reports every
    connection failure (refused, dropped) as "Request timed out."
    """
    root: BaseException = exc
    while (cause := root.__cause__ or root.__context__) is not None and cause is not exc:
        root = cause
    if root is exc:
        return ("timeout" if isinstance(exc, openai.APITimeoutError) else "connection_error"), str(exc)
    timed_out = isinstance(root, TimeoutError) or type(root).__name__.endswith("Timeout")
    if timed_out:
        return "timeout", f"no answer in time ({type(root).__name__}: {root})"
    return "connection_error", f"connection failed ({type(root).__name__}: {root})"
