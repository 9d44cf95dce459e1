"""A server that refuses the configuration (wrong URL, unknown model, the same 4xx for every request,
errors rewritten by a gateway) stops the run without marking samples failed or using retries, names the
likely cause, and the advised fix, run as advised, completes the task."""

from __future__ import annotations

import json

import pytest

from gpt_batch_api.error_kinds import ErrorKind, error_kind
from gpt_batch_api.errors import (
    AuthenticationError,
    BatchAPIUnavailableError,
    QuotaExceededError,
    ServerRefusedError,
)
from gpt_batch_api.simulator import Simulator, SimulatorConfig

from .support.helpers import FAST_BATCHES, assert_complete, read_task_state
from .support.numbers_task import NumbersTask

OPTIONS = {"min_batch_requests": 1, "max_batch_requests": 40, "remote_update_interval": 0.2, "wandb": False,
           "progress": False, "openai_api_key": "sk-test"}  # fmt: skip


@pytest.fixture()
def sim():
    with Simulator(SimulatorConfig(**FAST_BATCHES)) as simulator:
        yield simulator


def totals(task_dir) -> dict:
    return json.loads((task_dir / "numbers_state.json").read_text())["totals"]


def assert_nothing_consumed(task_dir) -> None:
    state = read_task_state(task_dir)
    assert not state["failed_samples"] and not state["succeeded_samples"]
    assert totals(task_dir)["failed"] == 0 and totals(task_dir)["retried"] == 0


@pytest.mark.parametrize("direct", [False, True], ids=["batch", "direct"])
def test_model_typo_stops_at_once_naming_the_model_and_the_advised_fix_completes(tmp_path, sim, direct):
    task = NumbersTask(str(tmp_path), 60, model="gpt-4o-minii", client_base_url=sim.base_url, force_direct=direct,
                       **OPTIONS)  # fmt: skip
    with pytest.raises(ServerRefusedError, match="model 'gpt-4o-minii'") as refused:
        task.run()
    assert "--reinit_meta --wipe_requests" in str(refused.value)
    assert_nothing_consumed(tmp_path)
    if direct:
        sent = sim.stats()["direct_requests"]
        assert sent <= 16, f"{sent} calls: the first refusal stops the run (only the 16 already in flight are sent)"
    fixed = NumbersTask(str(tmp_path), 60, client_base_url=sim.base_url, force_direct=direct, reinit_meta=True,
                        wipe_requests=True, **OPTIONS)  # fmt: skip
    assert fixed.run() is True
    assert all(r.error is None for r in assert_complete(tmp_path, 60))


def test_force_direct_without_v1_asks_for_v1_and_marks_nothing_failed(tmp_path, sim):
    no_v1 = sim.base_url.removesuffix("/v1")
    with pytest.raises(ServerRefusedError, match="404 for /chat/completions.*does it end in /v1"):
        NumbersTask(str(tmp_path), 60, client_base_url=no_v1, force_direct=True, **OPTIONS).run()
    assert_nothing_consumed(tmp_path)
    assert NumbersTask(str(tmp_path), 60, client_base_url=sim.base_url, force_direct=True, **OPTIONS).run() is True
    assert all(r.error is None for r in assert_complete(tmp_path, 60))


def test_batch_mode_without_v1_asks_for_v1_and_the_fixed_url_completes(tmp_path, sim):
    no_v1 = sim.base_url.removesuffix("/v1")
    with pytest.raises(BatchAPIUnavailableError, match="does it end in /v1"):
        NumbersTask(str(tmp_path), 30, client_base_url=no_v1, **OPTIONS).run()
    assert_nothing_consumed(tmp_path)
    assert NumbersTask(str(tmp_path), 30, client_base_url=sim.base_url, **OPTIONS).run() is True
    assert all(r.error is None for r in assert_complete(tmp_path, 30))


class HotTask(NumbersTask):
    """Every request carries temperature 5, which the server refuses with the same 400 each time."""

    def add_request(self, req):  # type: ignore[no-untyped-def]
        req.payload["temperature"] = 5
        return super().add_request(req)


@pytest.mark.parametrize("direct", [False, True], ids=["batch", "direct"])
def test_same_400_for_every_request_of_a_batch_is_a_configuration_error(tmp_path, sim, direct):
    task = HotTask(str(tmp_path), 30, client_base_url=sim.base_url, force_direct=direct, **OPTIONS)
    with pytest.raises(ServerRefusedError, match="all 30 requests got the same refusal.*temperature"):
        task.run()
    assert_nothing_consumed(tmp_path)
    state = json.loads((tmp_path / "numbers_state.json").read_text())
    assert state["totals"]["pushed_requests"] == 0, "the refused batch is out of the pushed totals"
    # The advised fix: correct the requests and build them again with --wipe_requests
    fixed = NumbersTask(str(tmp_path), 30, client_base_url=sim.base_url, force_direct=direct, wipe_requests=True,
                        **OPTIONS)  # fmt: skip
    assert fixed.run() is True
    assert all(r.error is None and r.retry_num == 0 for r in assert_complete(tmp_path, 30))


LITELLM_QUOTA = {"error": {"message": "litellm.RateLimitError: RateLimitError: OpenAIException - You exceeded your "
                           "current quota, please check your plan and billing details.", "type": "throttling_error",
                           "param": None, "code": "429"}}  # fmt: skip
LITELLM_NO_DB = {"error": {"message": "No connected db.", "type": "no_db_connection", "param": None, "code": "400"}}


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (429, LITELLM_QUOTA, ErrorKind.QUOTA),
        (429, {"error": {"message": "x", "type": "insufficient_quota", "code": "insufficient_quota"}}, ErrorKind.QUOTA),
        (429, {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}},
         ErrorKind.RATE_LIMIT),
        (400, LITELLM_NO_DB, ErrorKind.AUTH),
        (401, {"error": {"message": "Authentication Error, Invalid proxy server token passed."}}, ErrorKind.AUTH),
        (400, {"error": {"message": "litellm.BadRequestError: Invalid model name passed in model=gpt-4o-minii"}},
         ErrorKind.MODEL),
        (404, {"object": "error", "message": "The model `x` does not exist.", "type": "NotFoundError", "code": 404},
         ErrorKind.MODEL),
        (404, "404 page not found", ErrorKind.URL),
        (404, {"detail": "Not Found"}, ErrorKind.URL),
        (400, {"error": {"message": "This model's maximum context length is 8192 tokens."}}, ErrorKind.REQUEST),
        (503, {"error": {"message": "overloaded"}}, ErrorKind.SERVER),
        # Anthropic's error bodies: {"type": "error", "error": {"type", "message"}}
        (529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, ErrorKind.SERVER),
        (500, {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}, ErrorKind.SERVER),
        (429, {"type": "error", "error": {"type": "rate_limit_error", "message": "Number of request tokens has "
                                          "exceeded your per-minute rate limit"}}, ErrorKind.RATE_LIMIT),
        (401, {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}},
         ErrorKind.AUTH),
        (403, {"type": "error", "error": {"type": "permission_error", "message": "no access"}}, ErrorKind.AUTH),
        (400, {"type": "error", "error": {"type": "invalid_request_error", "message": "Your credit balance is too "
                                          "low to access the Anthropic API."}}, ErrorKind.QUOTA),
        (402, {"type": "error", "error": {"type": "billing_error", "message": "payment failed"}}, ErrorKind.QUOTA),
        (404, {"type": "error", "error": {"type": "not_found_error", "message": "model: claude-x"}}, ErrorKind.MODEL),
        (400, {"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}},
         ErrorKind.REQUEST),
        (413, {"type": "error", "error": {"type": "request_too_large", "message": "too large"}}, ErrorKind.REQUEST),
    ],
)  # fmt: skip
def test_error_kind_reads_everything_the_answer_says(status, body, kind):
    assert error_kind(status, body) == kind


def test_quota_and_key_errors_stop_with_the_right_message(tmp_path, sim):
    sim.config.insufficient_quota = True
    with pytest.raises(QuotaExceededError, match="out of credit"):
        NumbersTask(str(tmp_path / "q"), 30, client_base_url=sim.base_url, force_direct=True, **OPTIONS).run()
    assert_nothing_consumed(tmp_path / "q")
    sim.config.insufficient_quota = False
    sim.config.require_api_key = "sk-right"
    with pytest.raises(AuthenticationError):
        NumbersTask(str(tmp_path / "k"), 30, client_base_url=sim.base_url, force_direct=True, **OPTIONS).run()
    assert_nothing_consumed(tmp_path / "k")


def test_a_key_refused_in_every_result_line_names_the_key_of_the_provider_in_use():
    from gpt_batch_api.api_errors import ANTHROPIC, OPENAI
    from gpt_batch_api.backends.connections import connect
    from gpt_batch_api.error_kinds import advice
    from gpt_batch_api.requester_options import RequesterOptions

    body = {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}
    for provider, words, other in (("openai", OPENAI, "ANTHROPIC_API_KEY"), ("anthropic", ANTHROPIC, "OPENAI_API_KEY")):
        connection = connect(RequesterOptions(provider=provider), "/v1/messages")
        assert connection.words is words
        said = advice(ErrorKind.AUTH, 401, body, path="/messages", base_url="http://127.0.0.1:9", model=None,
                      key_hint=connection.words.key_hint)  # fmt: skip
        assert words.key_hint in said and other not in said
