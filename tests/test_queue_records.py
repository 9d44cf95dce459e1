"""Queue lines: the batch line is sliced out of the bytes, exactly as it was written, whatever the meta holds."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpt_batch_api.queue_records import parse_queue_record, queue_record_bytes
from gpt_batch_api.store import fastjson

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(meta=json_values, body=json_values)
def test_the_batch_line_and_head_come_back_byte_for_byte(meta, body):
    line = fastjson.dumps({"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": body})
    head = {"ll": len(line), "id": 1, "ti": 5, "meta": meta}
    raw = queue_record_bytes(head, line)
    record = parse_queue_record(raw)
    assert record["_line"] == line
    assert json.loads(record["_head"]) == head
    assert {k: v for k, v in record.items() if not k.startswith("_")} == head


def test_tricky_meta_and_old_lines_without_ll():
    line = b'{"custom_id":"r2","body":{"x":",\\"line\\":"}}'
    head = {"ll": len(line), "id": 2, "meta": {"a": 1, "line": ',"line":'}}
    assert parse_queue_record(queue_record_bytes(head, line))["_line"] == line
    old = b'{"id":3,"meta":{},"line":{"custom_id":"r3","body":{}}}\n'
    record = parse_queue_record(old)
    assert json.loads(record["_line"]) == {"custom_id": "r3", "body": {}}
    assert json.loads(record["_head"]) == {"id": 3, "meta": {}}


@pytest.mark.parametrize("raw", [b'{"ll":5,"id":1', b"not json", b'{"id":1}'])
def test_damaged_lines_raise_value_error(raw):
    with pytest.raises(ValueError):
        parse_queue_record(raw)
