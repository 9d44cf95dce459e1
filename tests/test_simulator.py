"""The simulator's Files and Batches API through the real openai SDK over HTTP on 127.0.0.1."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time

import openai
import pytest

from gpt_batch_api.simulator import Simulator, SimulatorConfig

FAST = {"validating_s": 0.05, "in_progress_s": 0.15, "finalizing_s": 0.05}
ENDPOINT = "/v1/chat/completions"
FINAL = ("completed", "failed", "expired", "cancelled")


@pytest.fixture()
def sim():
    with Simulator(SimulatorConfig(**FAST)) as simulator:
        yield simulator


@pytest.fixture()
def client(sim):
    return openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)


def request_line(i: int, model: str = "gpt-4o-mini", url: str = ENDPOINT, custom_id: str | None = None) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": f"Reply with the number {i}."}]}
    return {"custom_id": custom_id or f"req-{i}", "method": "POST", "url": url, "body": body}


def upload(client, lines: list) -> str:
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    return client.files.create(file=("input.jsonl", io.BytesIO(text.encode())), purpose="batch").id


def submit(client, lines: list, **kwargs):
    return client.batches.create(
        input_file_id=upload(client, lines), endpoint=ENDPOINT, completion_window="24h", **kwargs
    )


def wait(client, batch, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    seen = [batch.status]
    while batch.status not in FINAL:
        assert time.monotonic() < deadline, f"batch stuck in {batch.status}"
        time.sleep(0.02)
        batch = client.batches.retrieve(batch.id)
        if batch.status != seen[-1]:
            seen.append(batch.status)
    return batch, seen


def read_jsonl(client, file_id: str | None) -> list:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def test_completed_batch_lifecycle_output_order_and_metadata(client, sim):
    lines = [request_line(i) for i in range(30)]
    batch = submit(client, lines, metadata={"gpt_batch_api_task": "t1", "gpt_batch_api_batch": "000007"})
    assert batch.status == "validating"
    assert batch.metadata == {"gpt_batch_api_task": "t1", "gpt_batch_api_batch": "000007"}
    batch, seen = wait(client, batch)
    assert seen[0] == "validating" and seen[-1] == "completed"
    assert "in_progress" in seen
    assert (
        batch.request_counts.total == 30 and batch.request_counts.completed == 30 and batch.request_counts.failed == 0
    )
    assert batch.completed_at and batch.in_progress_at and batch.finalizing_at
    assert batch.error_file_id is None and batch.errors is None
    assert batch.metadata["gpt_batch_api_batch"] == "000007"
    output = read_jsonl(client, batch.output_file_id)
    ids = [line["custom_id"] for line in output]
    assert sorted(ids) == sorted(line["custom_id"] for line in lines)
    assert ids != [line["custom_id"] for line in lines], "output must come back in a different order"
    for line in output:
        assert line["id"].startswith("batch_req_") and line["error"] is None
        assert line["response"]["status_code"] == 200 and line["response"]["request_id"]
        body = openai.types.chat.ChatCompletion.model_validate(line["response"]["body"])
        assert body.choices[0].message.content and body.usage.prompt_tokens > 0
    assert client.files.retrieve(batch.output_file_id).purpose == "batch_output"
    assert batch.usage is not None and batch.usage.input_tokens == sum(
        line["response"]["body"]["usage"]["prompt_tokens"] for line in output
    )
    stats = sim.stats()
    assert [b["id"] for b in stats["batches"]] == [batch.id]
    assert stats["batches"][0]["metadata"]["gpt_batch_api_task"] == "t1"
    assert stats["batches"][0]["input_file_id"] == batch.input_file_id
    assert stats["direct_requests"] == 0


@pytest.mark.parametrize(
    ("lines", "code"),
    [
        (["{not json", json.dumps(request_line(1))], "invalid_json_line"),
        ([request_line(1, custom_id="same"), request_line(2, custom_id="same")], "duplicate_custom_id"),
        ([request_line(1), request_line(2, model="gpt-4.1-mini")], "model_mismatch"),
        ([request_line(1, url="/v1/embeddings")], "url_mismatch"),
        ([{"custom_id": "x", "method": "POST", "url": ENDPOINT}], "missing_required_parameter"),
        ([], "empty_file"),
    ],
)
def test_invalid_input_fails_validation(client, lines, code):
    batch, seen = wait(client, submit(client, lines))
    assert seen == ["validating", "failed"]
    assert batch.errors is not None and batch.errors.data[0].code == code
    assert batch.errors.data[0].message
    assert batch.failed_at and batch.output_file_id is None and batch.error_file_id is None


def test_more_than_50000_requests_fails(client):
    lines = [json.dumps(request_line(0, custom_id=f"c{i}")) for i in range(50_001)]
    batch, _ = wait(client, submit(client, lines), timeout=20)
    assert batch.status == "failed" and batch.errors.data[0].code == "too_many_tasks"


def test_fail_next_batches_counts_down(client, sim):
    sim.config.fail_next_batches = 1
    first, _ = wait(client, submit(client, [request_line(1)]))
    second, _ = wait(client, submit(client, [request_line(1)]))
    assert first.status == "failed" and first.errors.data[0].code
    assert second.status == "completed"
    assert sim.config.fail_next_batches == 0


def test_expired_batch_delivers_partial_results(client, sim):
    sim.config.expire_next_batches = 1
    batch, seen = wait(client, submit(client, [request_line(i) for i in range(40)]))
    assert seen[-1] == "expired" and batch.expired_at
    done = read_jsonl(client, batch.output_file_id)
    expired = read_jsonl(client, batch.error_file_id)
    assert 10 <= len(done) <= 30, "about half the lines are done"
    assert len(done) + len(expired) == 40
    assert {e["error"]["code"] for e in expired} == {"batch_expired"}
    assert all(e["response"] is None for e in expired)
    assert {line["custom_id"] for line in done + expired} == {f"req-{i}" for i in range(40)}
    assert batch.request_counts.completed == len(done) and batch.request_counts.failed == len(expired)


def test_cancelled_batch_delivers_partial_results(sim, client):
    sim.config.in_progress_s = 0.6
    sim.config.finalizing_s = 0.1
    batch = submit(client, [request_line(i) for i in range(40)])
    while client.batches.retrieve(batch.id).status == "validating":
        time.sleep(0.01)
    time.sleep(0.3)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    batch, seen = wait(client, cancelling)
    assert seen[-1] == "cancelled" and batch.cancelled_at
    done = read_jsonl(client, batch.output_file_id)
    cancelled = read_jsonl(client, batch.error_file_id)
    assert 0 < len(done) < 40 and len(done) + len(cancelled) == 40
    assert {e["error"]["code"] for e in cancelled} == {"batch_cancelled"}
    with pytest.raises(openai.APIStatusError):
        client.batches.cancel(submit_and_finish(client).id)


def submit_and_finish(client):
    return wait(client, submit(client, [request_line(1)]))[0]


def test_token_limit_exceeded_counts_batches_in_flight(client, sim):
    sim.config.in_progress_s = 1.0
    one = submit(client, [request_line(i) for i in range(10)])
    tokens = read_tokens(client, sim, one)
    sim.config.enqueued_token_limit = int(tokens * 1.5)
    refused = submit(client, [request_line(i) for i in range(10)])
    other_model = submit(client, [request_line(i, model="gpt-4.1-mini") for i in range(10)])
    refused, _ = wait(client, refused)
    assert refused.status == "failed"
    assert refused.errors.data[0].code == "token_limit_exceeded" and "gpt-4o-mini" in refused.errors.data[0].message
    assert wait(client, one)[0].status == "completed"
    assert wait(client, other_model)[0].status == "completed", "the limit is per model"
    assert wait(client, submit(client, [request_line(i) for i in range(10)]))[0].status == "completed"


def read_tokens(client, sim, batch) -> int:
    """Prompt tokens of a batch's lines, asked of the direct endpoint (same recipe as the batch limit)."""
    lines = read_jsonl(client, batch.input_file_id)
    direct = [client.chat.completions.create(**line["body"]).usage.prompt_tokens for line in lines]
    return sum(direct)


def test_error_missing_and_malformed_lines(client, sim):
    sim.config.error_line_rate = 0.2
    sim.config.missing_line_rate = 0.1
    sim.config.malformed_line_rate = 0.1
    sim.config.seed = 3
    batch, _ = wait(client, submit(client, [request_line(i) for i in range(200)]))
    assert batch.status == "completed"
    raw = client.files.content(batch.output_file_id).text.splitlines()
    good, malformed = [], []
    for text in raw:
        try:
            good.append(json.loads(text))
        except ValueError:
            malformed.append(text)
    errors = read_jsonl(client, batch.error_file_id)
    assert 10 <= len(errors) <= 70 and 3 <= len(malformed) <= 40
    assert {e["response"]["status_code"] for e in errors} == {500}
    assert {e["response"]["body"]["error"]["code"] for e in errors} == {"server_error"}
    answered = len(good) + len(malformed) + len(errors)
    assert 200 - 45 <= answered < 200, "some lines are missing from both files"
    assert all('"custom_id"' in text for text in malformed)


def test_list_pagination_newest_first_and_files_crud(client, sim):
    ids = [submit(client, [request_line(i)], metadata={"n": str(i)}).id for i in range(5)]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
    second = client.batches.list(limit=2, after=page.data[-1].id)
    assert [b.id for b in second.data] == ids[::-1][2:4]
    assert [b.id for b in client.batches.list(limit=2)] == ids[::-1], "auto-pagination walks every batch"
    assert [b.metadata["n"] for b in client.batches.list(limit=100)] == ["4", "3", "2", "1", "0"]

    file_id = upload(client, [request_line(1)])
    info = client.files.retrieve(file_id)
    assert info.purpose == "batch" and info.filename == "input.jsonl" and info.bytes > 0
    assert json.loads(client.files.content(file_id).text)["custom_id"] == "req-1"
    assert file_id in [f.id for f in client.files.list(purpose="batch")]
    before = sim.stats()["files"]
    assert client.files.delete(file_id).deleted
    assert sim.stats()["files"] == before - 1
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(file_id)
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id="file-nope", endpoint=ENDPOINT, completion_window="24h")


def test_embeddings_and_responses_batches(client):
    for endpoint, body in (
        ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "hello"}),
        ("/v1/responses", {"model": "gpt-4o-mini", "input": "hello"}),
    ):
        lines = [{"custom_id": f"e{i}", "method": "POST", "url": endpoint, "body": body} for i in range(3)]
        batch = client.batches.create(input_file_id=upload(client, lines), endpoint=endpoint, completion_window="24h")
        batch, _ = wait(client, batch)
        assert batch.status == "completed"
        bodies = [line["response"]["body"] for line in read_jsonl(client, batch.output_file_id)]
        assert len(bodies) == 3
        assert bodies[0]["object"] == ("list" if endpoint == "/v1/embeddings" else "response")


def test_disabled_batch_api_answers_404(client, sim):
    sim.config.files_api_enabled = False
    sim.config.batches_api_enabled = False
    with pytest.raises(openai.NotFoundError):
        client.files.list()
    with pytest.raises(openai.NotFoundError):
        client.batches.list()
    assert client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]).choices


def test_batch_routes_are_free_of_direct_faults_unless_flagged(client, sim):
    sim.config.http_500_rate = 1.0
    assert wait(client, submit(client, [request_line(1)]))[0].status == "completed"
    sim.config.batch_api_faults = True
    with pytest.raises(openai.InternalServerError):
        client.batches.list()


def test_wrong_key_and_no_quota_on_batch_routes(client, sim):
    sim.config.require_api_key = "sk-right"
    with pytest.raises(openai.AuthenticationError) as caught:
        client.files.list()
    assert caught.value.code == "invalid_api_key"
    right = openai.OpenAI(base_url=sim.base_url, api_key="sk-right", max_retries=0)
    assert right.batches.list().data == []
    sim.config.insufficient_quota = True
    with pytest.raises(openai.RateLimitError) as caught:
        right.batches.list()
    assert caught.value.code == "insufficient_quota"


def test_stop_closes_connections_and_stats_keep_counting():
    with Simulator(SimulatorConfig(**FAST)) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)
        client.files.list()
    with pytest.raises(openai.APIConnectionError):
        client.files.list()


def test_smoke_subprocess():
    proc = subprocess.run(
        [sys.executable, "-m", "gpt_batch_api.simulator", "--smoke"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "OK"


def test_cli_serves_with_flags():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "gpt_batch_api.simulator", "--port", str(port), "--require_api_key", "sk-cli",
               "--validating_s", "0", "--files_api_enabled", "false"]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert f"http://127.0.0.1:{port}/v1" in proc.stdout.readline()
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-cli", max_retries=0)
        assert client.models.list().data
        with pytest.raises(openai.NotFoundError):
            client.files.list()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
