"""Every command in the README works as written and does what the README says (against the simulator, never a
real endpoint): the quick start, Ctrl+C and rerun, the example task, and each safe step with its visible effect."""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpt_batch_api import load_task_state
from gpt_batch_api.demo_tasks.char_codes import CHARACTERS
from gpt_batch_api.demo_tasks.responder import demo_responder
from gpt_batch_api.simulator import Simulator, SimulatorConfig

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def code_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


def quick_start_commands() -> tuple[str, str]:
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", quick, re.S)
    assert len(blocks) == 2 and all(len(b.strip().splitlines()) == 1 for b in blocks)
    install, test = (b.strip() for b in blocks)
    return install, test


@pytest.fixture(scope="module")
def sim():
    config = SimulatorConfig(validating_s=0.05, in_progress_s=0.2, finalizing_s=0.05)
    with Simulator(config, responder=demo_responder) as simulator:
        yield simulator


def env_for(sim: Simulator, key: str | None = None) -> dict[str, str]:
    # The README's commands talk to OpenAI by default; the SDK's own variable points them at the simulator,
    # which (on 127.0.0.1) needs no key.
    env = {**os.environ, "OPENAI_BASE_URL": sim.base_url, "PYTHONPATH": str(REPO)}
    env.pop("OPENAI_API_KEY", None)
    if key is not None:
        env["OPENAI_API_KEY"] = key
    return env


def test_ci_runs_the_readme_install_and_test_commands_exactly():
    install, test = quick_start_commands()
    assert 'pip install -e ".[dev]"' in install and "--simulate" in install
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert test in ci  # the whole line, with no extra flags
    assert not any(line.startswith("export") for line in ci), "the README's test command needs no environment"


def demo_argv(task_dir: Path) -> list[str]:
    demo = quick_start_commands()[0].split("&&")[-1].strip()
    args = shlex.split(demo)
    assert args[:3] == ["python", "-m", "gpt_batch_api.task_manager_demo"]
    args[args.index("--task_dir") + 1] = str(task_dir)
    return [sys.executable, *args[1:]]


def check_demo_output(task_dir: Path) -> None:
    chars = json.loads((task_dir / "char_codes_output.json").read_text())["chars"]
    assert len(CHARACTERS) == 1140 and sorted(chars) == sorted(CHARACTERS)
    assert all(info["code_point"] == f"U+{ord(char):04X}" for char, info in chars.items())


def test_quick_start_demo_command_runs(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(demo_argv(tmp_path / "demo"), env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Task complete: 1140 samples succeeded, 0 failed" in proc.stderr
    check_demo_output(tmp_path / "demo")


def test_quick_start_demo_survives_ctrl_c_at_random_moments(tmp_path):
    """README: "Interrupt it with Ctrl+C at any moment and run the same command again: it continues where it
    stopped." The rerun finds the batches the interrupted run pushed, so no request is pushed twice."""
    task_dir, rng = tmp_path / "demo", random.Random(17)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    interrupted = 0
    for _ in range(4):
        proc = subprocess.Popen(demo_argv(task_dir), env=env, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not (task_dir / "char_codes.lock").exists() and time.monotonic() < deadline:  # started
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 3.0))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode in (0, 130), err[-3000:]
        assert "Traceback" not in err and "is gone from the server" not in err, err[-3000:]
        interrupted += proc.returncode == 130
    proc = subprocess.run(demo_argv(task_dir), env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Task complete: 1140 samples succeeded, 0 failed" in proc.stderr
    assert interrupted >= 2
    check_demo_output(task_dir)
    remote = json.loads((task_dir / "char_codes_simulator.json").read_text())
    pushed_ids = [custom_id for batch in remote["batches"] for custom_id, _ in batch["requests"]]
    assert len(pushed_ids) == len(set(pushed_ids)), "a request was pushed twice"
    totals = json.loads((task_dir / "char_codes_state.json").read_text())["totals"]
    assert totals["pushed_requests"] == totals["processed_requests"] == 1140 + totals["retried"]
    assert "MissingResult" not in totals["errors_by_type"]


def test_ctrl_c_after_the_task_completed_ends_the_demo_without_a_traceback(tmp_path):
    """A Ctrl+C that lands after the run is over (while the simulator stops, or during the exit) is ignored:
    it used to raise KeyboardInterrupt in the shutdown and print a traceback."""
    task_dir, env = tmp_path / "demo", {**os.environ, "PYTHONPATH": str(REPO)}
    assert subprocess.run(demo_argv(task_dir), env=env, capture_output=True, timeout=180).returncode == 0
    for delay in (0.0, 0.05, 0.2):
        proc = subprocess.Popen(demo_argv(task_dir), env=env, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "Files are in" in line:  # main() logs it after the run: the simulator stops next
                time.sleep(delay)
                proc.send_signal(signal.SIGINT)
                break
        lines += proc.stderr.readlines()
        proc.wait(timeout=60)
        err = "".join(lines)
        assert proc.returncode == 0, err[-3000:]
        assert "Traceback" not in err, err[-3000:]


def readme_example(tmp_path: Path) -> Path:
    python_blocks = [b for b in code_blocks("python") if "class CapitalsTask" in b]
    assert len(python_blocks) == 1
    script = tmp_path / "capitals.py"
    script.write_text(python_blocks[0])
    return script


def test_custom_task_from_the_guide_runs_on_a_local_server_without_a_key(tmp_path, sim):
    script = readme_example(tmp_path)
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env_for(sim), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Task complete: 3 samples succeeded, 0 failed" in proc.stderr  # the example's logging shows it
    lines = (tmp_path / "capitals_dir" / "capitals_output.jsonl").read_text().splitlines()
    assert sorted(line.split('"country":"')[1].split('"')[0] for line in lines) == ["France", "Japan", "Peru"]


def test_custom_task_from_the_guide_ends_on_ctrl_c_with_130_and_no_traceback(tmp_path):
    script = readme_example(tmp_path)
    with Simulator(SimulatorConfig(latency_ms=4000)) as slow:  # every direct call is in flight for 4 s
        proc = subprocess.Popen(
            [sys.executable, str(script)], cwd=tmp_path, env=env_for(slow), stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 30
        while slow.direct_requests < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "Stopped" in err, err


def run_step(command: str, args_value: str, sim: Simulator) -> subprocess.CompletedProcess:
    argv = shlex.split(command.replace("ARGS", args_value).replace("MY_RUN", "readme-test"))
    argv[0] = sys.executable
    proc = subprocess.run(argv, env=env_for(sim), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr
    return proc


def dry_run_cost(args_value: str, sim: Simulator) -> float:
    proc = run_step("python ARGS --no_wandb --dryrun", args_value, sim)
    return float(re.search(r"would make .* predicted cost ([0-9.]+)", proc.stderr).group(1))


def test_safe_steps_do_what_they_say_in_order(tmp_path, sim):
    section = README.split("## Safe steps", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"`(python ARGS[^`]*)`", section)
    assert len(commands) == 9  # eight steps and the status command
    task_dir = tmp_path / "task"
    args_value = f"-m gpt_batch_api.task_manager_demo --task char_codes --task_dir {task_dir} --no_progress"

    def state(name: str) -> dict:
        return json.loads((task_dir / f"char_codes_{name}.json").read_text())

    help_text = run_step(commands[0], args_value, sim).stdout  # 1. every option
    assert "--reinit_meta" in help_text and "--max_session_requests" in help_text
    proc = run_step(commands[1], args_value, sim)  # 2. the task and its meta, without running
    assert "meta: model='gpt-4o-mini'" in proc.stdout and state("task")["meta"]["completion_ratio"] == 0.5
    files = sorted(p.name for p in task_dir.iterdir())
    proc = run_step(commands[2], args_value, sim)  # 3. a dry run writes nothing
    assert "Dry run: would make" in proc.stderr and sorted(p.name for p in task_dir.iterdir()) == files
    proc = run_step(commands[3], args_value, sim)  # 4. ten verbose direct requests
    assert proc.stderr.count("Response: ") == 10 and state("state")["totals"]["pushed_requests"] == 10
    assert not state("state")["batches"]  # nothing cut ahead beyond the session's 10 (it would go direct later)
    proc = run_step(commands[4], args_value, sim)  # 5. one batch of 250
    totals = state("state")["totals"]
    assert totals["pushed_batches"] == 1 and totals["pushed_requests"] == 260
    match = re.search(r"a completion ratio of ([0-9.]+) fits this batch", proc.stderr)
    assert match, proc.stderr  # the advice step 6 follows
    ratio = match.group(1)
    before = dry_run_cost(args_value, sim)
    step6 = re.sub(r"\bR\b", ratio, re.sub(r"\bN\b", "80", commands[5]))
    proc = run_step(step6, args_value, sim)  # 6. the new meta, with the unsent requests made again
    assert f"completion_ratio {0.5!r} -> {float(ratio)!r}" in proc.stderr
    assert state("task")["meta"]["max_completion_tokens"] == 80
    assert dry_run_cost(args_value, sim) < before  # the predictions follow the meta
    proc = run_step(commands[6], args_value, sim)  # 7. from scratch, the spending still counted
    assert "Kept on purpose" in proc.stderr and not load_task_state(task_dir / "char_codes_task.json").succeeded_samples
    assert state("task")["meta"]["max_completion_tokens"] == 80
    proc = run_step(commands[7], args_value, sim)  # 8. the full run
    assert "Task complete: 1140 samples succeeded" in proc.stderr
    check_demo_output(task_dir)
    proc = run_step(commands[8], args_value, sim)  # the status at any time
    assert "samples: 1140 committed" in proc.stdout and "meta: " in proc.stdout


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


def test_a_base_url_without_v1_stops_with_the_cause_and_the_fixed_url_completes(tmp_path, sim):
    """README (local servers): the same 404 on every request stops the run, names the cause, fails no sample."""
    task_dir = tmp_path / "task"
    base = ["-m", "gpt_batch_api.task_manager_demo", "--task", "utterance_emotion", "--task_dir", str(task_dir),
            "--no_progress", "--no_wandb", "--force_direct"]  # fmt: skip
    env = {k: v for k, v in env_for(sim).items() if k != "OPENAI_BASE_URL"}
    wrong = sim.base_url.removesuffix("/v1")
    proc = subprocess.run([sys.executable, *base, "--client_base_url", wrong], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 1 and "does it end in /v1?" in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not load_task_state(task_dir / "utterance_emotion_task.json").failed_samples
    proc = subprocess.run([sys.executable, *base, "--client_base_url", sim.base_url], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0 and "Task complete: 45 samples succeeded" in proc.stderr, proc.stderr[-3000:]


def test_claude_section_rehearsal_runs_on_the_simulator_without_a_key(tmp_path):
    """README (Claude jobs): the rehearsal command completes on the simulator's Anthropic routes."""
    section = README.split("## Claude jobs (Anthropic)", 1)[1].split("\n## ", 1)[0]
    (command,) = (b.strip() for b in re.findall(r"```bash\n(.*?)```", section, re.S))
    args = shlex.split(command.replace("claude_run", str(tmp_path / "claude_run")))
    assert args[:3] == ["python", "-m", "gpt_batch_api.task_manager_demo"] and "--provider" in args
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")}
    env.update(PYTHONPATH=str(REPO), WANDB_MODE="disabled")
    proc = subprocess.run([sys.executable, *args[1:], "--no_progress"], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Task complete: 45 samples succeeded, 0 failed" in proc.stderr, proc.stderr[-3000:]
