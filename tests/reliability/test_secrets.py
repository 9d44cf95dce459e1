"""The API key never reaches a file, a log line or wandb: the demo CLI run as a user runs it.

A recognisable fake key is given on the command line (and, in a second run, in ``OPENAI_API_KEY``), with
wandb logging offline and direct calls logged verbosely. Afterwards no file under the task dir or the
wandb dir, and nothing the process printed, contains the key. A run with a wrong key stops with a clear
message that shows at most the key's first and last characters, as OpenAI does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpt_batch_api.simulator import Simulator, SimulatorConfig

from ..support.helpers import FAST_BATCHES, REPO
from . import Ledger

KEY = "sk-proj-FAKEKEYfor-secrets-test-0123456789abcdefXYZ"


def run_demo(
    task_dir: Path, wandb_dir: Path, base_url: str, *flags: str, env_key: str | None = None
) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "WANDB_DIR": str(wandb_dir)}
    env.pop("OPENAI_API_KEY", None)
    if env_key is not None:
        env["OPENAI_API_KEY"] = env_key
    cmd = [sys.executable, "-m", "gpt_batch_api.task_manager_demo", "--task", "char_codes"]
    cmd += ["--task_dir", str(task_dir), "--client_base_url", base_url, "--wandb", "--wandb_dir", str(wandb_dir)]
    cmd += ["--direct_verbose", "always", "--max_direct_requests", "20", *flags]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def files_with(secret: str, *folders: Path) -> list[str]:
    return [
        str(path)
        for folder in folders
        for path in folder.rglob("*")
        if path.is_file() and secret.encode() in path.read_bytes()
    ]


@pytest.mark.parametrize("where", ["flag", "env"])
def test_the_key_is_in_no_file_log_or_wandb_run(tmp_path: Path, where: str) -> None:
    task_dir, wandb_dir = tmp_path / "task", tmp_path / "wandb"
    wandb_dir.mkdir()
    flags = ("--openai_api_key", KEY) if where == "flag" else ()
    with Simulator(SimulatorConfig(**FAST_BATCHES, require_api_key=KEY), responder=Ledger()) as sim:
        code, output = run_demo(task_dir, wandb_dir, sim.base_url, *flags, env_key=KEY if where == "env" else None)
    assert code == 0, output[-3000:]
    assert list(wandb_dir.rglob("*.wandb")), "wandb wrote no offline run: the check below would prove nothing"
    assert (task_dir / "char_codes_output.json").exists()
    assert KEY not in output
    assert not files_with(KEY, task_dir, wandb_dir)


def test_a_wrong_key_is_refused_clearly_and_not_echoed(tmp_path: Path) -> None:
    task_dir, wandb_dir = tmp_path / "task", tmp_path / "wandb"
    wandb_dir.mkdir()
    with Simulator(SimulatorConfig(**FAST_BATCHES, require_api_key="sk-the-right-one-000000000000")) as sim:
        code, output = run_demo(task_dir, wandb_dir, sim.base_url, "--openai_api_key", KEY)
    assert code != 0
    assert "API key" in output and "Traceback" not in output, output[-3000:]
    assert KEY not in output and KEY[6:-4] not in output
    assert not files_with(KEY, task_dir, wandb_dir)


ANTHROPIC_KEY = "sk-ant-api03-FAKEKEYfor-secrets-test-0123456789abcdefXYZ"


@pytest.mark.parametrize("where", ["flag", "env"])
def test_the_anthropic_key_is_in_no_file_log_or_wandb_run(
    tmp_path: Path, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--provider anthropic: the key given as --anthropic_api_key or ANTHROPIC_API_KEY (checked by the
    simulator on every Message Batches call) is in no file, log line or wandb run."""
    task_dir, wandb_dir = tmp_path / "task", tmp_path / "wandb"
    wandb_dir.mkdir()
    flags = ["--provider", "anthropic", "--min_batch_requests", "1", "--max_samples", "60"]
    if where == "flag":
        flags += ["--anthropic_api_key", ANTHROPIC_KEY]
    else:
        monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)  # run_demo passes os.environ on
    with Simulator(SimulatorConfig(**FAST_BATCHES, require_api_key=ANTHROPIC_KEY), responder=Ledger()) as sim:
        code, output = run_demo(task_dir, wandb_dir, sim.base_url, *flags)
    assert code == 0, output[-3000:]
    assert list(wandb_dir.rglob("*.wandb")), "wandb wrote no offline run: the check below would prove nothing"
    assert "Pushed batch 1 as msgbatch_" in output
    assert ANTHROPIC_KEY not in output
    assert not files_with(ANTHROPIC_KEY, task_dir, wandb_dir)
