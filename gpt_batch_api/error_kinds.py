"""What an error answer means, read from everything it says (status, ``type``, ``code``, message).

One place for batch result lines, direct calls and the Files/Batches calls, because a gateway in front of
the API rewrites errors: LiteLLM answers ``insufficient_quota`` as ``{"type": "throttling_error", "code":
"429"}`` with the original text in the message, and a wrong client key as ``400 no_db_connection``. Reading
the status alone would retry a run that cannot succeed, or mark every sample failed for good.

Kinds that stop the run at once (nothing is gained by sending more): ``QUOTA``, ``AUTH``, ``URL`` (the base
URL answers 404 for the endpoint) and ``MODEL`` (the server does not know the model). ``advice`` names the
likely cause and the fix for each.
"""

from __future__ import annotations

import enum
import re
from typing import Any

__all__ = ["STOPS_RUN", "ErrorKind", "advice", "error_fields", "error_kind"]


class ErrorKind(enum.StrEnum):
    QUOTA = "quota"  # out of credit: retrying cannot help
    AUTH = "auth"  # the key is missing or rejected (by the API or by a gateway)
    URL = "url"  # the endpoint does not exist at this base URL (404 that names no model)
    MODEL = "model"  # the model does not exist or is not served here
    RATE_LIMIT = "rate_limit"  # 429 that is not about quota: wait and retry
    SERVER = "server"  # 5xx, 408, 409: retry
    REQUEST = "request"  # another 4xx: this request's fault, unless every request gets it


STOPS_RUN = frozenset({ErrorKind.QUOTA, ErrorKind.AUTH, ErrorKind.URL, ErrorKind.MODEL})

_QUOTA = re.compile(
    r"insufficient_quota|exceeded your current quota|check your plan and billing|credit balance is too low", re.I
)  # the last: Anthropic's words
_QUOTA_CODES = frozenset({"insufficient_quota", "billing_error"})  # the last: Anthropic's 402 (payment)
_AUTH_CODES = frozenset({"invalid_api_key", "no_db_connection", "authentication_error", "invalid_authentication"})
_AUTH = re.compile(
    r"incorrect api key|invalid api key|authentication error|no api key|invalid proxy server token", re.I
)
_MODEL_CODES = frozenset({"model_not_found"})
_MODEL = re.compile(
    r"\bmodel\b[^.]*\b(does not exist|not found)|invalid model name|no such model|^model: \S+$", re.I
)  # the last: Anthropic's not_found_error for an unknown model


def error_fields(body: Any) -> tuple[str | None, str | None, str]:
    """``(type, code, message)`` of an error body in OpenAI's shape, a flat one (vLLM) or plain text."""
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        type_, code = error.get("type"), error.get("code")
        message = error.get("message") or error.get("detail") or ""
        return (
            str(type_) if type_ is not None else None,
            str(code) if code is not None else None,
            message if isinstance(message, str) else str(message),
        )
    return None, None, str(error or "")[:500]


def error_kind(status: int | None, body: Any) -> ErrorKind:
    """The kind of an error answer with HTTP ``status`` and ``body`` (see the module docstring)."""
    type_, code, message = error_fields(body)
    names = {str(type_ or "").lower(), str(code or "").lower()}
    if names & _QUOTA_CODES or _QUOTA.search(message):
        return ErrorKind.QUOTA
    if status in (401, 403) or names & _AUTH_CODES or _AUTH.search(message):
        return ErrorKind.AUTH
    if names & _MODEL_CODES or (status in (400, 404) and _MODEL.search(message)):
        return ErrorKind.MODEL
    if status == 404:
        return ErrorKind.URL
    if status == 429:
        return ErrorKind.RATE_LIMIT
    if status is None or status >= 500 or status in (408, 409):
        return ErrorKind.SERVER
    return ErrorKind.REQUEST


def advice(
    kind: ErrorKind, status: int | None, body: Any, *, path: str, base_url: str, model: str | None, key_hint: str
) -> str:
    """One sentence naming the likely cause of a configuration error and the fix (``key_hint``: where the
    provider's key comes from, see ``api_errors.ProviderWords``)."""
    type_, code, message = error_fields(body)
    said = f"HTTP {status}{f' {code or type_}' if code or type_ else ''}: {message.strip()[:300]}"
    if kind == ErrorKind.QUOTA:
        return (
            f"the account is out of credit ({said}). Add credit or raise the usage limit on the provider's "
            "billing page (or the gateway's budget), then rerun the same command"
        )
    if kind == ErrorKind.AUTH:
        return f"the API key was rejected ({said}). Check {key_hint}, then rerun the same command"
    if kind == ErrorKind.MODEL:
        return (
            f"the server does not know the model {model!r} ({said}). Fix the model name ({base_url.rstrip('/')}"
            "/models lists what the server offers), then rerun with --model NAME --reinit_meta --wipe_requests "
            "(the queued requests carry the old name and are built again)"
        )
    if kind == ErrorKind.URL:
        hint = "does it end in /v1?" if not base_url.rstrip("/").endswith("/v1") else "is it the API's base URL?"
        return f"the URL answers 404 for {path} ({said}). Check --client_base_url {base_url} ({hint})"
    return (
        f"every request got the same answer ({said}): the server refuses the configuration, not single "
        "requests. Check the model, the request options, the API key and any gateway's settings, then rerun (add "
        "--wipe_requests once if the requests themselves must change, to build them again)"
    )
