"""The demo in a real terminal (tmux): progress bars never garble the log lines, at 100 and 160 columns."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d \[(INFO|WARNING)\] ")

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def run_in_tmux(tmp_path: Path, columns: int, *demo_args: str) -> list[str]:
    session = f"gba{tmp_path.name[-20:]}{columns}".replace(".", "")
    command = shlex.join(
        [sys.executable, "-m", "gpt_batch_api.task_manager_demo", "--simulate", "--task_dir", str(tmp_path / "t"),
         *demo_args]
    ) + "; echo EXIT=$?; sleep 60"  # fmt: skip
    env = ["-e", f"PYTHONPATH={REPO}", "-e", "WANDB_MODE=disabled"]
    tmux = ["tmux", "-L", session]  # a server of our own: nothing of the user's tmux is touched
    subprocess.run([*tmux, "new-session", "-d", "-s", session, "-x", str(columns), "-y", "60", *env, command],
                   check=True, cwd=REPO)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            screen = subprocess.run([*tmux, "capture-pane", "-p", "-J", "-t", session], capture_output=True,
                                    text=True, check=True).stdout  # fmt: skip
            if "EXIT=" in screen:
                return [line.rstrip() for line in screen.splitlines() if line.strip()]
            time.sleep(0.2)
        raise AssertionError(f"the demo did not finish:\n{screen}")
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)


@pytest.mark.parametrize("columns", [100, 160])
@pytest.mark.parametrize("mode", ["batch", "direct"])
def test_the_end_of_a_terminal_run_is_clean(tmp_path, columns, mode):
    args = ["--task", "char_codes"] if mode == "batch" else ["--task", "utterance_emotion", "--force_direct"]
    lines = run_in_tmux(tmp_path, columns, *args)
    assert lines[-1] == "EXIT=0", "\n".join(lines)
    # Every line is a whole log line, or the generation bar left on purpose: no bar remnant, no split line.
    for line in lines[:-1]:
        assert LOG_LINE.match(line) or line.startswith("Generating requests: "), "\n".join(lines)
    assert any(re.match(r"^\S+ \[INFO\] Task complete: (1140|45) samples succeeded, 0 failed$", ln) for ln in lines)
    assert re.match(r"^\S+ \[INFO\] Task complete\. Files are in \S+$", lines[-2]), "\n".join(lines)
