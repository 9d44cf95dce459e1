"""A dry run is the engine given a store that keeps nothing and parts that send nothing (issue 14, item 5): on
a task with output, queued work and a batch in flight, ``--dryrun`` through the CLI changes no byte and no
mtime of any task file, sends the simulator no request at all, and still shows the plan."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gpt_batch_api.demo_tasks.responder import demo_responder
from gpt_batch_api.simulator import Simulator, SimulatorConfig
from gpt_batch_api.store.task_store import DryRunStore, TaskStore

REPO = Path(__file__).resolve().parents[1]
FLAGS = ["--max_batch_requests", "8", "--min_batch_requests", "1", "--max_remote_batches", "1",
         "--remote_update_interval", "0.2"]  # fmt: skip


def demo_cmd(task_dir: Path, base_url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "gpt_batch_api.task_manager_demo", "--task", "char_codes", "--task_dir",
            str(task_dir), "--max_samples", "30", "--no_progress", "--no_wandb", "--client_base_url", base_url,
            "--openai_api_key", "sk-dryrun-test", *FLAGS, *args]  # fmt: skip


def run_demo(task_dir: Path, base_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    return subprocess.run(demo_cmd(task_dir, base_url, *args), env=env, capture_output=True, text=True, timeout=120)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in files}


def requester_state(task_dir: Path) -> dict:
    return json.loads((task_dir / "char_codes_state.json").read_text())


def leave_a_batch_in_flight(task_dir: Path, sim: Simulator) -> None:
    """Run until the second batch is in flight (the first one answered and written to the output), then
    Ctrl+C: the task keeps its output, a remote batch in flight and local batches or queued requests."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    proc = subprocess.Popen(demo_cmd(task_dir, sim.base_url), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if sim.stats()["batches"]:  # the first batch's timing is fixed when it is created
                sim.config.in_progress_s = 3600.0  # the second batch stays in flight
                break
            time.sleep(0.02)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            answered = (task_dir / "char_codes_output.json").exists()
            if answered and any(b["status"] == "remote" for b in requester_state(task_dir)["batches"]):
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    state = requester_state(task_dir)
    statuses = [b["status"] for b in state["batches"]]
    assert "remote" in statuses, out[-3000:]
    assert "local" in statuses or state["queue"]["num_requests"], out[-3000:]  # work waiting to be pushed
    assert (task_dir / "char_codes_output.json").exists(), out[-3000:]  # the first batch was answered


def test_a_dry_run_through_the_cli_changes_no_file_and_calls_nothing(tmp_path):
    task_dir = tmp_path / "task"
    config = SimulatorConfig(validating_s=0.05, in_progress_s=0.3, finalizing_s=0.05)
    with Simulator(config, responder=demo_responder) as sim:
        leave_a_batch_in_flight(task_dir, sim)
        stray = task_dir / "char_codes_batch_000999.jsonl"  # as a crash before a commit leaves one
        stray.write_bytes(b'{"custom_id": "never committed"}\n')
        before, calls = snapshot(task_dir), sim.stats()["requests"]
        time.sleep(0.05)  # a rewrite within the mtime's resolution would not show in it
        proc = run_demo(task_dir, sim.base_url, "--dryrun", "--max_remote_batches", "2")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert snapshot(task_dir) == before  # every byte and mtime; no file added or removed
        assert sim.stats()["requests"] == calls  # no poll, push, download or cleanup: not one request
        assert "Dry run: would push batch" in proc.stderr, proc.stderr[-3000:]  # the plan is still shown
        assert "Dry run: stopping here" in proc.stderr
        assert "a real run would remove char_codes_batch_000999.jsonl" in proc.stderr  # not "Removing ..."
        assert "Removing" not in proc.stderr

        fresh = tmp_path / "fresh"  # a dry run on a task that does not exist yet creates nothing either
        proc = run_demo(fresh, sim.base_url, "--dryrun")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "Dry run: would make" in proc.stderr and not fresh.exists()
        assert sim.stats()["requests"] == calls


def test_the_dry_run_store_reads_real_files_and_keeps_what_it_is_given_in_memory(tmp_path):
    queue = tmp_path / "t_queue_0001.jsonl"
    queue.write_bytes(b'{"a":1}\n{"a":2}\n')
    store = DryRunStore()
    appender = store.appender(queue, committed_size=8)  # the second line: written after the last commit
    assert appender.append_raw(b'{"a":3}\n') == 8
    assert appender.flush() == 16
    assert [line for _, line in store.read_raw_lines(queue, 0, 16)] == [b'{"a":1}\n', b'{"a":3}\n']
    assert [offset for offset, _ in store.read_raw_lines(queue, 8, 16)] == [8]
    new = tmp_path / "t_queue_0002.jsonl"
    store.appender(new, 0).append_raw(b"x\n")
    store.write_new(tmp_path / "t_batch_0001.jsonl", b"{}\n")
    store.remove_stray(queue, "a test")
    with store.transaction(tmp_path / "t_journal.json") as txn:
        txn.write_json(tmp_path / "t_state.json", {"a": 1})
        txn.delete(queue)
    assert store.lock(tmp_path / "t.lock", lambda: False) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t_queue_0001.jsonl"]
    assert queue.read_bytes() == b'{"a":1}\n{"a":2}\n'
    # The same calls on the real store change the folder (the test above would catch a dry run using it).
    real = TaskStore()
    real.appender(new, 0).close()
    with real.transaction(tmp_path / "t_journal.json") as txn:
        txn.write_json(tmp_path / "t_state.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t_queue_0001.jsonl", "t_queue_0002.jsonl", "t_state.json"]
