"""Secrets besides the API key, and file modes.

A base URL may carry a password or a token (``http://user:PASSWORD@host/v1?api-key=TOKEN``): no message,
log line or wandb config shows them. Every task file is created with the same mode, the one the umask
gives (``mkstemp`` alone would make the state files 0600 and the appended files 0644).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gpt_batch_api.redact import redact
from gpt_batch_api.simulator import Simulator, SimulatorConfig

from ..support.helpers import FAST_BATCHES, REPO

PASSWORD, TOKEN = "PASSWORDxyz123", "TOKENabc987"


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("at http://user:PASSWORDxyz123@host:8/v1 (x)", "at http://***@host:8/v1 (x)"),
        ("https://k@h/v1?api-key=TOKENabc987&x=1", "https://***@h/v1?api-key=***&x=1"),
        ("GET https://h/v1/files?token=TOKENabc987", "GET https://h/v1/files?token=***"),
        ("http://h/v1?model=gpt&page=2", "http://h/v1?model=gpt&page=2"),
    ],
)
def test_redact(text, clean):
    assert redact(text) == clean


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("mode", ["batch", "direct"])
def test_url_credentials_appear_in_no_message(tmp_path, mode):
    url = f"http://user:{PASSWORD}@127.0.0.1:{closed_port()}/v1?api-key={TOKEN}"
    cmd = [sys.executable, "-m", "gpt_batch_api.task_manager_demo", "--task", "char_codes", "--no_wandb"]
    cmd += ["--task_dir", str(tmp_path), "--client_base_url", url, "--openai_api_key", "sk-x", "--no_progress"]
    cmd += ["--max_session_requests", "5"]
    cmd += ["--force_direct"] if mode == "direct" else ["--min_batch_requests", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out[-3000:]
    if mode == "batch":  # (direct calls: aiohttp refuses a URL with credentials before any connection)
        assert "cannot reach the API server at http://***@127.0.0.1" in out, out[-3000:]
    assert PASSWORD not in out and TOKEN not in out, out[-3000:]
    assert not [
        p for p in tmp_path.iterdir() if PASSWORD.encode() in p.read_bytes() or TOKEN.encode() in p.read_bytes()
    ]


def test_wandb_config_has_no_url_credentials(tmp_path):
    from ..support.numbers_task import NumbersTask

    url = f"http://user:{PASSWORD}@127.0.0.1:1/v1?api-key={TOKEN}"
    task = NumbersTask(str(tmp_path), 1, client_base_url=url, openai_api_key="sk-x", wandb=False, progress=False)
    config = json.dumps(task._public_config())
    assert PASSWORD not in config and TOKEN not in config and "127.0.0.1:1" in config


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_task_files_have_one_mode_from_the_umask(tmp_path, umask):
    with Simulator(SimulatorConfig(**FAST_BATCHES)) as sim:
        cmd = [sys.executable, "-m", "tests.support.numbers_task", "--task_dir", str(tmp_path), "--num", "30"]
        cmd += [
            "--base_url",
            sim.base_url,
            "--options",
            json.dumps({"min_batch_requests": 1, "max_direct_requests": 10}),
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
        proc = subprocess.run(
            cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.umask(umask)
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in Path(tmp_path).iterdir() if p.is_file()}
    assert {"numbers_state.json", "numbers_task.json", "numbers_output.jsonl"} <= set(modes)
    assert set(modes.values()) == {0o666 & ~umask}, modes
