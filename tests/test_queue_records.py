"""Queue lines: the batch line is sliced out of the bytes, exactly as it was written, whatever the meta holds."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpt_batch_api.queue_records import REQUIRED_HEAD_KEYS, encode_queue_record, parse_queue_record, queue_record_bytes
from gpt_batch_api.store import fastjson

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


HEAD = {"id": 1, "retry_num": 0, "ti": 5, "to": 7, "cb": 0.25, "cd": 0.5, "size": 0, "parse": None, "n": 1}


@given(meta=json_values, body=json_values)
def test_the_batch_line_and_head_come_back_byte_for_byte(meta, body):
    line = fastjson.dumps({"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": body})
    head = {"ll": len(line), **HEAD, "size": len(line) + 1, "meta": meta}
    raw = queue_record_bytes(head, line)
    record = parse_queue_record(raw)
    assert record.line == line
    assert json.loads(record.head) == head
    assert (record.id, record.retry_num, record.tokens_input, record.tokens_output) == (1, 0, 5, 7)
    assert (record.cost_batch, record.cost_direct, record.size, record.num_outputs) == (0.25, 0.5, len(line) + 1, 1)
    assert record.meta == meta and record.parse is None


def test_encode_is_the_inverse_of_parse_and_writes_every_required_key():
    line = b'{"custom_id":"r9","body":{"model":"m"}}'
    fields = dict(req_id=9, retry_num=2, tokens_input=11, tokens_output=13, cost_batch=0.125, cost_direct=0.25,
                  parse={"module": "m", "qualname": "Q"}, num_outputs=3, meta={"k": [1]})  # fmt: skip
    record = parse_queue_record(encode_queue_record(line, **fields))
    assert record.line == line and record.size == len(line) + 1
    assert (record.id, record.retry_num, record.tokens_input, record.tokens_output) == (9, 2, 11, 13)
    assert (record.cost_batch, record.cost_direct, record.num_outputs) == (0.125, 0.25, 3)
    assert record.parse == fields["parse"] and record.meta == {"k": [1]}
    assert set(REQUIRED_HEAD_KEYS) <= set(json.loads(record.head))  # what batch_files counts before sending


def test_tricky_meta_and_old_lines_without_ll_or_n():
    line = b'{"custom_id":"r2","body":{"x":",\\"line\\":"}}'
    head = {"ll": len(line), **HEAD, "meta": {"a": 1, "line": ',"line":'}}
    assert parse_queue_record(queue_record_bytes(head, line)).line == line
    old_head = {k: v for k, v in HEAD.items() if k != "n"}
    old = fastjson.dumps({**old_head, "meta": {}, "line": {"custom_id": "r3", "body": {}}}) + b"\n"
    record = parse_queue_record(old)
    assert json.loads(record.line) == {"custom_id": "r3", "body": {}}
    assert json.loads(record.head) == {**old_head, "meta": {}}
    assert record.num_outputs is None  # counted from the payload when its results are read


@pytest.mark.parametrize(
    "raw", [b'{"ll":5,"id":1', b"not json", b'{"id":1}', b'{"ll":2,"id":1,"meta":{},"line":{}}', b'{"ll":x,"line":1}']
)
def test_damaged_lines_raise_value_error(raw):
    with pytest.raises(ValueError):
        parse_queue_record(raw)
