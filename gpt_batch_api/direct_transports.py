"""How one direct API call reaches a provider: the seam between the direct flow (``direct.py``) and the SDKs.

A ``DirectTransport`` is made on the executor's event loop and sends one request body to one path. It
answers with what the server said (``Answer``: HTTP status, headers, parsed JSON body) whatever the status,
raises ``NoAnswer`` when no HTTP answer came (refused, dropped, timed out) and ``MalformedAnswer`` for a
success whose body is not JSON. Everything else (what a status means, retries, pacing, what stops the run)
is the flow's, in one place for every provider.

Transports:

* ``OpenAIDirectTransport``: a plain ``openai.OpenAI`` client's settings (base URL, key, organization,
  project, headers, query, timeout) posted through one aiohttp session with the headers built once and the
  body encoded by orjson. The SDK's request building (URL parsing, header merging, option copies, httpx
  models) cost about two thirds of the CPU of a call against a local server.
* ``SDKTransport``: any ``AsyncOpenAI``-like client (``make_async_client=``: Azure, subclasses, custom auth),
  through the SDK's own ``post``.
* ``AnthropicDirectTransport``: ``anthropic.AsyncAnthropic`` (``max_retries=0``: the flow retries) for
  Anthropic's Messages API; its error bodies (``{"type": "error", "error": {...}}``) and its
  ``anthropic-ratelimit-*`` headers are read by the same flow.

``direct_transport_factory(provider, client, ...)`` picks one. The ``anthropic`` SDK is imported only when an
Anthropic transport is made (``pip install "gpt_batch_api[anthropic]"``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import ssl
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from .api_errors import ANTHROPIC, OPENAI, ProviderWords, describe_no_answer
from .errors import ConfigError
from .store import fastjson

__all__ = [
    "AnthropicDirectTransport",
    "Answer",
    "DirectTransport",
    "MalformedAnswer",
    "NoAnswer",
    "OpenAIDirectTransport",
    "PageAnswer",
    "SDKTransport",
    "StreamedAnswer",
    "async_client_like",
    "direct_transport_factory",
]


@dataclasses.dataclass(slots=True)
class Answer:
    """What the server answered: ``body`` is the parsed JSON, or the text when it is not JSON (errors only)."""

    status: int
    headers: Mapping[str, str]  # case-insensitive lookups (aiohttp's and httpx's header mappings)
    body: Any


class NoAnswer(Exception):
    """No HTTP answer (refused, dropped, timed out): ``code`` is ``"timeout"`` or ``"connection_error"``."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail


class MalformedAnswer(ValueError):
    """A success whose body is not JSON (cut short by a proxy, or empty)."""


class StreamedAnswer(MalformedAnswer):
    """A success sent as server-sent events although no stream was asked for (a proxy forcing ``stream``):
    every call would get one, so retrying would only buy each answer again."""


class PageAnswer(MalformedAnswer):
    """A success whose body is a web page: a proxy's passing error page, or (when every call gets one) a
    gateway's login page or a web UI at a wrong base URL, which retrying would only send each request to again."""


@runtime_checkable
class DirectTransport(Protocol):
    """One provider's way of sending a direct call (see the module docstring); made on the event loop."""

    base_url: str  # for messages (may carry credentials: redact before showing)
    words: ProviderWords  # the provider's name and where its key comes from, for error messages

    def route(self, endpoint: str) -> str:
        """The path to post ``endpoint`` (e.g. ``/v1/chat/completions``) to, relative to ``base_url``."""
        ...

    async def send(self, path: str, body: Any) -> Answer: ...

    async def aclose(self) -> None: ...


_BOM = b"\xef\xbb\xbf"  # some servers and proxies start their JSON with a UTF-8 byte order mark (JSON may)


def _error_body(content: bytes) -> Any:
    """An error answer's body: its JSON, else its text (a proxy's HTML page, a plain-text error)."""
    content = content.removeprefix(_BOM)
    try:
        return fastjson.loads(content)
    except ValueError:
        text = content.decode("utf-8", "replace").strip()
        return text[:2000] if text else None


def _success_body(content: bytes) -> Any:
    try:
        return fastjson.loads(content.removeprefix(_BOM))
    except ValueError as exc:
        if content.lstrip().startswith((b"data:", b"event:")):
            raise StreamedAnswer(f"a stream of server-sent events: {content[:120]!r}") from None
        if content.lstrip().startswith(b"<"):  # JSON cut short still starts with "{"
            raise PageAnswer(f"a web page (HTTP 200): {content[:120]!r}") from None
        raise MalformedAnswer(str(exc)) from None


# ---------------------------------------------------------------------------------------------------- OpenAI


def _timeouts(timeout: Any) -> tuple[float | None, float | None, float | None]:
    """``(connect, read, pool)`` seconds of an SDK timeout (a number, an httpx ``Timeout`` or None)."""
    if timeout is None or isinstance(timeout, int | float):
        return timeout, timeout, timeout
    read = getattr(timeout, "read", None)
    return getattr(timeout, "connect", read), read, getattr(timeout, "pool", read)


class OpenAIDirectTransport:
    """POSTs with aiohttp, headers and URLs built once (see the module docstring)."""

    words = OPENAI

    def __init__(
        self, base_url: str, headers: Mapping[str, str], *, query: Mapping[str, str] | None = None, timeout: Any = None
    ) -> None:
        import aiohttp
        from aiohttp.helpers import get_env_proxy_for_url
        from yarl import URL

        self.base_url = base_url
        self._base = URL(base_url.rstrip("/"))
        self._query = dict(query or {})
        self._urls: dict[str, Any] = {}
        connect, read, pool = _timeouts(timeout)
        ssl_context: ssl.SSLContext | bool = True
        if self._base.scheme == "https":
            ssl_context = _ssl_context()
        self._proxy: Any = None
        self._proxy_auth: Any = None
        try:  # the proxy of the environment (HTTP(S)_PROXY, NO_PROXY), looked up once like the SDK's httpx does
            self._proxy, self._proxy_auth = get_env_proxy_for_url(self._base)
        except LookupError:
            pass
        self._session = aiohttp.ClientSession(
            headers=dict(headers),
            connector=aiohttp.TCPConnector(limit=1000, ssl=ssl_context),  # the SDK's limit; the flow sets concurrency
            timeout=aiohttp.ClientTimeout(total=None, connect=pool, sock_connect=connect, sock_read=read),
        )

    @classmethod
    def from_client(cls, client: Any) -> OpenAIDirectTransport:
        """The settings of a sync ``openai.OpenAI`` (see ``plain_openai_client``)."""
        headers = {k: v for k, v in client.default_headers.items() if isinstance(v, str)}
        headers.update(client.auth_headers)
        headers["X-Stainless-Async"] = "async:asyncio"
        query = {k: str(v) for k, v in (getattr(client, "_custom_query", None) or {}).items()}
        return cls(str(client.base_url), headers, query=query, timeout=client.timeout)

    def route(self, endpoint: str) -> str:
        return endpoint.removeprefix("/v1")  # the base URL ends in /v1

    def _url(self, path: str) -> Any:
        url = self._urls.get(path)
        if url is None:
            url = self._base.with_path(self._base.path.rstrip("/") + path).with_query(self._base.query)
            if self._query:
                url = url.update_query(self._query)
            self._urls[path] = url
        return url

    async def send(self, path: str, body: Any) -> Answer:
        data = fastjson.dumps(body)
        try:
            async with self._session.post(
                self._url(path), data=data, proxy=self._proxy, proxy_auth=self._proxy_auth
            ) as response:
                content = await response.read()
                status, headers = response.status, response.headers
        except Exception as exc:  # aiohttp's connection errors, timeouts, a URL it refuses: no answer
            raise NoAnswer(*describe_no_answer(exc)) from exc
        if 200 <= status < 300:
            return Answer(status, headers, _success_body(content))
        return Answer(status, headers, _error_body(content))

    async def aclose(self) -> None:
        await self._session.close()


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """Certificates as the SDK's httpx verifies them (certifi's bundle when installed)."""
    try:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:
        return ssl.create_default_context()


def plain_openai_client(client: Any) -> bool:
    """Whether ``client`` is an ``openai.OpenAI`` whose settings say everything about its requests (a fixed
    key; no subclass, key provider or workload identity, whose auth only the SDK knows how to do)."""
    import openai

    return (
        type(client) is openai.OpenAI
        and isinstance(client.api_key, str)
        and bool(client.api_key)
        and getattr(client, "_api_key_provider", None) is None
        and getattr(client, "workload_identity", None) is None
        and getattr(client, "_provider", None) is None
    )


def async_client_like(client: Any) -> Any:
    """An ``AsyncOpenAI`` with the settings of the sync ``openai.OpenAI`` ``client`` (key, organization,
    project, base URL, timeout, custom headers and query), over aiohttp when the SDK's extra is installed."""
    import openai

    if type(client) is not openai.OpenAI:
        raise ConfigError(
            f"The direct API needs an async client, and one cannot be derived from a {type(client).__name__}: "
            "pass make_async_client= too (e.g. lambda: openai.AsyncAzureOpenAI(...))."
        )
    kwargs: dict[str, Any] = {
        "api_key": client.api_key,
        "organization": client.organization,
        "project": client.project,
        "base_url": client.base_url,
        "timeout": client.timeout,
        "max_retries": 0,
        "default_headers": getattr(client, "_custom_headers", None),
        "default_query": getattr(client, "_custom_query", None),
    }
    aiohttp_client = getattr(openai, "DefaultAioHttpClient", None)
    if aiohttp_client is not None:
        try:
            kwargs["http_client"] = aiohttp_client(timeout=client.timeout)
        except RuntimeError:  # the SDK was installed without its aiohttp extra: its default transport
            pass
    return openai.AsyncOpenAI(**kwargs)


# ---------------------------------------------------------------------------------------------------- SDKs


def _response_class(sdk: Any) -> type:
    """The SDK's HTTP response class (httpx2 in the newest SDKs, httpx before): as ``cast_to``, ``post``
    returns the response itself, so that the headers can be read and the body parsed with orjson."""
    module = getattr(sdk._base_client, "httpx2", None) or sdk._base_client.httpx
    return module.Response  # type: ignore[no-any-return]


class SDKTransport:
    """Through a Stainless SDK's async client (``AsyncOpenAI``, ``AsyncAzureOpenAI``, ``AsyncAnthropic``)."""

    words = OPENAI
    strips_v1 = True  # OpenAI's base URL ends in /v1; Anthropic's does not

    def __init__(self, client: Any, sdk: Any = None) -> None:
        if sdk is None:
            import openai as sdk
        self._sdk = sdk
        self._cast = _response_class(sdk)
        self.client = client.with_options(max_retries=0) if hasattr(client, "with_options") else client
        self._original = client  # closed at the end (with_options shares its HTTP client)
        self.base_url = str(client.base_url)

    def route(self, endpoint: str) -> str:
        return endpoint.removeprefix("/v1") if self.strips_v1 else endpoint

    async def send(self, path: str, body: Any) -> Answer:
        sdk = self._sdk
        try:
            response = await self.client.post(path, body=body, cast_to=self._cast)
        except sdk.APIStatusError as exc:
            try:
                content = exc.response.content
            except Exception:  # the stream was closed before it was read
                content = b""
            return Answer(exc.status_code, exc.response.headers, _error_body(content))
        except sdk.APIConnectionError as exc:  # a timeout is one of these
            raise NoAnswer(*describe_no_answer(exc)) from exc
        return Answer(response.status_code, response.headers, _success_body(response.content))

    async def aclose(self) -> None:
        await self._original.close()


# ---------------------------------------------------------------------------------------------------- Anthropic


class AnthropicDirectTransport(SDKTransport):
    """Anthropic's Messages API through ``anthropic.AsyncAnthropic`` (over aiohttp when the SDK offers it)."""

    words = ANTHROPIC
    strips_v1 = False

    def __init__(self, client: Any) -> None:
        super().__init__(client, _import_anthropic())

    @classmethod
    def from_settings(
        cls,
        *,
        api_key: str | None,
        auth_token: str | None = None,
        base_url: str | None = None,
        timeout: Any = None,
        default_headers: Mapping[str, str] | None = None,
    ) -> AnthropicDirectTransport:
        sdk = _import_anthropic()
        kwargs: dict[str, Any] = {"api_key": api_key, "auth_token": auth_token, "base_url": base_url, "max_retries": 0}
        if timeout is not None:
            kwargs["timeout"] = timeout
        if default_headers:
            kwargs["default_headers"] = dict(default_headers)
        aiohttp_client = getattr(sdk, "DefaultAioHttpClient", None)
        if aiohttp_client is not None:
            try:
                kwargs["http_client"] = aiohttp_client(**({"timeout": timeout} if timeout is not None else {}))
            except RuntimeError:  # installed without the aiohttp extra: the SDK's default transport
                pass
        return cls(sdk.AsyncAnthropic(**kwargs))


def _import_anthropic() -> Any:
    from .backends.anthropic_backend import import_anthropic  # one line saying how to install it if missing

    return import_anthropic()


# ---------------------------------------------------------------------------------------------------- factory


def direct_transport_factory(
    provider: str,
    client: Any = None,
    *,
    make_async_client: Callable[[], Any] | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
) -> Callable[[], DirectTransport]:
    """A function that makes the direct transport of ``provider`` (``"openai"`` or ``"anthropic"``) on the
    executor's event loop.

    OpenAI: ``make_async_client`` (an ``AsyncOpenAI``-like client) if given, through the SDK; else the sync
    ``client``'s settings, posted with aiohttp (a client with its own auth, or a subclass, needs
    ``make_async_client``). Anthropic: ``make_async_client`` (an ``AsyncAnthropic``) if given; else the
    settings of ``client`` (a sync ``anthropic.Anthropic``), or ``api_key`` (default ``ANTHROPIC_API_KEY``) and
    ``base_url``. Errors in the settings are raised here, before any call.
    """
    name = provider.lower()
    if name == "openai":
        if make_async_client is not None:
            return lambda: SDKTransport(make_async_client())
        if client is None:
            raise ConfigError("The OpenAI direct transport needs the client (openai.OpenAI) whose settings it uses.")
        if plain_openai_client(client):
            return lambda: OpenAIDirectTransport.from_client(client)
        return lambda: SDKTransport(async_client_like(client))  # asks for make_async_client= if it cannot copy
    if name == "anthropic":
        _import_anthropic()  # the install hint now, not on the event loop
        if make_async_client is not None:
            return lambda: AnthropicDirectTransport(make_async_client())
        if client is not None:
            settings = {
                "api_key": client.api_key,
                "auth_token": getattr(client, "auth_token", None),
                "base_url": str(client.base_url),
                "timeout": client.timeout,
                "default_headers": getattr(client, "_custom_headers", None),
            }
        else:
            key = api_key or os.environ.get("ANTHROPIC_API_KEY")
            if not key:
                raise ConfigError("No Anthropic API key: set ANTHROPIC_API_KEY or pass --anthropic_api_key.")
            settings = {"api_key": key, "base_url": base_url}
        return lambda: AnthropicDirectTransport.from_settings(**settings)
    raise ConfigError(f"Unknown provider {provider!r}: use 'openai' or 'anthropic'.")
