"""One contract suite over every ``BatchBackend`` (huey's storage-test habit): a new backend is tested by
adding one entry to ``BACKENDS``.

Each entry gives a backend and a ``Provider`` handle on the far side (the simulator, or the in-memory
store) to inject faults and to count the remote batches, so "never two remote batches for one local
batch" is checked on the provider, not on what the backend says.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gpt_batch_api.backends import (
    BatchBackend,
    BatchTag,
    CandidatesUnresolved,
    ForeignResults,
    RemoteBatch,
    RemoteStatus,
)
from gpt_batch_api.backends.anthropic_backend import AnthropicBatchBackend
from gpt_batch_api.backends.memory import InMemoryBatchBackend
from gpt_batch_api.backends.openai_backend import OpenAIBatchBackend
from gpt_batch_api.errors import APIError
from gpt_batch_api.simulator import Simulator, SimulatorConfig


@dataclasses.dataclass
class Provider:
    backend: BatchBackend
    lose_next_create: Callable[[], None]
    expire_next: Callable[[], None]
    slow_down: Callable[[float], None]  # batches take this long from now on
    count_batches: Callable[[], int]  # batches the provider ever made (exactly-once is checked on these)
    stored: Callable[[], int]  # what the provider still stores for the user's batches (deleted: gone)


def _memory() -> Iterator[Provider]:
    backend = InMemoryBatchBackend()

    def lose() -> None:
        backend.lose_next_creates += 1

    def expire() -> None:
        backend.expire_next += 1

    def slow(seconds: float) -> None:
        backend.run_s = seconds

    yield Provider(backend, lose, expire, slow, lambda: backend.creates, lambda: len(backend.batches))


def _anthropic() -> Iterator[Provider]:
    import anthropic

    config = SimulatorConfig(validating_s=0.0, in_progress_s=0.05, finalizing_s=0.0, require_api_key="sk-ant-x")
    with Simulator(config) as sim:
        client = anthropic.Anthropic(api_key="sk-ant-x", base_url=sim.base_url.removesuffix("/v1"), max_retries=0)

        def lose() -> None:
            sim.config.lose_next_create_responses += 1

        def expire() -> None:
            sim.config.expire_next_batches += 1

        def slow(seconds: float) -> None:
            sim.config.in_progress_s = seconds

        def count() -> int:
            return len(sim.anthropic.batches.all())

        yield Provider(AnthropicBatchBackend(client), lose, expire, slow, count, count)


def _openai() -> Iterator[Provider]:
    import openai

    config = SimulatorConfig(validating_s=0.0, in_progress_s=0.05, finalizing_s=0.0, require_api_key="sk-x")
    with Simulator(config) as sim:
        client = openai.OpenAI(api_key="sk-x", base_url=sim.base_url, max_retries=0)

        def lose() -> None:
            sim.config.lose_next_create_responses += 1

        def expire() -> None:
            sim.config.expire_next_batches += 1

        def slow(seconds: float) -> None:
            sim.config.in_progress_s = seconds

        def stored() -> int:  # OpenAI keeps batch objects; what a user pays to store is files
            return len(sim.files.files)

        backend = OpenAIBatchBackend(client, "/v1/chat/completions")
        yield Provider(backend, lose, expire, slow, lambda: len(sim.batches.all()), stored)


BACKENDS: dict[str, Callable[[], Iterator[Provider]]] = {"memory": _memory, "anthropic": _anthropic, "openai": _openai}


@pytest.fixture(params=sorted(BACKENDS))
def provider(request) -> Iterator[Provider]:
    yield from BACKENDS[request.param]()


def _body(backend: BatchBackend, i: int) -> dict[str, Any]:
    text = f"Give the Unicode code point of the character '{chr(65 + i % 26)}'."
    if backend.name == "anthropic":
        return {"model": "claude-haiku-4-5", "max_tokens": 30, "messages": [{"role": "user", "content": text}]}
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}


def _batch_file(tmp_path: Path, backend: BatchBackend, batch_id: int, n: int) -> Path:
    path = tmp_path / f"batch_{batch_id}.jsonl"
    url = "/v1/messages" if backend.name == "anthropic" else "/v1/chat/completions"
    lines = [
        json.dumps({"custom_id": f"id-{batch_id * 1000 + i}", "method": "POST", "url": url, "body": _body(backend, i)})
        for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _until_ended(backend: BatchBackend, remote: RemoteBatch) -> RemoteBatch:
    deadline = time.monotonic() + 10
    while not remote.status.terminal:
        assert time.monotonic() < deadline, f"{remote.batch_id} did not end"
        time.sleep(0.02)
        remote = backend.status(remote)
    return remote


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def push_exactly_once(backend: BatchBackend, tag: BatchTag, batch_file: Path, n: int, since: float) -> RemoteBatch:
    """The engine's protocol: ask ``find`` before every submission, and never submit past an unresolved one."""
    for _ in range(20):
        try:
            found = backend.find(tag, n, since)
        except CandidatesUnresolved:
            time.sleep(0.05)
            continue
        if found is not None:
            return found
        try:
            return backend.submit(batch_file, tag, n)
        except APIError:
            continue  # the answer was lost: find() tells whether the batch exists
    raise AssertionError("push did not settle")


def test_submit_poll_download_every_request_once(provider, tmp_path):
    backend = provider.backend
    tag = BatchTag("a" * 32, 1)
    remote = backend.submit(_batch_file(tmp_path, backend, 1, 5), tag, 5)
    assert remote.backend == backend.name and remote.total == 5
    remote = _until_ended(backend, remote)
    assert remote.status is RemoteStatus.COMPLETED and remote.succeeded == 5 and remote.failed == 0
    summary = backend.download(remote, tag, tmp_path / "results.jsonl", tmp_path / "errors.jsonl")
    lines = _read(tmp_path / "results.jsonl")
    assert summary.lines == summary.succeeded == 5 and not (tmp_path / "errors.jsonl").exists()
    assert sorted(line["custom_id"] for line in lines) == [f"id-{1000 + i}" for i in range(5)]
    assert all(line["response"]["status_code"] == 200 and isinstance(line["response"]["body"], dict) for line in lines)
    again = backend.download(remote, tag, tmp_path / "results.jsonl", tmp_path / "errors.jsonl")  # idempotent
    assert again == summary and _read(tmp_path / "results.jsonl") == lines


def test_find_knows_only_its_own_batch(provider, tmp_path):
    backend = provider.backend
    since = time.time()
    assert backend.find(BatchTag("b" * 32, 1), 3, since) is None
    mine = _until_ended(backend, backend.submit(_batch_file(tmp_path, backend, 1, 3), BatchTag("b" * 32, 1), 3))
    assert backend.find(BatchTag("c" * 32, 1), 3, since) is None  # another task
    assert backend.find(BatchTag("b" * 32, 2), 3, since) is None  # another batch of this task
    found = backend.find(BatchTag("b" * 32, 1), 3, since)
    assert found is not None and found.batch_id == mine.batch_id and found.certain


def test_lost_create_answers_never_make_two_remote_batches(provider, tmp_path):
    backend = provider.backend
    for batch_id in range(1, 9):
        provider.lose_next_create()  # every create answer is lost once, many times over
        since = time.time()
        tag = BatchTag("d" * 32, batch_id)
        remote = push_exactly_once(backend, tag, _batch_file(tmp_path, backend, batch_id, 2), 2, since)
        remote = _until_ended(backend, remote)
        backend.download(remote, tag, tmp_path / f"r{batch_id}.jsonl", tmp_path / f"e{batch_id}.jsonl")
        assert {line["custom_id"] for line in _read(tmp_path / f"r{batch_id}.jsonl")} == {
            f"id-{batch_id * 1000}",
            f"id-{batch_id * 1000 + 1}",
        }
    assert provider.count_batches() == 8


def test_same_size_batches_of_two_tasks_are_told_apart(provider, tmp_path):
    backend = provider.backend
    provider.slow_down(0.4)
    since = time.time()
    mine, theirs = BatchTag("e" * 32, 1), BatchTag("f" * 32, 1)
    provider.lose_next_create()
    with pytest.raises(APIError):
        backend.submit(_batch_file(tmp_path, backend, 1, 4), mine, 4)
    (tmp_path / "theirs").mkdir()
    other = backend.submit(_batch_file(tmp_path / "theirs", backend, 1, 4), theirs, 4)
    try:
        found = backend.find(mine, 4, since)
        assert found is None or not found.certain or found.batch_id != other.batch_id
    except CandidatesUnresolved:
        pass  # a backend without tags on the batch must wait, never guess
    _until_ended(backend, other)
    time.sleep(0.5)
    found = backend.find(mine, 4, since)
    assert found is not None and found.certain and found.batch_id != other.batch_id
    assert provider.count_batches() == 2


def test_expired_batch_delivers_finished_answers_and_free_retry_lines(provider, tmp_path):
    backend = provider.backend
    provider.expire_next()
    tag = BatchTag("g" * 32, 1)
    remote = _until_ended(backend, backend.submit(_batch_file(tmp_path, backend, 1, 10), tag, 10))
    assert remote.status is RemoteStatus.EXPIRED and remote.succeeded + remote.failed == 10 and remote.failed
    summary = backend.download(remote, tag, tmp_path / "results.jsonl", tmp_path / "errors.jsonl")
    answers, errors = _read(tmp_path / "results.jsonl"), _read(tmp_path / "errors.jsonl")
    assert summary.lines == 10 and len(answers) == summary.succeeded == remote.succeeded
    assert {e["error"]["code"] for e in errors} == {"batch_expired"} and len(errors) == remote.failed
    assert {line["custom_id"] for line in answers + errors} == {f"id-{1000 + i}" for i in range(10)}


def test_cancel_then_delete(provider, tmp_path):
    backend = provider.backend
    provider.slow_down(30.0)
    tag = BatchTag("h" * 32, 1)
    remote = backend.submit(_batch_file(tmp_path, backend, 1, 6), tag, 6)
    backend.cancel(remote)
    backend.cancel(remote)  # idempotent
    remote = _until_ended(backend, backend.status(remote))
    assert remote.status is RemoteStatus.CANCELLED
    backend.download(remote, tag, tmp_path / "results.jsonl", tmp_path / "errors.jsonl")
    lines = _read(tmp_path / "results.jsonl") + _read(tmp_path / "errors.jsonl")
    assert len(lines) == 6 and {line["error"]["code"] for line in lines if "error" in line} == {"batch_cancelled"}
    backend.delete(remote)
    backend.delete(remote)  # idempotent
    assert provider.stored() == 0


def test_a_guessed_batch_that_is_not_ours_is_refused_at_download(provider, tmp_path):
    backend = provider.backend
    theirs, mine = BatchTag("i" * 32, 1), BatchTag("j" * 32, 1)
    other = _until_ended(backend, backend.submit(_batch_file(tmp_path, backend, 1, 3), theirs, 3))
    guessed = dataclasses.replace(other, certain=False)  # what find() may return before results are readable
    with pytest.raises(ForeignResults):
        backend.download(guessed, mine, tmp_path / "results.jsonl", tmp_path / "errors.jsonl")
    assert not (tmp_path / "results.jsonl").exists() and not (tmp_path / "errors.jsonl").exists()
    with pytest.raises(APIError):  # a certain batch with foreign lines is a provider fault, not a guess
        backend.download(other, mine, tmp_path / "results.jsonl", tmp_path / "errors.jsonl")


def test_without_the_anthropic_sdk_one_line_says_how_to_install():
    import subprocess
    import sys
    import tomllib

    code = (
        "import sys; sys.modules['anthropic'] = None\n"  # as if not installed
        "import gpt_batch_api, gpt_batch_api.backends, gpt_batch_api.simulator\n"
        "from gpt_batch_api.backends.anthropic_backend import AnthropicBatchBackend\n"
        "try:\n    AnthropicBatchBackend(api_key='x')\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    expected = 'ConfigError Anthropic jobs need the anthropic SDK: pip install "gpt_batch_api[anthropic]"'
    assert out.stdout.strip() == expected
    # The advised extra exists and brings the SDK.
    pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    assert any(r.startswith("anthropic") for r in pyproject["project"]["optional-dependencies"]["anthropic"])


def test_anthropic_account_errors_are_named_with_their_fix(tmp_path):
    import anthropic

    from gpt_batch_api.errors import AuthenticationError, QuotaExceededError

    config = SimulatorConfig(require_api_key="sk-ant-right")
    with Simulator(config) as sim:
        base = sim.base_url.removesuffix("/v1")
        wrong = AnthropicBatchBackend(anthropic.Anthropic(api_key="sk-ant-wrong", base_url=base, max_retries=0))
        batch_file = _batch_file(tmp_path, wrong, 1, 1)
        with pytest.raises(AuthenticationError, match="Check ANTHROPIC_API_KEY"):
            wrong.submit(batch_file, BatchTag("k" * 32, 1), 1)
        right = AnthropicBatchBackend(anthropic.Anthropic(api_key="sk-ant-right", base_url=base, max_retries=0))
        sim.config.insufficient_quota = True
        with pytest.raises(QuotaExceededError, match="Add credit"):
            right.submit(batch_file, BatchTag("k" * 32, 1), 1)
        sim.config.insufficient_quota = False  # the advised fix (credit added): the same call now works
        assert right.submit(batch_file, BatchTag("k" * 32, 1), 1).total == 1
    assert sim.anthropic.batches.all() and len(sim.anthropic.batches.all()) == 1


def test_openai_an_upload_gone_before_the_create_is_uploaded_again(tmp_path):
    """A server that restarted without its files (or a file deleted meanwhile) refuses the create of an
    upload committed by an earlier run: the backend uploads again, once, and makes one batch."""
    providers = _openai()  # kept referenced: closing the generator stops its simulator
    provider = next(providers)
    backend = provider.backend
    tag = BatchTag("k" * 32, 1)
    path = _batch_file(tmp_path, backend, 1, 3)
    handles = backend.prepare(path, tag)
    backend.client.files.delete(handles["input_file_id"])
    remote = backend.submit(path, tag, 3, handles)
    assert remote.handles["input_file_id"] != handles["input_file_id"]
    assert provider.count_batches() == 1
    providers.close()
