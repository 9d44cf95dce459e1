"""Bad input gets a clear error naming the problem and the fix, and never damages the task files."""

from __future__ import annotations

import json
import os

import pytest

from gpt_batch_api.errors import ConfigError, TaskFileError, TaskLockedError
from gpt_batch_api.simulator import Simulator, SimulatorConfig
from gpt_batch_api.store.atomic import CRASH_POINT_ENV
from gpt_batch_api.store.lock import TaskLock

from .support.helpers import FAST_BATCHES, assert_complete, run_numbers_subprocess
from .support.numbers_task import NumbersTask


@pytest.fixture()
def sim():
    with Simulator(SimulatorConfig(**FAST_BATCHES)) as simulator:
        yield simulator


def make_task(task_dir, sim, num=20, **options) -> NumbersTask:
    base = {"wandb": False, "progress": False, "client_base_url": sim.base_url, "openai_api_key": "sk-test"}
    return NumbersTask(str(task_dir), num, **{**base, "force_direct": True, **options})


@pytest.fixture()
def finished_task(tmp_path, sim):
    assert make_task(tmp_path, sim).run() is True
    return tmp_path


@pytest.mark.parametrize("name", ["numbers_task.json", "numbers_state.json"])
@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_state_files_are_refused_and_left_alone(finished_task, sim, name, damage):
    path = finished_task / name
    original = path.read_bytes()
    damaged = {"truncate": original[: len(original) // 2], "garbage": b"\x00\xffnot json", "empty": b""}[damage]
    path.write_bytes(damaged)
    with pytest.raises(TaskFileError) as info:
        make_task(finished_task, sim).run()
    assert name in str(info.value) and "not modified" in str(info.value)
    assert path.read_bytes() == damaged


@pytest.mark.parametrize("name", ["numbers_task.json", "numbers_state.json"])
def test_state_from_a_future_version_is_refused(finished_task, sim, name):
    path = finished_task / name
    data = json.loads(path.read_text())
    data["version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(TaskFileError, match="newer gpt_batch_api"):
        make_task(finished_task, sim).run()


def test_truncated_output_file_is_refused(finished_task, sim):
    output = finished_task / "numbers_output.jsonl"
    output.write_bytes(output.read_bytes()[:10])
    with pytest.raises(TaskFileError, match="numbers_output"):
        make_task(finished_task, sim).run()


@pytest.mark.parametrize("pattern", ["numbers_queue_*.jsonl", "numbers_batch_000001.jsonl"])
def test_truncated_queue_or_batch_file_is_refused(tmp_path, sim, pattern):
    # Generation stops after the first chunk (limit reached), leaving queued requests and a local batch.
    task = make_task(
        tmp_path,
        sim,
        90,
        chunk=30,
        min_batch_requests=30,
        max_batch_requests=30,
        max_remote_batches=0,
        max_unpushed_batches=1,
        force_direct=False,
    )
    assert task.run() is False
    path = next(tmp_path.glob(pattern))
    assert path.stat().st_size > 0
    path.write_bytes(path.read_bytes()[:5])
    with pytest.raises(TaskFileError, match=path.name):
        make_task(tmp_path, sim, 90, chunk=30, force_direct=False).run()
    assert path.stat().st_size == 5, "the damaged file must be left as it was"


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        ({"max_batch_ktokens": 100, "max_remote_ktokens": 50}, "max_batch_ktokens"),
        ({"min_batch_requests": 500, "max_batch_requests": 100}, "min_batch_requests"),
        ({"max_token_safety": 0.5}, "max_token_safety"),
        ({"max_batch_requests": 60000}, "max_batch_requests"),
        ({"direct_verbose": "sometimes"}, "direct_verbose"),
        ({"max_retries": -1}, "max_retries"),
        ({"no_such_option": 1}, "no_such_option"),
    ],
)
def test_invalid_options_name_the_option(tmp_path, sim, options, flag):
    with pytest.raises(ConfigError, match=flag):
        make_task(tmp_path, sim, **options)
    assert not tmp_path.joinpath("numbers_task.json").exists()


def test_second_process_gets_a_lock_error_naming_the_holder(tmp_path, sim):
    with TaskLock(tmp_path / "numbers.lock"):
        with pytest.raises(TaskLockedError) as info:
            make_task(tmp_path, sim, lock_timeout=0).run()
    assert "numbers.lock" in str(info.value) and str(os.getpid()) in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_task_dir(finished_task, sim):
    os.chmod(finished_task, 0o555)
    try:
        with pytest.raises(TaskFileError):
            make_task(finished_task, sim, wipe_task=True).run()
    finally:
        os.chmod(finished_task, 0o755)


def test_damaged_batch_input_is_refused_when_its_results_are_processed(tmp_path, sim):
    # The run dies right after downloading the results: the batch waits to be processed from its local files.
    options = {"min_batch_requests": 1, "max_batch_requests": 40, "remote_update_interval": 0.3}
    proc = run_numbers_subprocess(tmp_path, sim.base_url, 40, options, env={CRASH_POINT_ENV: "remote_after_download"})
    proc.wait(timeout=120)
    assert proc.returncode == 137, proc.stdout.read() if proc.stdout else ""
    path = tmp_path / "numbers_batch_000001.jsonl"
    original = path.read_bytes()
    lines = original.splitlines(keepends=True)
    lines[10] = b"\x00" * (len(lines[10]) - 1) + b"\n"  # a block of zeros, as a lost write leaves it
    damaged = b"".join(lines)
    path.write_bytes(damaged)
    with pytest.raises(TaskFileError, match=path.name) as info:
        make_task(tmp_path, sim, 40, force_direct=False, **options).run()
    assert "restore the file" in str(info.value)
    assert path.read_bytes() == damaged, "the damaged file must be left as it was"
    path.write_bytes(original)
    assert make_task(tmp_path, sim, 40, force_direct=False, **options).run() is True
    assert_complete(tmp_path, 40)
