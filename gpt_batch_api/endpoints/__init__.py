"""One module per API endpoint, behind the small ``Endpoint`` interface, so the engine never branches on names.

An endpoint knows its URL path, how to turn a task's payload into the JSON body that is sent (e.g. a
pydantic ``response_format`` into a strict JSON schema), how to read a response body back (parsed
structured outputs, errors and warnings) and how to build the SDK object for it.
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import Endpoint, ParsedBody, ParseSpec
from .chat import ChatCompletionsEndpoint
from .embeddings import EmbeddingsEndpoint
from .messages import MessagesEndpoint
from .responses import ResponsesEndpoint

__all__ = ["ENDPOINTS", "Endpoint", "ParseSpec", "ParsedBody", "get_endpoint"]

ENDPOINTS: dict[str, Endpoint] = {
    ep.path: ep for ep in (ChatCompletionsEndpoint(), ResponsesEndpoint(), EmbeddingsEndpoint(), MessagesEndpoint())
}


def get_endpoint(path: str) -> Endpoint:
    """The endpoint for a URL path such as ``/v1/chat/completions``."""
    try:
        return ENDPOINTS[path]
    except KeyError:
        raise ConfigError(
            f"Unsupported endpoint {path!r}: use one of {', '.join(sorted(ENDPOINTS))} "
            "(--chat_endpoint or the OPENAI_ENDPOINT environment variable)."
        ) from None
