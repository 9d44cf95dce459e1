"""Limit arithmetic and result classification (pure functions, no I/O)."""

from __future__ import annotations

import pydantic
import pytest

from gpt_batch_api.classify import classify
from gpt_batch_api.endpoints import get_endpoint
from gpt_batch_api.errors import ConfigError
from gpt_batch_api.limits import Amounts, Limit
from gpt_batch_api.request import GPTRequest, GPTRequestInfo, GPTRequestItem
from gpt_batch_api.requester_options import RequesterOptions

CHAT = get_endpoint("/v1/chat/completions")


class Answer(pydantic.BaseModel):
    value: int


def test_limit_applies_safety_factors():
    limit = Limit("batch", requests=10, ktokens=1.0, cost=1.0, mb=1.0)
    assert limit.exceeded_by(Amounts(10, 950, 0.5, 1000), 1.05, 1.01) is None
    assert limit.exceeded_by(Amounts(11, 0, 0, 0), 1.0, 1.0) == "max_batch_requests"
    assert limit.exceeded_by(Amounts(1, 960, 0, 0), 1.05, 1.0) == "max_batch_ktokens"  # 960 * 1.05 > 1000
    assert limit.exceeded_by(Amounts(1, 0, 1.01, 0), 1.0, 1.0) == "max_batch_cost"
    assert limit.exceeded_by(Amounts(1, 0, 0, 990_100), 1.0, 1.01) == "max_batch_mb"
    assert Limit("session").exceeded_by(Amounts(10**9, 10**9, 1e9, 10**9), 1.0, 1.0) is None


def test_options_defaults_are_valid_and_checked_together():
    RequesterOptions.from_kwargs({})
    with pytest.raises(ConfigError, match="max_remote_ktokens"):
        RequesterOptions.from_kwargs({"max_batch_ktokens": 100, "max_remote_ktokens": 10})


def item(retry_num: int = 0) -> tuple[GPTRequestItem, GPTRequestInfo]:
    return GPTRequestItem(7, GPTRequest({"model": "m"}, {"k": 1}, retry_num)), GPTRequestInfo(10, 5, 5, 0.0, 0.0)


def chat_body(content: str, finish: str = "stop", refusal: str | None = None) -> dict:
    message = {"role": "assistant", "content": content, "refusal": refusal}
    return {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "finish_reason": finish, "message": message}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }


def run(line, spec=None, retry_num=0, **kw):
    it, info = item(retry_num)
    return classify(
        line,
        it,
        info,
        1,
        CHAT,
        spec,
        max_retries=kw.pop("max_retries", 2),
        retry_fatal=kw.pop("retry_fatal", False),
        **kw,
    )


SPEC = {"module": __name__, "qualname": "Answer"}


def ok_line(body, status=200):
    return {"custom_id": "id-7", "response": {"status_code": status, "body": body}, "error": None}


def test_success_parses_structured_output():
    result = run(ok_line(chat_body('{"value": 3}')), SPEC)
    assert result.err_info is None and result.resp_info.parsed == [Answer(value=3)] and not result.retry
    assert result.resp_info.payload.choices[0].message.parsed == Answer(value=3)


@pytest.mark.parametrize(
    ("line", "subtype", "fatal", "free"),
    [
        (None, "MissingResult", False, False),
        ({"garbage": 1}, "MalformedLine", False, False),
        (
            {"custom_id": "id-7", "response": None, "error": {"code": "batch_expired", "message": "x"}},
            "batch_expired",
            False,
            True,
        ),
        (
            {"custom_id": "id-7", "response": None, "error": {"code": "batch_cancelled", "message": "x"}},
            "batch_cancelled",
            False,
            True,
        ),
        (ok_line({"error": {"message": "boom"}}, 500), "HTTP500", False, False),
        (ok_line({"error": {"message": "slow"}}, 429), "HTTP429", False, False),
        (ok_line({"error": {"message": "bad"}}, 400), "HTTP400", True, False),
        (ok_line(chat_body("not json")), "ParseError", False, False),
        (ok_line(chat_body('{"value": 1', finish="length")), "FinishLength", False, False),
        (ok_line(chat_body("", refusal="no")), "Refusal", False, False),
    ],
)
def test_error_classification(line, subtype, fatal, free):
    result = run(line, SPEC)
    assert result.err_info.subtype == subtype
    assert result.err_info.fatal is fatal
    assert result.err_info.counts_as_retry is not free
    assert result.retry is (not fatal)


def test_retries_stop_at_max_retries_but_free_retries_do_not():
    assert run(ok_line({}, 500), retry_num=2).retry is False
    expired = {"custom_id": "id-7", "response": None, "error": {"code": "batch_expired", "message": ""}}
    result = run(expired, retry_num=2)
    assert result.retry is True and result.next_retry_num == 2


def test_fatal_errors_retry_only_when_asked():
    assert run(ok_line({}, 400), retry_fatal=True).retry is True


def test_plain_text_cut_at_max_tokens_is_a_warning():
    result = run(ok_line(chat_body("long text", finish="length")))
    assert result.err_info is None and [w.subtype for w in result.warn_infos] == ["FinishLength"]


def test_missing_result_of_expired_batch_is_free():
    assert run(None, retry_num=2, missing_is_free=True).retry is True
