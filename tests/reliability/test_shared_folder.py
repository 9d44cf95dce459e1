"""Tasks sharing a folder never touch each other's files, and prefixes that are paths are refused.

A task recognises a file as its own only if the whole name is its prefix, then a separator and a known
pattern: prefix ``run`` must not take ``run_batch``'s queue or task log for its own leftovers, ``run[1]`` is
no glob matching ``run1``, and a task start removes only its own stale temp files, never the staged files
of another task that is committing right now.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gpt_batch_api.errors import ConfigError
from gpt_batch_api.simulator import Simulator, SimulatorConfig

from ..support.helpers import FAST_BATCHES, assert_complete, run_numbers_subprocess
from ..support.numbers_task import NumbersTask
from . import double_pushed, wait_until_running

OPTIONS = {"min_batch_requests": 1, "max_batch_requests": 15, "remote_update_interval": 0.2}


@pytest.mark.parametrize(("first", "second"), [("run_batch", "run"), ("run1", "run[1]"), ("a_task", "a")])
def test_two_tasks_with_overlapping_prefixes_run_at_once(tmp_path, first, second):
    config = SimulatorConfig(validating_s=0.1, in_progress_s=0.6, finalizing_s=0.1)
    with Simulator(config) as sim:
        procs = [run_numbers_subprocess(tmp_path, sim.base_url, 60, OPTIONS, prefix=first, chunk=15)]
        assert wait_until_running(tmp_path, first, procs[0])
        time.sleep(0.4)  # the first task has queue and batch files on disk, and a batch in flight
        procs.append(run_numbers_subprocess(tmp_path, sim.base_url, 45, OPTIONS, prefix=second, chunk=15))
        outs = [proc.communicate(timeout=120)[0] for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0], outs
        assert double_pushed(sim) == 0
    for out in outs:
        assert "never committed" not in out and "an output file written after the last commit" not in out, out
    assert_complete(tmp_path, 60, first)
    assert_complete(tmp_path, 45, second)


def test_a_task_start_removes_only_its_own_temp_files(tmp_path):
    foreign = [
        tmp_path / "run_batch_state.json.tmp-abc123",
        tmp_path / "run1_task.json.tmp-x",
        tmp_path / "other.tmp-1",
    ]
    own = [tmp_path / "run_state.json.tmp-dead01", tmp_path / "run_task_log_0002.jsonl.tmp-dead02"]
    for path in foreign + own:
        path.write_bytes(b"staged")
    with Simulator(SimulatorConfig(**FAST_BATCHES)) as sim:
        task = NumbersTask(
            str(tmp_path), 5, prefix="run", wandb=False, progress=False, client_base_url=sim.base_url,
            openai_api_key="sk-test", force_direct=True,
        )  # fmt: skip
        assert task.run() is True
    assert all(path.exists() for path in foreign), "another task's staged file was deleted"
    assert not any(path.exists() for path in own), "this task's own stale temp files were kept"
    assert_complete(tmp_path, 5, "run")


@pytest.mark.parametrize("prefix", ["../escape", "sub/task", "a/../b", "..", "", ".hidden", "x\\y"])
def test_a_prefix_that_is_a_path_is_refused(tmp_path, prefix):
    with pytest.raises(ConfigError, match="not a plain file name prefix"):
        NumbersTask(str(tmp_path / "d"), 5, prefix=prefix, wandb=False, progress=False, openai_api_key="sk-test")
    assert not (tmp_path / "d").exists() and [p.name for p in tmp_path.iterdir()] == []


def test_demo_refuses_a_path_prefix_without_traceback(tmp_path):
    import subprocess
    import sys

    from ..support.helpers import REPO

    cmd = [sys.executable, "-m", "gpt_batch_api.task_manager_demo", "--task", "char_codes", "--simulate"]
    cmd += ["--no_wandb", "--task_dir", str(tmp_path), "--task_prefix", "../x"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "--task_dir" in proc.stderr, proc.stderr
    assert not Path(tmp_path.parent / "x_task.json").exists()
