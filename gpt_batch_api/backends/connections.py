"""How a run reaches its provider: the key, the base URL, the batch backend and the direct transport.

The engine asks ``connect(opts, endpoint)`` for a ``Connection`` and names no provider itself. Each
connection reads its own flags and environment variables, makes its SDK client on first use (a dry run never
makes one), and says how to fix a missing key in one line.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..api_errors import ANTHROPIC, OPENAI, ProviderWords
from ..errors import ConfigError
from ..server_identity import is_loopback_url
from . import create_backend
from .base import BatchBackend

if TYPE_CHECKING:
    from ..direct_transports import DirectTransport
    from ..requester_options import RequesterOptions

__all__ = ["LOCAL_SERVER_KEY", "AnthropicConnection", "Connection", "OpenAIConnection", "connect"]

LOCAL_SERVER_KEY = "sk-local-server-no-key"  # sent only to servers on this machine when the user set no key


class Connection(Protocol):
    name: str  # the provider, as --provider names it
    words: ProviderWords  # its name and where its key comes from, for error messages

    def base_url(self) -> str:
        """The API server's base URL (may carry credentials: redact it before showing it)."""
        ...

    def backend(self) -> BatchBackend:
        """The provider's batch API."""
        ...

    def direct_transport_factory(self) -> Callable[[], DirectTransport]:
        """Makes the transport of direct calls on the direct executor's event loop (see ``direct_transports``).
        Settings are checked now, before any call."""
        ...


class OpenAIConnection:
    """OpenAI and OpenAI-compatible servers (vLLM, gateways, the simulator) through the ``openai`` SDK."""

    name = "openai"
    words = OPENAI

    def __init__(
        self,
        opts: RequesterOptions,
        endpoint: str,
        client: Any = None,
        make_async_client: Callable[[], Any] | None = None,
    ) -> None:
        self._opts = opts
        self._endpoint = endpoint
        self._client = client
        self._make_async_client = make_async_client

    @property
    def client(self) -> Any:
        """The ``openai.OpenAI`` client (given, or made on first use from the flags and environment)."""
        if self._client is None:
            import openai

            kwargs: dict[str, Any] = {"max_retries": 2}
            for option, name in (
                ("openai_api_key", "api_key"),
                ("openai_organization", "organization"),
                ("openai_project", "project"),
                ("client_base_url", "base_url"),
            ):
                value = getattr(self._opts, option)
                if value is not None:
                    kwargs[name] = value
            base_url = kwargs.get("base_url") or os.environ.get("OPENAI_BASE_URL")
            if "api_key" not in kwargs and not os.environ.get("OPENAI_API_KEY") and is_loopback_url(base_url):
                kwargs["api_key"] = LOCAL_SERVER_KEY  # a server on this machine needs no key; the SDK wants one
            try:
                self._client = openai.OpenAI(**kwargs)
            except openai.OpenAIError as exc:
                raise ConfigError(
                    f"Cannot create the OpenAI client: {str(exc).rstrip('.')}. Set OPENAI_API_KEY (or pass "
                    "--openai_api_key); a server on this machine (--client_base_url http://127.0.0.1:PORT/v1) "
                    "needs no key."
                ) from None
        return self._client

    def base_url(self) -> str:
        return str(self.client.base_url)

    def backend(self) -> BatchBackend:
        return create_backend("openai", client=self.client, endpoint=self._endpoint)

    def direct_transport_factory(self) -> Callable[[], DirectTransport]:
        from ..direct_transports import direct_transport_factory

        if self._make_async_client is not None:
            return direct_transport_factory("openai", make_async_client=self._make_async_client)
        return direct_transport_factory("openai", self.client)  # validates the key and options first


class AnthropicConnection:
    """Anthropic's Messages and Message Batches APIs through the ``anthropic`` SDK (an optional extra)."""

    name = "anthropic"
    words = ANTHROPIC

    def __init__(self, opts: RequesterOptions, make_async_client: Callable[[], Any] | None = None) -> None:
        self._opts = opts
        self._make_async_client = make_async_client

    def base_url(self) -> str:
        url = self._opts.client_base_url or os.environ.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com"
        return url.rstrip("/").removesuffix("/v1")  # the SDK adds /v1/... itself

    def api_key(self) -> str:
        """--anthropic_api_key, else $ANTHROPIC_API_KEY; a server on this machine needs none."""
        key = self._opts.anthropic_api_key or os.environ.get("ANTHROPIC_API_KEY")
        if key:
            return key
        if is_loopback_url(self.base_url()):
            return LOCAL_SERVER_KEY
        raise ConfigError(
            "No Anthropic API key: set ANTHROPIC_API_KEY (or pass --anthropic_api_key); a server on this machine "
            "(--client_base_url http://127.0.0.1:PORT) needs no key."
        )

    def backend(self) -> BatchBackend:
        return create_backend("anthropic", api_key=self.api_key(), base_url=self.base_url())

    def direct_transport_factory(self) -> Callable[[], DirectTransport]:
        from ..direct_transports import direct_transport_factory

        return direct_transport_factory(
            "anthropic", make_async_client=self._make_async_client, api_key=self.api_key(), base_url=self.base_url()
        )


def connect(
    opts: RequesterOptions, endpoint: str, *, client: Any = None, make_async_client: Callable[[], Any] | None = None
) -> OpenAIConnection | AnthropicConnection:
    """The connection of ``opts.provider`` (``client``/``make_async_client``: the caller's own SDK clients)."""
    if opts.provider == "anthropic":
        return AnthropicConnection(opts, make_async_client)
    return OpenAIConnection(opts, endpoint, client, make_async_client)
