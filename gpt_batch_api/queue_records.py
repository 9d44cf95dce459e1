"""Lines of the request queue (``<prefix>_queue_GGGG.jsonl``): a small head, then the request's batch line.

``{"ll": <length of the batch line>, "id": ..., "ti": ..., "cb": ..., "meta": ..., "line": <batch line>}``

``ll`` comes first so that cutting a batch can slice the batch line (and the head, which becomes the
batch's info line) out of the bytes, decoding only the small head: no payload is decoded and encoded again.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypedDict, Unpack

from .store import fastjson

__all__ = [
    "REQUIRED_HEAD_KEYS",
    "QueueRecord",
    "QueueRecordFields",
    "encode_queue_record",
    "parse_queue_record",
    "queue_record_bytes",
]

_LINE_KEY = b',"line":'
# The keys of every head (``n`` may be absent in older files): written by encode_queue_record, read by
# QueueRecord.from_head, counted in batch info files before they are sent (batch_files.check_batch_file).
REQUIRED_HEAD_KEYS = ("id", "retry_num", "ti", "to", "cb", "cd", "size", "parse", "meta")


@dataclasses.dataclass(slots=True)
class QueueRecord:
    """One queued request: the predictions made when it was added (carried unchanged to its batch, its results
    and its retries) and its batch line. In the file the head's keys are short (``ti``, ``cb``, ...)."""

    id: int
    retry_num: int
    tokens_input: int  # ti
    tokens_output: int  # to
    cost_batch: float  # cb: predicted cost at batch prices
    cost_direct: float  # cd: at direct prices
    size: int  # bytes of the batch line, newline included
    parse: dict[str, str] | None  # where the structured output class is
    num_outputs: int | None  # n (absent in older files: None, counted from the payload)
    meta: Any
    line: bytes = b""  # the batch line, without its newline
    head: bytes = b""  # the head as written: the batch's info line

    @classmethod
    def from_head(cls, head: dict[str, Any], line: bytes = b"", head_bytes: bytes = b"") -> QueueRecord:
        """From a decoded head (a queue line's, or a batch info line); KeyError/TypeError if it is not one."""
        return cls(
            head["id"], head["retry_num"], head["ti"], head["to"], head["cb"], head["cd"], head["size"],
            head["parse"], head.get("n"), head["meta"], line, head_bytes,
        )  # fmt: skip

    def cost(self, *, direct: bool) -> float:
        return self.cost_direct if direct else self.cost_batch


class QueueRecordFields(TypedDict):
    """What a caller says about a request it queues (``encode_queue_record``, ``RequestQueue.record``)."""

    req_id: int
    retry_num: int
    tokens_input: int
    tokens_output: int
    cost_batch: float
    cost_direct: float
    parse: dict[str, str] | None
    num_outputs: int
    meta: Any


def encode_queue_record(line: bytes, **fields: Unpack[QueueRecordFields]) -> bytes:
    """The queue line of one request (its batch ``line``, without the newline): the inverse of
    ``parse_queue_record``."""
    head = {
        "id": fields["req_id"],
        "retry_num": fields["retry_num"],
        "ti": fields["tokens_input"],
        "to": fields["tokens_output"],
        "cb": fields["cost_batch"],
        "cd": fields["cost_direct"],
        "size": len(line) + 1,
        "parse": fields["parse"],
        "n": fields["num_outputs"],
        "meta": fields["meta"],
    }
    return queue_record_bytes(head, line)


def queue_record_bytes(head: dict[str, Any], line: bytes) -> bytes:
    """One queue line from its head and the batch line (``ll``, the line's length, is put first here)."""
    return fastjson.dumps({"ll": len(line), **head})[:-1] + _LINE_KEY + line + b"}\n"


def parse_queue_record(raw: bytes) -> QueueRecord:
    """A queue line as a record: its head decoded, its batch line and head sliced out as bytes.

    Lines without ``ll`` (written before it existed) are decoded in full. Raises ValueError if damaged.
    """
    head, line, head_bytes = _split(raw)
    try:
        return QueueRecord.from_head(head, line, head_bytes)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a queue record (missing {exc})") from None


def _split(raw: bytes) -> tuple[dict[str, Any], bytes, bytes]:
    end = len(raw) - 1 if raw.endswith(b"\n") else len(raw)  # indices, not a stripped copy: this runs per line
    if raw.startswith(b'{"ll":'):
        length = int(raw[6 : raw.index(b",", 6)])
        cut = end - 1 - length - len(_LINE_KEY)
        if length >= 0 and cut > 0 and raw.startswith(_LINE_KEY, cut):
            head = raw[:cut] + b"}"
            decoded = fastjson.loads(head)
            if isinstance(decoded, dict):
                return decoded, raw[cut + len(_LINE_KEY) : end - 1], head
    record = fastjson.loads(raw)
    if not isinstance(record, dict) or "line" not in record:
        raise ValueError("not a queue record")
    line = record.pop("line")
    return record, fastjson.dumps(line), fastjson.dumps(record)
