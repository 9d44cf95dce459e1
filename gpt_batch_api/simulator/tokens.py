"""Token counts for simulated usage, following OpenAI's published recipe for chat messages.

The recipe (OpenAI cookbook, "How to count tokens with tiktoken"): every message costs 3 tokens plus the
tokens of each of its string values (role, content, name); a ``name`` costs 1 more; the reply is primed with
3 tokens. Multi-part content adds the tokens of its text parts and a fixed ``IMAGE_TOKENS`` per image (the
real cost depends on image size, which the simulator does not fetch). Tools and response formats are
counted as the tokens of their JSON text, an approximation documented here rather than hidden.
Encodings come from ``gpt_batch_api.encodings`` (offline) and are cached per model name.
"""

from __future__ import annotations

import collections
import hashlib
import json
import threading
from array import array
from typing import Any

import tiktoken

from ..encodings import get_encoding

__all__ = [
    "IMAGE_TOKENS",
    "PrefixCache",
    "chat_prompt_tokens",
    "count_text",
    "embedding_input_tokens",
    "encoding_for",
    "responses_input_tokens",
]

IMAGE_TOKENS = 85  # a low-detail image; documented stand-in for any image part
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
_CL100K_PREFIXES = ("gpt-4-", "gpt-3.5", "gpt-35", "text-embedding-", "davinci", "babbage")

_by_model: dict[str, tiktoken.Encoding] = {}


def encoding_for(model: str) -> tiktoken.Encoding:
    """o200k_base for gpt-4o, gpt-4.1, o-series, gpt-5 and unknown models; cl100k_base for gpt-4 and older."""
    encoding = _by_model.get(model)
    if encoding is None:
        old = model == "gpt-4" or model.startswith(_CL100K_PREFIXES)
        encoding = get_encoding("cl100k_base" if old else "o200k_base")
        _by_model[model] = encoding
    return encoding


def count_text(encoding: tiktoken.Encoding, text: str) -> int:
    return len(encoding.encode_ordinary(text)) if text else 0


def _content_tokens(encoding: tiktoken.Encoding, value: Any) -> int:
    if isinstance(value, str):
        return count_text(encoding, value)
    if isinstance(value, list):
        total = 0
        for part in value:
            if not isinstance(part, dict):
                total += _content_tokens(encoding, part)
            elif part.get("type") in ("image_url", "input_image", "image"):
                total += IMAGE_TOKENS
            elif isinstance(part.get("text"), str):
                total += count_text(encoding, part["text"])
        return total
    if value is None:
        return 0
    return count_text(encoding, json.dumps(value, separators=(",", ":")))


def _messages_tokens(encoding: tiktoken.Encoding, messages: list[Any]) -> int:
    total = 0
    for message in messages:
        total += TOKENS_PER_MESSAGE
        if not isinstance(message, dict):
            continue
        for key, value in message.items():
            total += _content_tokens(encoding, value)
            if key == "name":
                total += TOKENS_PER_NAME
    return total


def _extras_tokens(encoding: tiktoken.Encoding, body: dict[str, Any], *keys: str) -> int:
    total = 0
    for key in keys:
        value = body.get(key)
        if isinstance(value, (dict, list)) and value:
            total += count_text(encoding, json.dumps(value, separators=(",", ":")))
    return total


def chat_prompt_tokens(body: dict[str, Any]) -> int:
    """Prompt tokens of a chat completions request body."""
    encoding = encoding_for(str(body.get("model", "")))
    messages = body.get("messages") or []
    total = _messages_tokens(encoding, messages) + REPLY_PRIMING
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        total += _extras_tokens(encoding, response_format, "json_schema")
    return total + _extras_tokens(encoding, body, "tools")


def responses_input_tokens(body: dict[str, Any]) -> int:
    """Input tokens of a responses request body (input as text or as message items; instructions as system)."""
    encoding = encoding_for(str(body.get("model", "")))
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    messages = list(items or [])
    if isinstance(body.get("instructions"), str):
        messages.insert(0, {"role": "system", "content": body["instructions"]})
    total = _messages_tokens(encoding, messages) + REPLY_PRIMING
    text = body.get("text")
    if isinstance(text, dict) and isinstance(text.get("format"), dict) and text["format"].get("type") == "json_schema":
        total += _extras_tokens(encoding, text, "format")
    return total + _extras_tokens(encoding, body, "tools")


def embedding_inputs(body: dict[str, Any]) -> list[Any]:
    """The inputs of an embeddings request as a list (each a string or a list of token ids)."""
    value = body.get("input")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [value]
    return list(value or [])


def embedding_input_tokens(body: dict[str, Any]) -> int:
    encoding = encoding_for(str(body.get("model", "")))
    return sum(
        len(item) if isinstance(item, list) else count_text(encoding, str(item)) for item in embedding_inputs(body)
    )


class PrefixCache:
    """Remembers token prefixes of long prompts, so a repeated prefix is reported as cached tokens.

    Like OpenAI's prompt caching: only prompts of at least 1024 tokens, in steps of 128 tokens.
    """

    MIN_TOKENS = 1024
    STEP = 128

    def __init__(self, capacity: int = 20_000) -> None:
        self._seen: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def cached_tokens(self, model: str, prompt_text: str, prompt_tokens: int) -> int:
        """Tokens of the longest prefix of ``prompt_text`` seen before (a multiple of 128, or 0); records it."""
        if prompt_tokens < self.MIN_TOKENS:
            return 0
        tokens = encoding_for(model).encode_ordinary(prompt_text)
        digest = hashlib.blake2b(model.encode(), digest_size=16)
        cached, start = 0, 0
        keys = []
        for end in range(self.STEP, len(tokens) + 1, self.STEP):
            digest.update(array("I", tokens[start:end]).tobytes())
            start = end
            if end >= self.MIN_TOKENS:
                keys.append((end, digest.copy().digest()))
        with self._lock:
            for end, key in keys:
                if key in self._seen:
                    cached = end
                    self._seen.move_to_end(key)
                else:
                    self._seen[key] = None
            while len(self._seen) > self._capacity:
                self._seen.popitem(last=False)
        return min(cached, prompt_tokens)
