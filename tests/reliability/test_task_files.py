"""Missing and damaged task files: every file x {missing, empty, truncated, garbage, wrong type}.

A task is stopped part-way (answers in the output, requests in the queue, cut batches on disk), one of its
files is damaged from outside, and the task is run again. Each case must end in a refusal (a TaskFileError
naming the file and a way out) whose advised fix, run by the test, completes the task with every sample
exactly once and no answer bought twice unless the fix itself forgets the answers (``--wipe_task``).
Nothing is ever silently started afresh.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gpt_batch_api.demo_tasks.char_codes import CHARACTERS
from gpt_batch_api.errors import TaskFileError
from gpt_batch_api.simulator import Simulator, SimulatorConfig
from gpt_batch_api.verify import verify_task

from ..support.helpers import FAST_BATCHES, REPO, assert_complete
from ..support.numbers_task import NumbersTask
from . import Ledger

NUM = 60
BATCH = {"min_batch_requests": 1, "max_batch_requests": 10, "remote_update_interval": 0.2}


def make_task(task_dir: Path, base_url: str, **options: Any) -> NumbersTask:
    base = {"wandb": False, "progress": False, "client_base_url": base_url, "openai_api_key": "sk-test"}
    return NumbersTask(str(task_dir), NUM, chunk=10, **{**base, **BATCH, **options})


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """A task with 20 answers in its output, 20 requests queued and 2 cut batches not yet pushed."""
    task_dir = tmp_path_factory.mktemp("template")
    ledger = Ledger()
    with Simulator(SimulatorConfig(**FAST_BATCHES), responder=ledger) as sim:
        assert make_task(task_dir, sim.base_url, max_session_requests=20).run() is False
        assert make_task(task_dir, sim.base_url, max_remote_batches=0, max_unpushed_batches=2).run() is False
    names = {p.name for p in task_dir.iterdir()}
    assert {"numbers_batch_000003.jsonl", "numbers_batch_000003_info.jsonl", "numbers_output.jsonl"} <= names
    return task_dir, {key: len(times) for key, times in ledger.answers.items()}


FILES = [
    "numbers_task.json",
    "numbers_task_log_0001.jsonl",
    "numbers_state.json",
    "numbers_queue_0000.jsonl",
    "numbers_output.jsonl",
    "numbers_batch_000003.jsonl",
    "numbers_batch_000003_info.jsonl",
]


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "missing":
        path.unlink()
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2 + 7])  # cut inside a line
    elif how == "garbage":
        path.write_bytes((b"\x00\xffnot json at all\n" * (len(data) // 17 + 1))[: len(data)])
    elif how == "wrong_type":
        path.write_bytes(b"[]" if path.suffix == ".json" else b"[]\n")
    elif how == "field_missing":  # valid JSON of the right shape, one field short (an edit by hand, a bad tool)
        if path.suffix == ".json":
            obj = json.loads(data)
            obj.pop(sorted(obj)[len(obj) // 2])
            path.write_text(json.dumps(obj))
        else:
            lines = [json.loads(line) for line in data.splitlines()]
            path.write_text(
                "".join(json.dumps({k: v for k, v in o.items() if k != sorted(o)[0]}) + "\n" for o in lines)
            )
    elif how == "field_wrong_type":  # the right keys, one value of another type (an edit by hand, a bad tool)
        if path.suffix == ".json":
            obj = json.loads(data)
            key = sorted(obj)[len(obj) // 2]
            obj[key] = retyped(obj[key])
            path.write_text(json.dumps(obj))
        else:
            lines = [json.loads(line) for line in data.splitlines()]
            keys = [WRONG_KEY["key"] or min(o) for o in lines]
            path.write_text(
                "".join(json.dumps({**o, k: retyped(o[k])}) + "\n" for o, k in zip(lines, keys, strict=True))
            )
    else:
        raise ValueError(how)


WRONG_KEY: dict[str, str | None] = {"key": None}  # the key of each line field_wrong_type changes (None: the first)


def retyped(value: Any) -> Any:
    return 12345 if isinstance(value, str) else "x"


def advised_fix(message: str) -> str:
    fixes = re.findall(r"--wipe_(?:task|requests)", message)
    assert fixes, f"the message names no fix: {message}"
    return fixes[0][2:]


DAMAGES = ["missing", "empty", "truncated", "garbage", "wrong_type", "field_missing", "field_wrong_type"]
BATCH_FILES = ["numbers_batch_000003.jsonl", "numbers_batch_000003_info.jsonl"]


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("name", FILES)
def test_damaged_file_is_refused_and_the_advised_fix_works(tmp_path, template, name, how):
    check_refusal_and_fix(tmp_path, template, name, how, {})


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("name", BATCH_FILES)
def test_damaged_batch_file_is_refused_before_direct_calls(tmp_path, template, name, how):
    check_refusal_and_fix(tmp_path, template, name, how, {"force_direct": True})


@pytest.mark.parametrize("key", ["id", "retry_num", "ti", "to", "cb", "cd", "size", "parse", "n", "meta"])
def test_an_info_field_of_another_type_is_refused_before_direct_calls(tmp_path, template, key, monkeypatch):
    """Each of these used to be sent and paid for, then crash the processing (ti, to, parse, meta), name the
    wrong file (id) or carry nonsense to the task's results (the others)."""
    monkeypatch.setitem(WRONG_KEY, "key", key)
    check_refusal_and_fix(tmp_path, template, BATCH_FILES[1], "field_wrong_type", {"force_direct": True})


def check_refusal_and_fix(tmp_path, template, name: str, how: str, options: dict[str, Any]) -> None:
    source, answered_before = template
    task_dir = tmp_path / "task"
    shutil.copytree(source, task_dir)
    damage(task_dir / name, how)
    ledger = Ledger()
    with Simulator(SimulatorConfig(**FAST_BATCHES), responder=ledger) as sim:
        with pytest.raises(TaskFileError) as refused:
            make_task(task_dir, sim.base_url, **options).run()
        message = str(refused.value)
        assert name in message, message
        assert not ledger.answers, "nothing may be sent before the refusal"
        fix = advised_fix(message)
        damaged = [f for f in verify_task(task_dir, "numbers") if not f.ok]
        assert damaged, "python -m gpt_batch_api.verify found nothing wrong"
        assert fix in " ".join(f.fix for f in damaged)
        assert make_task(task_dir, sim.base_url, force_direct=True, **{fix: True}).run() is True
    assert_complete(task_dir, NUM)
    assert all(f.ok for f in verify_task(task_dir, "numbers")), verify_task(task_dir, "numbers")
    again = {key: len(times) for key, times in ledger.answers.items()}
    assert max(again.values()) == 1, "a sample was bought twice in the run with the fix"
    if fix == "wipe_requests":  # answers already in the output are kept, never bought again
        assert not set(again) & set(answered_before), "--wipe_requests bought answered samples again"


def test_a_task_without_any_file_starts_fresh_and_a_lock_file_alone_is_no_task(tmp_path):
    (tmp_path / "numbers.lock").write_bytes(b"")
    with Simulator(SimulatorConfig(**FAST_BATCHES)) as sim:
        assert make_task(tmp_path, sim.base_url).run() is True
    assert_complete(tmp_path, NUM)


# ------------------------------------------------------------------------------ the demo: no raw traceback


def demo(task_dir: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "gpt_batch_api.task_manager_demo", "--task", "char_codes", "--simulate"]
    cmd += ["--no_wandb", "--no_progress", "--task_dir", str(task_dir), *flags]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("name", "how"),
    [
        ("char_codes_output.json", "missing"),
        ("char_codes_output.json", "wrong_type"),
        ("char_codes_output.json", "garbage"),
        ("char_codes_state.json", "missing"),
        ("char_codes_task.json", "missing"),
        ("char_codes_task_log_0001.jsonl", "truncated"),
    ],
)
def test_demo_refuses_a_damaged_file_without_traceback_and_the_fix_works(tmp_path, name, how):
    first = demo(tmp_path, "--force_direct", "--max_session_requests", "60")
    assert first.returncode == 0, first.stderr
    damage(tmp_path / name, how)
    refused = demo(tmp_path)
    out = refused.stdout + refused.stderr
    assert refused.returncode == 1, out
    assert "Traceback" not in out and name in out, out
    verify_cmd = re.search(r"python -m gpt_batch_api\.verify .*", out)
    assert verify_cmd, out
    verify = subprocess.run([sys.executable, *verify_cmd.group(0).split()[1:]], cwd=REPO, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert verify.returncode == 1 and name in verify.stdout and "DAMAGED" in verify.stdout, verify.stdout
    done = demo(tmp_path, f"--{advised_fix(out)}")
    assert done.returncode == 0 and "Task complete" in done.stdout + done.stderr, done.stderr
    assert f"Task complete: {len(CHARACTERS)} samples succeeded, 0 failed" in done.stderr, done.stderr[-2000:]
    again = subprocess.run([sys.executable, *verify_cmd.group(0).split()[1:]], cwd=REPO, capture_output=True,
                           text=True, timeout=60)  # fmt: skip
    assert again.returncode == 0 and "Every file is intact" in again.stdout, again.stdout


@pytest.mark.parametrize("damage", ["cut", "deleted"])
def test_a_downloaded_result_file_damaged_before_processing_is_downloaded_again_not_bought_again(tmp_path, damage):
    """The process dies between downloading a batch and processing it; the results file is then cut short or
    deleted. The rerun downloads it again from the provider (whose files are kept until processing): every
    sample is answered by the server exactly once."""
    from gpt_batch_api.simulator import Simulator, SimulatorConfig

    from ..support.helpers import FAST_BATCHES, assert_complete, run_numbers_subprocess
    from . import Ledger

    options = {"min_batch_requests": 1, "max_batch_requests": 40, "remote_update_interval": 0.2}
    ledger = Ledger()
    with Simulator(SimulatorConfig(**FAST_BATCHES), responder=ledger) as sim:
        proc = run_numbers_subprocess(tmp_path, sim.base_url, 40, options,
                                      env={"GPT_BATCH_API_CRASH_POINT": "remote_after_download"})  # fmt: skip
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 137, out[-2000:]
        results = tmp_path / "numbers_batch_000001_results.jsonl"
        data = results.read_bytes()
        assert data.count(b"\n") == 40
        if damage == "cut":
            results.write_bytes(data[: len(data) // 2])
        else:
            results.unlink()
        proc = run_numbers_subprocess(tmp_path, sim.base_url, 40, options)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out[-3000:]
        assert "downloading its results again" in out, out[-3000:]
    records = assert_complete(tmp_path, 40)
    assert all(r.error is None and r.retry_num == 0 for r in records)
    assert sorted(len(times) for times in ledger.answers.values()) == [1] * 40  # nothing bought twice
