"""Validation of a batch input file, as OpenAI does it before a batch starts.

Every problem is reported as an entry of the batch's ``errors.data`` (code, message, line, param), and any
entry makes the batch fail: JSONL lines that do not parse, missing custom_id/method/url/body, duplicate
custom_ids, more than one model, a url other than the batch endpoint, more than 50,000 requests, more than
200 MB, or no request at all.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_INPUT_BYTES", "MAX_REQUESTS", "validate_lines"]

MAX_REQUESTS = 50_000
MAX_INPUT_BYTES = 200 * 1024 * 1024
MAX_ERRORS = 100  # errors listed for a failed batch (OpenAI lists a bounded number too)


def validate_lines(
    data: bytes, endpoint: str
) -> tuple[list[tuple[str, dict[str, Any]]], str | None, list[dict[str, Any]]]:
    """Parse an input file as OpenAI does: ``(requests, model, errors)``; any error fails the batch."""
    errors: list[dict[str, Any]] = []

    def fail(code: str, message: str, line: int | None = None, param: str | None = None) -> None:
        if len(errors) < MAX_ERRORS:
            errors.append({"code": code, "message": message, "param": param, "line": line})

    if len(data) > MAX_INPUT_BYTES:
        fail("file_too_large", f"The input file has {len(data)} bytes; the limit is {MAX_INPUT_BYTES} bytes.")
        return [], None, errors
    requests: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    model = None
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            fail("invalid_json_line", "This line is not parseable as valid JSON.", number)
            continue
        if not isinstance(line, dict):
            fail("invalid_json_line", "Each line must be a JSON object.", number)
            continue
        missing = [key for key in ("custom_id", "method", "url", "body") if key not in line]
        if missing:
            fail("missing_required_parameter", f"Missing required parameter: '{missing[0]}'.", number, missing[0])
            continue
        custom_id, body = line["custom_id"], line["body"]
        if not isinstance(custom_id, str) or not isinstance(body, dict):
            fail("invalid_request", "'custom_id' must be a string and 'body' an object.", number)
            continue
        if line["method"] != "POST":
            fail("invalid_method", f"Only POST is supported, got {line['method']!r}.", number, "method")
        if line["url"] != endpoint:
            fail("url_mismatch", f"The url {line['url']!r} does not match the batch endpoint {endpoint!r}.", number)
        if custom_id in seen:
            fail("duplicate_custom_id", f"The custom_id {custom_id!r} is used more than once.", number, "custom_id")
        seen.add(custom_id)
        line_model = body.get("model")
        if model is None:
            model = line_model
        elif line_model != model:
            fail("model_mismatch", f"All requests must use one model: {model!r} then {line_model!r}.", number)
        requests.append((custom_id, body))
    if not requests and not errors:
        fail("empty_file", "The input file has no requests.")
    if len(requests) > MAX_REQUESTS:
        fail("too_many_tasks", f"The batch has {len(requests)} requests; the limit is {MAX_REQUESTS}.")
    return requests, model, errors
