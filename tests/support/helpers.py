"""Shared helpers for engine tests: a simulator on 127.0.0.1 and readers of task files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from gpt_batch_api.output_files import DataclassListOutputFile
from gpt_batch_api.task_state import load_task_state

from .numbers_task import NumberRecord

REPO = Path(__file__).resolve().parents[2]

FAST_BATCHES = {"validating_s": 0.05, "in_progress_s": 0.15, "finalizing_s": 0.05}


def read_records(task_dir: Path, prefix: str = "numbers") -> list[NumberRecord]:
    return list(DataclassListOutputFile.read_entries(str(task_dir / f"{prefix}_output"), NumberRecord))


def read_task_state(task_dir: Path, prefix: str = "numbers") -> dict[str, Any]:
    """The whole task state as one document (head file and log), read without changing any file."""
    return load_task_state(task_dir / f"{prefix}_task.json").to_json()


def run_numbers_subprocess(
    task_dir: Path,
    base_url: str,
    num: int,
    options: dict[str, Any],
    *,
    env: dict[str, str] | None = None,
    **task_args: Any,
) -> subprocess.Popen:
    """Start the numbers task in a real subprocess (output captured in ``proc.stdout``)."""
    cmd = [sys.executable, "-m", "tests.support.numbers_task", "--task_dir", str(task_dir), "--base_url", base_url]
    cmd += ["--num", str(num), "--options", json.dumps(options)]
    for key, value in task_args.items():
        cmd += [f"--{key}", str(value)]
    full_env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def assert_complete(task_dir: Path, num: int, prefix: str = "numbers") -> list[NumberRecord]:
    """Every sample has exactly one output record, and the task state agrees with the output."""
    records = read_records(task_dir, prefix)
    samples = [r.sample for r in records]
    assert len(samples) == len(set(samples)), "a sample was written twice"
    assert sorted(samples) == [f"s{i:06d}" for i in range(num)], "samples are missing"
    state = read_task_state(task_dir, prefix)
    ok = {r.sample for r in records if r.error is None}
    assert set(state["succeeded_samples"]) == ok
    assert set(state["failed_samples"]) == {r.sample for r in records if r.error is not None}
    return records
