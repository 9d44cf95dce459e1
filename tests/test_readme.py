"""Every command in the README works as written (against the simulator, never a real endpoint)."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpt_batch_api.demo_tasks.responder import demo_responder
from gpt_batch_api.simulator import Simulator, SimulatorConfig

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def code_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


@pytest.fixture(scope="module")
def sim():
    config = SimulatorConfig(validating_s=0.05, in_progress_s=0.2, finalizing_s=0.05)
    with Simulator(config, responder=demo_responder) as simulator:
        yield simulator


def env_for(sim: Simulator) -> dict[str, str]:
    # The README's commands talk to OpenAI by default; here the SDK's own variables point them at the simulator.
    return {
        **os.environ,
        "OPENAI_BASE_URL": sim.base_url,
        "OPENAI_API_KEY": "sk-readme-test",
        "WANDB_MODE": "disabled",
        "PYTHONPATH": str(REPO),
    }


def test_quick_start_has_exactly_two_commands_and_ci_runs_the_test_command():
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", quick, re.S)
    assert len(blocks) == 2 and all(len(b.strip().splitlines()) == 1 for b in blocks)
    install, test = (b.strip() for b in blocks)
    assert 'pip install -e ".[dev]"' in install and "--simulate" in install
    assert test in (REPO / ".ci" / "run").read_text()


def test_quick_start_demo_command_runs(tmp_path):
    install = code_blocks("bash")[0].strip()
    demo = install.split("&&")[-1].strip()
    args = shlex.split(demo)
    args[args.index("--task_dir") + 1] = str(tmp_path / "demo")
    assert args[:3] == ["python", "-m", "gpt_batch_api.task_manager_demo"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, *args[1:]], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "demo" / "char_codes_output.json").exists()


def test_custom_task_from_the_guide_runs(tmp_path, sim):
    python_blocks = [b for b in code_blocks("python") if "class CapitalsTask" in b]
    assert len(python_blocks) == 1
    script = tmp_path / "capitals.py"
    script.write_text(python_blocks[0])
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env_for(sim), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (tmp_path / "capitals_dir" / "capitals_output.jsonl").read_text().splitlines()
    assert sorted(line.split('"country":"')[1].split('"')[0] for line in lines) == ["France", "Japan", "Peru"]


def test_safe_steps_run_in_order(tmp_path, sim):
    section = README.split("## Safe steps", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"`(python ARGS[^`]*)`", section)
    assert len(commands) >= 8
    args_value = f"-m gpt_batch_api.task_manager_demo --task char_codes --task_dir {tmp_path / 'task'} --no_progress"
    for command in commands:
        command = re.sub(r"\bN\b", "80", re.sub(r"\bR\b", "0.6", command))  # step 6's placeholders
        argv = shlex.split(command.replace("ARGS", args_value).replace("MY_RUN", "readme-test"))
        argv[0] = sys.executable
        proc = subprocess.run(argv, env=env_for(sim), capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"
    state = (tmp_path / "task" / "char_codes_task.json").read_text()
    assert '"max_completion_tokens": 80' in state
    assert (tmp_path / "task" / "char_codes_output.json").exists()


def test_local_server_guide_runs_against_the_simulator_configured_like_a_local_server(tmp_path):
    """The guide's simulator command (no Batch API, no rate-limit headers, latency rising with load, 503 beyond
    8 calls) and its demo command, with the values the guide says to fill in, complete the demo."""
    section = README.split("## Local and other servers", 1)[1].split("\n## ", 1)[0]
    demo, server = (b.strip() for b in re.findall(r"```bash\n(.*?)```", section, re.S))
    server_args = shlex.split(server)
    assert server_args[:3] == ["python", "-m", "gpt_batch_api.simulator"]
    port = server_args[server_args.index("--port") + 1]
    sim = subprocess.Popen([sys.executable, *server_args[1:]], env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        base_url = f"http://127.0.0.1:{port}/v1"
        filled = demo.replace("BASE_URL", base_url).replace("MODEL", "gpt-4o-mini").replace(" N ", " 16 ")
        args = shlex.split(filled.replace("local_run", str(tmp_path / "local_run")))
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", int(port)), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the simulator did not start"
                time.sleep(0.1)
        env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
        env.pop("OPENAI_API_KEY", None)
        proc = subprocess.run([sys.executable, *args[1:]], env=env, capture_output=True, text=True, timeout=300)
    finally:
        sim.terminate()
        sim.wait(timeout=10)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Task complete" in proc.stderr + proc.stdout, proc.stderr[-3000:]
    assert "cost 0.0000" in proc.stderr + proc.stdout  # zero prices: nothing is counted as spent
