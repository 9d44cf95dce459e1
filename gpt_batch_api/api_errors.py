"""The errors every provider's calls end in, worded once: a rejected key, no credit, an unreachable server, an
error status. The batch backends and the direct transports give their provider's words (``ProviderWords``);
``error_kinds`` reads what an answer means (a gateway may answer a key or quota problem with another status)."""

from __future__ import annotations

import dataclasses
from typing import Any

from .error_kinds import ErrorKind, error_kind
from .errors import APIError, AuthenticationError, QuotaExceededError
from .redact import redact

__all__ = ["ANTHROPIC", "OPENAI", "ProviderWords", "describe_no_answer", "status_error", "unreachable"]


@dataclasses.dataclass(frozen=True)
class ProviderWords:
    name: str  # "OpenAI": named in messages
    key_hint: str  # where the key comes from


OPENAI = ProviderWords("OpenAI", "OPENAI_API_KEY or --openai_api_key (through a gateway: the gateway's key)")
ANTHROPIC = ProviderWords("Anthropic", "ANTHROPIC_API_KEY or --anthropic_api_key")


def status_error(what: str, status: int, body: Any, message: str, words: ProviderWords) -> APIError:
    """Our error for an error status of ``what`` (a call), naming the fix; credentials in URLs redacted."""
    said = f"{status}: {message.strip()[:300]}" if message.strip() else str(status)
    kind = error_kind(status, body)
    error: APIError
    if kind == ErrorKind.AUTH:
        error = AuthenticationError(
            f"{what}: the API key was rejected ({said}). Check {words.key_hint}, then rerun the same command.", status
        )
    elif kind == ErrorKind.QUOTA:
        error = QuotaExceededError(
            f"{what}: the account is out of credit ({said}). Add credit or raise the usage limit on the "
            f"{words.name} billing page (or the gateway's budget), then rerun the same command.",
            status,
        )
    else:
        transient = status >= 500 or status in (408, 409, 429)
        advice = " The server may be overloaded or failing: nothing is lost, rerun the same command later."
        error = APIError(f"{what} failed with HTTP {said}.{advice if transient else ''}", status, transient=transient)
    error.args = (redact(str(error)),)
    return error


def unreachable(what: str, base_url: str | None, detail: str, words: ProviderWords) -> APIError:
    """The error for a call that got no answer (``detail`` from ``describe_no_answer``)."""
    where = f" at {redact(base_url)}" if base_url else ""
    return APIError(
        redact(
            f"{what}: cannot reach the API server{where} ({detail}). Check the network or --client_base_url, then "
            "rerun the same command (nothing is lost)."
        ),
        transient=True,
    )


def describe_no_answer(exc: BaseException) -> tuple[str, str]:
    """``("timeout" | "connection_error", message)`` for a call that got no answer.

    The innermost cause decides and is named: the SDKs' aiohttp transports report a refused or dropped
    connection as "Request timed out."
    """
    root: BaseException = exc
    while (cause := root.__cause__ or root.__context__) is not None and cause is not exc:
        root = cause
    timed_out = isinstance(root, TimeoutError) or "Timeout" in type(root).__name__
    if root is exc:
        return ("timeout" if timed_out else "connection_error"), redact(str(exc) or type(exc).__name__)
    if timed_out:
        return "timeout", redact(f"no answer in time ({type(root).__name__}: {root})")
    return "connection_error", redact(f"connection failed ({type(root).__name__}: {root})")
