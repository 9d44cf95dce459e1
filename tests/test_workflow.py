"""The user's workflow through the demo CLI, as a newcomer meets it: meta flags, the completion-ratio advice,
bad task folders, a local server without a key, and the messages met on the way (issue 17)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gpt_batch_api.demo_tasks.responder import demo_responder
from gpt_batch_api.simulator import Simulator, SimulatorConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sim():
    config = SimulatorConfig(validating_s=0.05, in_progress_s=0.2, finalizing_s=0.05)
    with Simulator(config, responder=demo_responder) as simulator:
        yield simulator


def demo(task_dir: Path, *args: str, base_url: str | None = None, key: str | None = "sk-workflow-test"):
    cmd = [sys.executable, "-m", "gpt_batch_api.task_manager_demo", "--task", "char_codes", "--task_dir",
           str(task_dir), "--no_progress", "--no_wandb", *args]  # fmt: skip
    if base_url is not None:
        cmd += ["--client_base_url", base_url]
    if key is not None:
        cmd += ["--openai_api_key", key]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def assert_one_clear_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1, proc.stderr
    for word in words:
        assert word in errors[0], errors[0]
    assert ".." not in errors[0], errors[0]
    return errors[0]


def test_meta_flags_on_an_existing_task_are_reported_and_the_status_shows_the_meta(tmp_path, sim):
    task_dir = tmp_path / "task"
    assert demo(task_dir, "--no_run", "--temperature", "0.4", base_url=sim.base_url).returncode == 0
    proc = demo(task_dir, "--no_run", "--model", "gpt-4.1", "--temperature", "0.9", base_url=sim.base_url)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "Ignored" in line]
    assert len(warnings) == 1 and "--reinit_meta" in warnings[0], proc.stderr
    assert "model='gpt-4.1'" in warnings[0] and "temperature=0.9" in warnings[0]
    assert "meta: model='gpt-4o-mini'" in proc.stdout and "temperature=0.4" in proc.stdout
    # A rerun without meta flags keeps the stored values silently (defaults are not "given").
    proc = demo(task_dir, "--no_run", base_url=sim.base_url)
    assert "Ignored" not in proc.stderr and "temperature=0.4" in proc.stdout
    proc = demo(task_dir, "--no_run", "--reinit_meta", "--temperature", "0.9", base_url=sim.base_url)
    assert "temperature 0.4 -> 0.9" in proc.stderr and "temperature=0.9" in proc.stdout


def dry_run_cost(task_dir: Path, base_url: str) -> float:
    proc = demo(task_dir, "--dryrun", base_url=base_url)
    assert proc.returncode == 0, proc.stderr
    return float(re.search(r"would make .* predicted cost ([0-9.]+)", proc.stderr).group(1))


def test_the_stored_completion_ratio_drives_predictions(tmp_path, sim):
    task_dir = tmp_path / "task"
    assert demo(task_dir, "--no_run", "--completion_ratio", "0.27", base_url=sim.base_url).returncode == 0
    stored = dry_run_cost(task_dir, sim.base_url)
    fresh = tmp_path / "fresh"
    assert demo(fresh, "--no_run", base_url=sim.base_url).returncode == 0  # the default ratio, 0.5
    assert stored < dry_run_cost(fresh, sim.base_url)
    demo(fresh, "--no_run", "--reinit_meta", "--completion_ratio", "0.27", base_url=sim.base_url)
    assert dry_run_cost(fresh, sim.base_url) == stored


def test_following_the_completion_ratio_advice_silences_it(tmp_path, sim):
    task_dir = tmp_path / "task"
    first = ["--force_direct", "--max_session_requests", "40", "--completion_ratio", "1.0"]
    proc = demo(task_dir, *first, base_url=sim.base_url)
    assert proc.returncode == 0, proc.stderr
    match = re.search(
        r"assumed (\d+) output tokens \(completion ratio 1\.00\) but (\d+) were generated: a completion ratio of "
        r"([0-9.]+) fits this batch.*assumed_completion_ratio=\3 \(in the demo: .*--completion_ratio \3\)",
        proc.stderr,
    )
    assert match, proc.stderr
    assumed, generated, fitted = int(match[1]), int(match[2]), match[3]
    assert assumed == 40 * 96  # the whole max_completion_tokens of each request
    assert abs(float(fitted) - generated / assumed) < 0.006
    step6 = ["--no_run", "--reinit_meta", "--wipe_requests", "--completion_ratio", fitted]
    proc = demo(task_dir, *step6, base_url=sim.base_url)
    assert proc.returncode == 0, proc.stderr
    proc = demo(task_dir, "--force_direct", "--max_session_requests", "40", base_url=sim.base_url)
    assert proc.returncode == 0, proc.stderr
    assert "Processed batch" in proc.stderr and "fits this batch" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("case", ["a file", "under a file"])
def test_a_task_dir_that_cannot_be_a_folder_is_one_clear_line(tmp_path, case):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("not a folder")
    task_dir = blocker if case == "a file" else blocker / "task"
    proc = demo(task_dir, "--simulate")
    assert_one_clear_error(proc, str(task_dir), "choose another --task_dir", "file")
    assert blocker.read_text() == "not a folder"


def test_a_task_dir_on_a_read_only_mount_is_one_clear_line(tmp_path):
    mount = tmp_path / "ro"
    mount.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(mount)], capture_output=True).returncode:
            pytest.skip("cannot mount a read-only file system here")
    else:
        mount.chmod(0o555)
    try:
        proc = demo(mount / "task", "--simulate")
        reason = "read-only" if os.geteuid() == 0 else "permission denied"
        assert_one_clear_error(proc, str(mount / "task"), reason, "--task_dir")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(mount)], check=True)
        else:
            mount.chmod(0o755)


def test_a_local_server_needs_no_key_and_a_remote_one_says_how_to_set_it(tmp_path, sim):
    proc = demo(tmp_path / "local", "--min_batch_requests", "1", base_url=sim.base_url, key=None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Task complete" in proc.stderr
    env_key = os.environ.pop("OPENAI_API_KEY", None)
    try:
        proc = demo(tmp_path / "remote", base_url="https://api.example.invalid/v1", key=None)
    finally:
        if env_key is not None:
            os.environ["OPENAI_API_KEY"] = env_key
    assert_one_clear_error(proc, "OPENAI_API_KEY", "--openai_api_key")


def test_limit_errors_show_the_value_given(tmp_path):
    proc = demo(tmp_path / "task", "--simulate", "--max_batch_requests", "0")
    assert_one_clear_error(proc, "--max_batch_requests must be >= 1 (got 0)")


def test_a_failed_batch_message_has_no_doubled_period(tmp_path, sim):
    sim.config.fail_next_batches = 1
    try:
        proc = demo(tmp_path / "task", "--min_batch_requests", "1", base_url=sim.base_url)
    finally:
        sim.config.fail_next_batches = 0
    assert_one_clear_error(proc, "failed on the remote", "--process_failed_batches")


def test_wipe_task_says_the_totals_are_kept_and_why(tmp_path, sim):
    task_dir = tmp_path / "task"
    assert demo(task_dir, "--force_direct", "--max_session_requests", "20", base_url=sim.base_url).returncode == 0
    proc = demo(task_dir, "--wipe_task", "--no_run", base_url=sim.base_url)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"Kept on purpose: the totals of earlier runs \(20 requests pushed.*--max_task_cost", proc.stderr)
    assert "survive --wipe_task" in proc.stdout
    totals = json.loads((task_dir / "char_codes_state.json").read_text())["totals"]
    assert totals["pushed_requests"] == 20


def wandb_offline_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", WANDB_CONFIG_DIR=str(tmp_path / "wandb_config"),
               WANDB_CACHE_DIR=str(tmp_path / "wandb_cache"), WANDB_DATA_DIR=str(tmp_path / "wandb_data"),
               WANDB_BASE_URL="http://127.0.0.1:1", PYTHONPATH=str(REPO), **extra)  # fmt: skip
    return env


def run_simulated_demo(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    cmd = [sys.executable, "-m", "gpt_batch_api.task_manager_demo", "--task", "utterance_emotion", "--simulate",
           "--task_dir", str(tmp_path / "task"), "--no_progress"]  # fmt: skip
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


def test_simulate_honours_wandb_mode_quietly_with_files_under_the_task(tmp_path):
    proc = run_simulated_demo(tmp_path, wandb_offline_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    wandb_lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("wandb:")]
    assert wandb_lines == [], wandb_lines  # no banner, no summary table, no advert
    assert len(re.findall(r"wandb run \w+ logged offline in .*wandb sync", proc.stderr)) == 1, proc.stderr
    assert not (tmp_path / "cwd" / "wandb").exists()
    assert list((tmp_path / "task" / "wandb").rglob("*.wandb")), "the run's files live with the task"


def test_the_users_own_wandb_settings_win(tmp_path):
    env = wandb_offline_env(tmp_path, WANDB_SILENT="false", WANDB_DIR=str(tmp_path / "my_wandb"))
    proc = run_simulated_demo(tmp_path, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert any(line.startswith("wandb:") for line in (proc.stdout + proc.stderr).splitlines())
    assert list((tmp_path / "my_wandb").rglob("*.wandb")) and not (tmp_path / "task" / "wandb").exists()


def test_simulate_without_wandb_mode_says_wandb_is_off(tmp_path):
    env = {k: v for k, v in wandb_offline_env(tmp_path).items() if k != "WANDB_MODE"}
    proc = run_simulated_demo(tmp_path, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wandb is off with --simulate: pass --wandb or set WANDB_MODE=offline" in proc.stderr
    assert not (tmp_path / "task" / "wandb").exists()


def test_utterance_meta_given_once_is_kept_without_a_warning(tmp_path, sim):
    task_dir = tmp_path / "utt"
    first = ["--task", "utterance_emotion", "--no_run", "--opinions_min", "2", "--opinions_max", "4"]
    proc = demo(task_dir, *first, base_url=sim.base_url)
    assert proc.returncode == 0, proc.stderr
    proc = demo(task_dir, "--task", "utterance_emotion", "--no_run", base_url=sim.base_url)
    assert proc.returncode == 0 and "Ignored" not in proc.stderr, proc.stderr
    assert "opinions_min=2, opinions_max=4, confidence=0.78" in proc.stdout


def test_a_batch_gone_from_the_server_is_reported_once_and_resent(tmp_path):
    """The simulator's state file deleted after Ctrl+C: the rerun finds its batch gone and says so in one line."""
    task_dir = tmp_path / "task"
    cmd = [sys.executable, "-m", "gpt_batch_api.task_manager_demo", "--task", "char_codes", "--simulate",
           "--task_dir", str(task_dir), "--no_progress"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "Pushed batch 1 " in line:
            break
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    (task_dir / "char_codes_simulator.json").unlink()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("is gone from the server") == 1, proc.stderr
    assert "its 1140 requests are sent again, without using their retries" in proc.stderr
    assert "MissingResult" not in proc.stderr and "Task complete: 1140 samples succeeded, 0 failed" in proc.stderr


def test_max_samples_is_a_quick_try_and_a_rerun_without_it_adds_the_rest(tmp_path, sim):
    task_dir = tmp_path / "task"
    proc = demo(task_dir, "--max_samples", "10", "--min_batch_requests", "1", base_url=sim.base_url)
    assert proc.returncode == 0 and "Task complete: 10 samples succeeded" in proc.stderr, proc.stderr[-3000:]
    proc = demo(task_dir, "--min_batch_requests", "1", base_url=sim.base_url)
    assert proc.returncode == 0 and "Task complete: 1140 samples succeeded" in proc.stderr, proc.stderr[-3000:]
    assert_one_clear_error(demo(tmp_path / "bad", "--max_samples", "0", "--simulate"), "--max_samples must be >= 1")


@pytest.mark.parametrize("mode", ["batch", "direct"])
@pytest.mark.parametrize(("task", "samples"), [("char_codes", 1140), ("utterance_emotion", 45)])
def test_both_demos_complete_on_simulate_in_both_modes(tmp_path, task, samples, mode):
    cmd = [sys.executable, "-m", "gpt_batch_api.task_manager_demo", "--task", task, "--simulate", "--task_dir",
           str(tmp_path / "t"), "--no_progress"] + (["--force_direct"] if mode == "direct" else [])  # fmt: skip
    proc = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Task complete: {samples} samples succeeded, 0 failed" in proc.stderr, proc.stderr[-3000:]
    totals = json.loads((tmp_path / "t" / f"{task}_state.json").read_text())["totals"]
    if mode == "batch":
        assert totals["pushed_batches"] >= 1
    else:
        assert totals["pushed_batches"] == 0 and totals["direct_batches"] >= 1


def test_reinit_meta_changes_only_the_values_given(tmp_path, sim):
    """A task started with --model keeps that model when --reinit_meta changes another value."""
    task_dir = tmp_path / "task"
    assert (
        demo(task_dir, "--no_run", "--model", "gpt-4.1", "--temperature", "0.4", base_url=sim.base_url).returncode == 0
    )
    proc = demo(task_dir, "--no_run", "--reinit_meta", "--completion_ratio", "0.3", base_url=sim.base_url)
    assert proc.returncode == 0, proc.stderr
    assert "completion_ratio 0.5 -> 0.3" in proc.stderr and "model" not in proc.stderr.split("reinitialised")[1]
    assert (
        "model='gpt-4.1'" in proc.stdout and "temperature=0.4" in proc.stdout and "completion_ratio=0.3" in proc.stdout
    )
