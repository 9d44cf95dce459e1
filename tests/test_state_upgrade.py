"""A task started by the version before the provider seam (requester state version 1, OpenAI's field names)
finishes after it: the committed fixture holds a task directory killed (SIGKILL) right after its first batch
was pushed, with the simulator's own state, so the remote batch is still there when the test runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from gpt_batch_api.requester_state import STATE_VERSION, load_state

FIXTURE = Path(__file__).parent / "fixtures" / "state_v1_batch_in_flight"
REPO = Path(__file__).resolve().parents[1]


def test_the_fixture_is_a_version_1_state_with_a_batch_in_flight():
    data = json.loads((FIXTURE / "utterance_emotion_state.json").read_text())
    assert data["version"] == 1
    remote = [b for b in data["batches"] if b["status"] == "remote"]
    assert len(remote) == 1 and remote[0]["remote"]["file_id"] and remote[0]["remote"]["batch_id"]


def test_version_1_remote_info_becomes_backend_neutral(tmp_path):
    data = json.loads((FIXTURE / "utterance_emotion_state.json").read_text())
    data["batches"][0]["remote"].update(
        status="failed",
        errors=[{"code": "token_limit_exceeded", "message": "Enqueued token limit reached", "line": None}],
    )
    data["remote_cleanup"] = ["file-old"]
    path = tmp_path / "x_state.json"
    path.write_text(json.dumps(data))
    state = load_state(path)
    assert state.version == STATE_VERSION == 3
    assert all(b.input_crc is None and b.info_crc is None for b in state.batches)  # their files: counts only
    remote = state.batches[0].remote
    old = json.loads((FIXTURE / "utterance_emotion_state.json").read_text())["batches"][0]["remote"]
    assert remote.backend == "openai" and remote.batch_id == old["batch_id"]
    assert remote.handles == {"input_file_id": old["file_id"]}
    assert remote.status == "failed" and remote.provider_status == "failed" and remote.congested
    assert remote.errors == ["token_limit_exceeded: Enqueued token limit reached"]
    assert state.batches[1].remote.backend is None  # local batches have no remote side
    assert [c.handles for c in state.remote_cleanup] == [{"file": "file-old"}]


def test_a_task_killed_with_a_batch_in_flight_by_the_old_version_finishes(tmp_path):
    task_dir = tmp_path / "task"
    shutil.copytree(FIXTURE, task_dir)
    args = ["--task", "utterance_emotion", "--task_dir", str(task_dir), "--max_samples", "12",
            "--max_batch_requests", "4", "--min_batch_requests", "1", "--max_remote_batches", "1", "--simulate",
            "--no_progress", "--no_wandb"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-m", "gpt_batch_api.task_manager_demo", *args], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Task complete: 12 samples succeeded, 0 failed" in proc.stderr, proc.stderr[-3000:]
    state = json.loads((task_dir / "utterance_emotion_state.json").read_text())
    assert state["version"] == STATE_VERSION and not state["batches"]
    # The batch in flight was polled and downloaded, not pushed again: one remote batch per local batch.
    simulator = json.loads((task_dir / "utterance_emotion_simulator.json").read_text())
    tags = Counter(b["metadata"]["gpt_batch_api_batch"] for b in simulator["batches"])
    assert tags and max(tags.values()) == 1, tags
    assert len(tags) == state["next_batch_id"] - 1
    output = [json.loads(line) for p in sorted(task_dir.glob("utterance_emotion_output*.jsonl")) for line in open(p)]
    assert len(output) == 12 and len({o["id"] for o in output}) == 12
