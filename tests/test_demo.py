"""The demo CLI end to end on the simulator, in real subprocesses: batch, direct and mixed modes, status,
wipe and reinit_meta, and the utterance_emotion task with its opinion voting."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from gpt_batch_api.demo_tasks.char_codes import CHARACTERS
from gpt_batch_api.demo_tasks.responder import demo_responder
from gpt_batch_api.demo_tasks.utterance_emotion import load_utterances
from gpt_batch_api.simulator import Simulator, SimulatorConfig

from .support.helpers import read_task_state

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sim():
    config = SimulatorConfig(validating_s=0.05, in_progress_s=0.2, finalizing_s=0.05)
    with Simulator(config, responder=demo_responder) as simulator:
        yield simulator


def demo(task_dir: Path, *args: str, sim: Simulator | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "gpt_batch_api.task_manager_demo", "--task_dir", str(task_dir), "--no_progress", *args]
    if sim is not None:
        cmd += ["--client_base_url", sim.base_url, "--openai_api_key", "sk-demo-test"]
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, cwd=task_dir.parent, env=env, capture_output=True, text=True, timeout=timeout)


def char_output(task_dir: Path) -> dict:
    return json.loads((task_dir / "char_codes_output.json").read_text())["chars"]


def check_char_codes(task_dir: Path) -> dict:
    chars = char_output(task_dir)
    assert sorted(chars) == sorted(CHARACTERS)
    for char, info in chars.items():
        assert info["code_point"] == f"U+{ord(char):04X}", "a wrong code point must have been retried"
        assert info["name_correct"] == (info["name"] == unicodedata.name(char, ""))
    return chars


def test_demo_against_a_simulator_started_from_the_shell(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    timing = ["--validating_s", "0.1", "--in_progress_s", "0.3", "--finalizing_s", "0.1"]
    server = subprocess.Popen(
        [sys.executable, "-m", "gpt_batch_api.simulator", "--port", str(port), "--demo_answers", *timing],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert "serving at" in (server.stdout.readline() if server.stdout else "")
        task_dir = tmp_path / "external"
        task_dir.mkdir()
        cmd = [sys.executable, "-m", "gpt_batch_api.task_manager_demo", "--task", "char_codes", "--task_dir",
               str(task_dir), "--no_progress", "--no_wandb", "--client_base_url", f"http://127.0.0.1:{port}/v1",
               "--openai_api_key", "sk-external", "--min_batch_requests", "1"]  # fmt: skip
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        check_char_codes(task_dir)
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=20) == 0


def test_simulate_runs_char_codes_end_to_end_without_a_key(tmp_path):
    proc = demo(tmp_path / "demo", "--task", "char_codes", "--simulate")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Task complete" in proc.stderr
    check_char_codes(tmp_path / "demo")


@pytest.mark.parametrize(
    ("mode", "flags"),
    [
        ("batch", ["--min_batch_requests", "20"]),
        ("direct", ["--force_direct"]),
        ("mixed", ["--min_batch_requests", "60", "--max_batch_requests", "100"]),
    ],
)
def test_char_codes_in_each_mode(tmp_path, sim, mode, flags):
    task_dir = tmp_path / mode
    proc = demo(task_dir, "--task", "char_codes", "--no_wandb", *flags, sim=sim)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_char_codes(task_dir)
    totals = json.loads((task_dir / "char_codes_state.json").read_text())["totals"]
    if mode == "batch":
        assert totals["pushed_batches"] >= 1
    elif mode == "direct":
        assert totals["pushed_batches"] == 0 and totals["direct_batches"] >= 1
    else:
        assert totals["pushed_batches"] >= 1 and totals["direct_batches"] >= 1


def test_utterance_emotion_votes_between_min_and_max_opinions(tmp_path, sim):
    task_dir = tmp_path / "utt"
    args = ["--task", "utterance_emotion", "--no_wandb", "--opinions_min", "2", "--opinions_max", "4"]
    proc = demo(task_dir, *args, "--min_batch_requests", "30", sim=sim)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (task_dir / "utterance_emotion_output.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(u["id"] for u in load_utterances())
    for record in records:
        assert 2 <= len(record["opinions"]) <= 4
        assert record["emotion"] == max(record["opinions"], key=record["opinions"].count)
        assert record["clear"] == (record["confidence"] >= 0.78)
        # The adviser stops early only with a clear majority, and asks up to the maximum otherwise.
        if not record["clear"]:
            assert len(record["opinions"]) == 4
        if len(record["opinions"]) == 2:
            assert record["clear"]
    assert any(len(r["opinions"]) > 2 for r in records), "the simulated opinions disagree sometimes"


def test_no_run_status_wipe_task_and_reinit_meta(tmp_path, sim):
    task_dir = tmp_path / "cc"
    proc = demo(task_dir, "--task", "char_codes", "--no_wandb", "--no_run", "--model", "gpt-4o", sim=sim)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "samples: 0 committed" in proc.stdout
    state = json.loads((task_dir / "char_codes_task.json").read_text())
    assert state["meta"]["model"] == "gpt-4o"
    # Meta is fixed after the first run ...
    demo(task_dir, "--task", "char_codes", "--no_wandb", "--no_run", "--model", "gpt-4.1", sim=sim)
    assert json.loads((task_dir / "char_codes_task.json").read_text())["meta"]["model"] == "gpt-4o"
    # ... unless --reinit_meta.
    proc = demo(
        task_dir, "--task", "char_codes", "--no_wandb", "--no_run", "--reinit_meta", "--model", "gpt-4.1", sim=sim
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((task_dir / "char_codes_task.json").read_text())["meta"]["model"] == "gpt-4.1"
    assert demo(task_dir, "--task", "char_codes", "--no_wandb", "--force_direct", sim=sim).returncode == 0
    check_char_codes(task_dir)
    proc = demo(task_dir, "--task", "char_codes", "--no_wandb", "--wipe_task", "--no_run", sim=sim)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = read_task_state(task_dir, "char_codes")
    assert state["succeeded_samples"] == {} and not (task_dir / "char_codes_output.json").exists()


def test_bad_flag_values_are_refused_with_the_flag_named(tmp_path, sim):
    proc = demo(
        tmp_path / "bad",
        "--task",
        "char_codes",
        "--no_wandb",
        "--max_batch_ktokens",
        "100",
        "--max_remote_ktokens",
        "50",
        sim=sim,
    )
    assert proc.returncode != 0
    assert "max_batch_ktokens" in proc.stderr
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").glob("*_task.json"))


EXIT_SCRIPT = """
import atexit, sys, threading, time
from gpt_batch_api.task_manager_demo import exit_now

class Teardown:
    def __del__(self):
        sys.stdout.write("teardown ran\\n")  # only when the interpreter frees its modules

keep = Teardown()
atexit.register(lambda: sys.stdout.write("exit handler ran\\n"))
if sys.argv[1] == "thread":
    threading.Thread(target=lambda: (time.sleep(0.3), sys.stdout.write("thread finished\\n"))).start()
if sys.argv[1] == "traced":  # e.g. coverage or cProfile, which write their results after the script
    sys.setprofile(lambda *args: None)
sys.stdout.write("buffered output\\n")  # a pipe: block-buffered, not written yet
try:
    exit_now(3)
except SystemExit:
    sys.stdout.write("usual exit\\n")
    raise
"""


@pytest.mark.parametrize("case", ["plain", "thread", "traced"])
def test_demo_exit_skips_the_teardown_but_not_the_exit_handlers_a_working_thread_or_a_profiler(case):
    proc = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, case], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "buffered output" in proc.stdout and "exit handler ran" in proc.stdout, proc.stdout
    if case == "plain":  # the 0.3 s of freeing the SDK's types is skipped
        assert "teardown ran" not in proc.stdout and "usual exit" not in proc.stdout
    elif case == "thread":  # a non-daemon thread still working: the usual exit waits for it
        assert "usual exit" in proc.stdout and "thread finished" in proc.stdout
    else:  # a profiler's results are written by the usual exit
        assert "usual exit" in proc.stdout
