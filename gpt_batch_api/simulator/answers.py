"""Fake answers: JSON values that are valid for a (strict) JSON schema, and short default texts.

Values are chosen by a ``random.Random`` that the caller seeds from the request, so the same request
always gets the same answer and different requests get different ones.
"""

from __future__ import annotations

import random
from typing import Any

__all__ = ["default_text", "value_for_schema"]

_WORDS = ("alpha", "bravo", "delta", "echo", "lima", "oscar", "sierra", "tango", "victor", "zulu")
_MAX_DEPTH = 8  # deeper than this, recursive schemas take their null branch or an empty array
_FORMATS = {
    "date": "2024-05-17",
    "date-time": "2024-05-17T12:00:00Z",
    "time": "12:00:00",
    "email": "someone@example.com",
    "uri": "https://example.com/",
    "uuid": "123e4567-e89b-12d3-a456-426614174000",
}


def default_text(rng: random.Random) -> str:
    """A short plain-text reply."""
    return "Simulated reply: " + " ".join(rng.choice(_WORDS) for _ in range(4)) + "."


def value_for_schema(schema: Any, rng: random.Random, root: Any = None, depth: int = 0) -> Any:
    """A value valid for ``schema``: objects with all properties, enums, arrays, $defs/$ref, anyOf, null."""
    if root is None:
        root = schema
    if not isinstance(schema, dict):
        return {}
    if "$ref" in schema:
        return value_for_schema(_resolve(root, schema["$ref"]), rng, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return value_for_schema(_pick_branch(schema[key], depth), rng, root, depth + 1)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            part = _resolve(root, part["$ref"]) if isinstance(part, dict) and "$ref" in part else part
            if isinstance(part, dict):
                properties = {**merged.get("properties", {}), **part.get("properties", {})}
                merged = {**merged, **part, "properties": properties}
        return value_for_schema(merged, rng, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        options = [k for k in kind if k != "null"] or ["null"]
        kind = "null" if depth >= _MAX_DEPTH and "null" in kind else options[0]
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    return _GENERATORS.get(kind, _string)(schema, rng, root, depth)


def _resolve(root: Any, ref: str) -> Any:
    if not ref.startswith("#"):
        return {}
    node = root
    for part in ref.lstrip("#").strip("/").split("/"):
        if part:
            part = part.replace("~1", "/").replace("~0", "~")
            node = node.get(part, {}) if isinstance(node, dict) else {}
    return node


def _pick_branch(branches: list[Any], depth: int) -> Any:
    non_null = [b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")]
    if depth >= _MAX_DEPTH or not non_null:
        return next((b for b in branches if isinstance(b, dict) and b.get("type") == "null"), branches[0])
    return non_null[0]


def _object(schema: dict[str, Any], rng: random.Random, root: Any, depth: int) -> Any:
    properties = schema.get("properties") or {}
    return {name: value_for_schema(sub, rng, root, depth + 1) for name, sub in properties.items()}


def _array(schema: dict[str, Any], rng: random.Random, root: Any, depth: int) -> Any:
    low = int(schema.get("minItems", 0))
    high = int(schema.get("maxItems", max(low, 3)))
    count = low if depth >= _MAX_DEPTH else rng.randint(max(low, min(1, high)), max(low, min(high, 3)))
    prefix = schema.get("prefixItems") or []
    values = [value_for_schema(p, rng, root, depth + 1) for p in prefix]
    items = schema.get("items", {})
    return values + [value_for_schema(items, rng, root, depth + 1) for _ in range(max(0, count - len(values)))]


def _integer(schema: dict[str, Any], rng: random.Random, root: Any, depth: int) -> Any:
    low = int(schema["minimum"]) if "minimum" in schema else int(schema.get("exclusiveMinimum", -1)) + 1
    high = int(schema["maximum"]) if "maximum" in schema else int(schema.get("exclusiveMaximum", low + 101)) - 1
    return rng.randint(low, max(low, high))


def _number(schema: dict[str, Any], rng: random.Random, root: Any, depth: int) -> Any:
    low = float(schema.get("minimum", schema.get("exclusiveMinimum", 0.0)))
    high = float(schema.get("maximum", schema.get("exclusiveMaximum", low + 100.0)))
    return round(low + (high - low) * (0.05 + 0.9 * rng.random()), 3)


def _string(schema: dict[str, Any], rng: random.Random, root: Any, depth: int) -> Any:
    if schema.get("format") in _FORMATS:
        return _FORMATS[schema["format"]]
    text = " ".join(rng.choice(_WORDS) for _ in range(2))
    min_length = int(schema.get("minLength", 0))
    while len(text) < min_length:
        text += " " + rng.choice(_WORDS)
    if "maxLength" in schema:
        text = text[: int(schema["maxLength"])]
    return text


def _boolean(schema: dict[str, Any], rng: random.Random, root: Any, depth: int) -> Any:
    return rng.random() < 0.5


def _null(schema: dict[str, Any], rng: random.Random, root: Any, depth: int) -> Any:
    return None


_GENERATORS = {
    "object": _object,
    "array": _array,
    "integer": _integer,
    "number": _number,
    "string": _string,
    "boolean": _boolean,
    "null": _null,
}
