"""Which API server a batch was sent to, and what to do when a later run talks to another one.

A remote batch exists only on the provider and server that accepted it. A rerun with another ``--provider``
or ``--client_base_url`` (or without the ``OPENAI_BASE_URL`` of the first shell) cannot see it: taking its
absence there for "gone" would send its requests again while the first server still runs them.
"""

from __future__ import annotations

import ipaddress
import urllib.parse

from .redact import redact

__all__ = ["is_loopback_url", "server_identity"]


def is_loopback_url(url: str | None) -> bool:
    """True for a base URL on this machine (127.x.x.x, ::1 or localhost)."""
    if not url:
        return False
    host = urllib.parse.urlsplit(str(url)).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_identity(base_url: str) -> str:
    """``base_url`` without credentials or a trailing slash; on this machine without its port (a local
    server, like the built-in simulator, may listen on another port in the next run)."""
    url = redact(str(base_url)).rstrip("/")
    if not is_loopback_url(url):
        return url
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.hostname or ""))
