"""Lines of the request queue (``<prefix>_queue_GGGG.jsonl``): a small head, then the request's batch line.

``{"ll": <length of the batch line>, "id": ..., "ti": ..., "cb": ..., "meta": ..., "line": <batch line>}``

``ll`` comes first so that cutting a batch can slice the batch line (and the head, which becomes the
batch's info line) out of the bytes, decoding only the small head: no payload is decoded and encoded again.
"""

from __future__ import annotations

from typing import Any

from .store import fastjson

__all__ = ["parse_queue_record", "queue_record_bytes"]

_LINE_KEY = b',"line":'


def queue_record_bytes(head: dict[str, Any], line: bytes) -> bytes:
    """One queue line from its head and the batch line (``ll``, the line's length, is put first here)."""
    return fastjson.dumps({"ll": len(line), **head})[:-1] + _LINE_KEY + line + b"}\n"


def parse_queue_record(raw: bytes) -> dict[str, Any]:
    """The head of a queue line as a dict, plus ``_line`` (the batch line) and ``_head`` (the rest) as bytes.

    Lines without ``ll`` (written before it existed) are decoded in full. Raises ValueError if damaged.
    """
    end = len(raw) - 1 if raw.endswith(b"\n") else len(raw)  # indices, not a stripped copy: this runs per line
    if raw.startswith(b'{"ll":'):
        length = int(raw[6 : raw.index(b",", 6)])
        cut = end - 1 - length - len(_LINE_KEY)
        if length >= 0 and cut > 0 and raw.startswith(_LINE_KEY, cut):
            head = raw[:cut] + b"}"
            record = fastjson.loads(head)
            record["_line"], record["_head"] = raw[cut + len(_LINE_KEY) : end - 1], head
            return record  # type: ignore[no-any-return]
    record = fastjson.loads(raw)
    if not isinstance(record, dict) or "line" not in record:
        raise ValueError("not a queue record")
    line = record.pop("line")
    record["_line"], record["_head"] = fastjson.dumps(line), fastjson.dumps(record)
    return record
