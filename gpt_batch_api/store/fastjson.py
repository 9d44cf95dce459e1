"""Compact JSON for the hot paths (queue, batch, result and journal lines), via orjson.

orjson encodes and decodes several times faster than the standard library, which matters at millions of
lines; its compact UTF-8 output is the same JSON that ``json.dumps(obj, ensure_ascii=False,
separators=(",", ":"))`` gives. Files meant to be read by people (state, output) keep the ``json`` module.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["JSONDecodeError", "dumps", "loads"]

JSONDecodeError = orjson.JSONDecodeError  # a ValueError (and json.JSONDecodeError) subclass
_OPTIONS = orjson.OPT_NON_STR_KEYS  # like json: {1: "a"} becomes {"1": "a"}


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON; raises TypeError for what JSON cannot hold."""
    return orjson.dumps(obj, option=_OPTIONS)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)
