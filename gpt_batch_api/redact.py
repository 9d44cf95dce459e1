"""Secrets besides the API key: credentials and tokens inside URLs, removed from every message and log line.

A base URL may carry a password (``http://user:PASSWORD@host/v1``) or a token in its query
(``?api-key=...``); the SDK and its HTTP library put that URL into their error messages and request logs.
"""

from __future__ import annotations

import logging
import re

__all__ = ["RedactingFilter", "redact"]

_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s?#]+@")
_SECRET_QUERY = re.compile(
    r"(?P<name>[?&;](?:[\w.-]*(?:key|token|secret|password|passwd|pwd|auth|sig|signature|credential)[\w.-]*)=)"
    r"[^&#\s'\"]+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with URL userinfo and secret-looking query values replaced by ``***``."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(r"\g<scheme>***@", text)
    return _SECRET_QUERY.sub(r"\g<name>***", text)


class RedactingFilter(logging.Filter):
    """A handler filter: every record's final message is redacted (ours, the SDK's and httpx's alike)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True
