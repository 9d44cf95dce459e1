"""Reliability harness shared by the reliability tests and ``benchmarks/chaos.py``.

A real task run (the demo ``char_codes`` task through its CLI, or the test ``numbers`` task) is started in
a subprocess against an in-process simulator, killed (SIGKILL) or interrupted (SIGINT, sometimes twice) at
random moments, then run to completion. The simulator lives in the calling process, so its accounting
survives every kill: ``Ledger`` (the simulator's responder) counts every answer the server produced, per
sample, and the simulator's batch list shows every remote batch ever created.

What is checked afterwards (``audit``): every sample has exactly one output record and the task state
agrees with the output; no local batch was pushed twice; no sample was answered more often than the task
deliberately asked for (answers produced while a SIGKILL cut the connection are counted apart: the client
died before it could record them); no temp, journal or batch files remain; and the output equals that of
an uninterrupted run with the same seed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import unicodedata
import zlib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from gpt_batch_api.simulator import Simulator, SimulatorConfig
from gpt_batch_api.store.layout import TaskLayout
from tests.support.helpers import read_task_state, wait_until_running

REPO = Path(__file__).resolve().parents[2]

_CHAR = re.compile(r"of the character '(.+)'\.$", re.S)
_NUMBER = re.compile(r"^Reply with the number (\d+) as JSON\.$")
# An answer produced up to this long before a SIGKILL (or shortly after it: the server may still be working
# on a request the killed client sent) may have died with the client before it could be recorded.
IN_FLIGHT_BEFORE_S = 1.0
IN_FLIGHT_AFTER_S = 0.5


def _user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return message["content"]
    return ""


def wrong_first(char: str) -> bool:
    """Characters whose first answer is deliberately wrong (the char_codes task rejects and retries it)."""
    return zlib.crc32(char.encode()) % 8 == 0


class Ledger:
    """The simulator's responder: deterministic answers, and the time of every answer produced, per sample.

    For char_codes the answer is right, except the first answer of ``wrong_first`` characters (so the task
    retries on purpose); for numbers the simulator's own seeded schema answer is used.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.answers: dict[str, list[float]] = defaultdict(list)

    def __call__(self, endpoint: str, body: dict[str, Any]) -> str | None:
        text = _user_text(body)
        match = _CHAR.search(text)
        key = match.group(1) if match else None
        if key is None:
            number = _NUMBER.match(text)
            key = f"s{int(number.group(1)):06d}" if number else None
        if key is None:
            return None
        with self.lock:
            count = len(self.answers[key])
            self.answers[key].append(time.monotonic())
        if match is None:
            return None
        code = ord(key) + (1 if count == 0 and wrong_first(key) else 0)
        name = unicodedata.name(key, "UNKNOWN CHARACTER")
        return json.dumps({"character": key, "code_point": f"U+{code:04X}", "name": name})

    def extra_answers(
        self, expected: dict[str, int], kill_times: list[float], details: list[str] | None = None
    ) -> tuple[int, int]:
        """(answers beyond ``expected`` explained by a SIGKILL right after them, unexplained ones)."""
        explained = unexplained = 0
        with self.lock:
            answers = {key: list(times) for key, times in self.answers.items()}
        for key, times in answers.items():
            extra = len(times) - expected.get(key, 1)
            if extra <= 0:
                continue
            cut = sum(
                1 for t in times[:-1] if any(k - IN_FLIGHT_BEFORE_S <= t <= k + IN_FLIGHT_AFTER_S for k in kill_times)
            )
            explained += min(extra, cut)
            unexplained += extra - min(extra, cut)
            if details is not None and extra > cut:
                details.append(f"{key!r} answered at {[round(t, 2) for t in times]}, kills at {kill_times}")
        return explained, unexplained


@dataclasses.dataclass
class TaskSpec:
    """Which task to run and how: ``kind`` is "char_codes" (the demo CLI) or "numbers" (``num`` samples)."""

    kind: str = "char_codes"
    num: int = 0
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    task_prefix: str | None = None  # another prefix than the task's own (tasks sharing a folder)
    max_samples: int = 125  # char_codes: the first characters only, so kill loops stay short (all: 1,140)

    @property
    def prefix(self) -> str:
        return self.task_prefix or ("char_codes" if self.kind == "char_codes" else "numbers")

    def samples(self) -> list[str]:
        if self.kind == "char_codes":
            from gpt_batch_api.demo_tasks.char_codes import CHARACTERS

            return list(CHARACTERS[: self.max_samples])
        return [f"s{i:06d}" for i in range(self.num)]

    def expected_answers(self) -> dict[str, int]:
        if self.kind == "char_codes":
            return {char: 1 + wrong_first(char) for char in self.samples()}
        return {key: 1 for key in self.samples()}

    def command(self, task_dir: Path, base_url: str, api_key: str = "sk-test") -> list[str]:
        if self.kind == "char_codes":
            cmd = [sys.executable, "-m", "gpt_batch_api.task_manager_demo", "--task", "char_codes"]
            cmd += ["--task_dir", str(task_dir), "--client_base_url", base_url, "--openai_api_key", api_key]
            cmd += ["--no_wandb", "--no_progress", "--max_samples", str(self.max_samples)]
            cmd += ["--task_prefix", self.task_prefix] if self.task_prefix else []
            for key, value in self.options.items():
                if value is True:
                    cmd.append(f"--{key}")
                elif value is not False:
                    cmd += [f"--{key}", str(value)]
            return cmd
        cmd = [sys.executable, "-m", "tests.support.numbers_task", "--task_dir", str(task_dir), "--base_url", base_url]
        cmd += ["--num", str(self.num), "--chunk", "50", "--options", json.dumps(self.options)]
        return cmd + (["--prefix", self.task_prefix] if self.task_prefix else [])

    def start(self, task_dir: Path, base_url: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        full_env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO), **(env or {})}
        full_env.pop("OPENAI_API_KEY", None)
        return subprocess.Popen(
            self.command(task_dir, base_url),
            cwd=REPO,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )


@dataclasses.dataclass
class LoopResult:
    kills: int = 0
    interrupts: int = 0
    kill_times: list[float] = dataclasses.field(default_factory=list)
    interrupt_times: list[float] = dataclasses.field(default_factory=list)
    outputs: list[str] = dataclasses.field(default_factory=list)
    bad_exits: list[str] = dataclasses.field(default_factory=list)
    completed_early: bool = False


OK_EXITS = {0, 130}
INTERRUPT_EXITS = {0, 130, -signal.SIGINT}  # a second Ctrl+C ends the process by KeyboardInterrupt


def kill_loop(
    spec: TaskSpec,
    task_dir: Path,
    base_url: str,
    rng: random.Random,
    *,
    kills: int,
    interrupts: int,
    max_delay: float = 1.5,
    on_round: Any = None,
) -> LoopResult:
    """Start the task and interrupt it ``kills`` + ``interrupts`` times, in a random order, at random moments."""
    result = LoopResult()
    plan = ["kill"] * kills + ["int"] * interrupts
    rng.shuffle(plan)
    for round_num, action in enumerate(plan):
        if on_round is not None:
            on_round(round_num)
        proc = spec.start(task_dir, base_url)
        running = wait_until_running(task_dir, spec.prefix, proc)
        if running:
            time.sleep(rng.uniform(0.05, max_delay))
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            proc.wait()
            if proc.returncode != 0:
                result.bad_exits.append(f"exit {proc.returncode} before the {action}:\n{out[-3000:]}")
            result.completed_early = True
            break
        if action == "kill":
            proc.kill()
            result.kill_times.append(time.monotonic())
            result.kills += 1
            out, _ = proc.communicate(timeout=60)
            result.outputs.append(out)
            continue
        proc.send_signal(signal.SIGINT)
        result.interrupt_times.append(time.monotonic())
        if rng.random() < 0.3:  # an impatient user presses Ctrl+C twice
            time.sleep(rng.uniform(0.0, 0.3))
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        result.interrupts += 1
        out, _ = proc.communicate(timeout=120)
        result.outputs.append(out)
        if proc.returncode not in INTERRUPT_EXITS:
            result.bad_exits.append(f"exit {proc.returncode} after Ctrl+C:\n{out[-3000:]}")
    return result


def finish(spec: TaskSpec, task_dir: Path, base_url: str, timeout: float = 300) -> str:
    """Run the task to completion (one run, no interruption); raises AssertionError if it does not complete."""
    proc = spec.start(task_dir, base_url)
    out, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"the final run exited {proc.returncode}:\n{out[-4000:]}")
    return out


# ---------------------------------------------------------------------------------------------- audit


@dataclasses.dataclass
class Audit:
    lost: int = 0
    duplicated: int = 0
    failed: int = 0
    double_pushed: int = 0
    state_problems: list[str] = dataclasses.field(default_factory=list)
    stray_files: list[str] = dataclasses.field(default_factory=list)
    values: dict[str, Any] = dataclasses.field(default_factory=dict)


def read_output(spec: TaskSpec, task_dir: Path) -> list[tuple[str, Any, str | None]]:
    """(sample, answer without retry counts, error) for every output record, in file order."""
    if spec.kind == "char_codes":
        data = json.loads((task_dir / f"{spec.prefix}_output.json").read_text())
        chars = data.get("chars", data) if isinstance(data, dict) else {}
        return [(char, (info["code_point"], info["name"], info["name_correct"]), None) for char, info in chars.items()]
    from tests.support.helpers import read_records

    return [(r.sample, r.value, r.error) for r in read_records(task_dir, spec.prefix)]


def double_pushed(sim: Simulator) -> int:
    keys = Counter()
    for batch in sim.stats()["batches"]:
        metadata = batch.get("metadata") or {}
        keys[(metadata.get("gpt_batch_api_task"), metadata.get("gpt_batch_api_batch"))] += 1
    return sum(count - 1 for count in keys.values() if count > 1)


def audit(spec: TaskSpec, task_dir: Path, sim: Simulator | None) -> Audit:
    result = Audit()
    records = read_output(spec, task_dir)
    counts = Counter(sample for sample, _, _ in records)
    samples = spec.samples()
    result.duplicated = sum(n - 1 for n in counts.values() if n > 1)
    result.lost = sum(1 for s in samples if s not in counts)
    result.failed = sum(1 for _, _, error in records if error is not None)
    result.values = {sample: value for sample, value, error in records if error is None}
    task = read_task_state(task_dir, spec.prefix)
    ok = {sample for sample, _, error in records if error is None}
    if set(task["succeeded_samples"]) != ok:
        result.state_problems.append("succeeded_samples in the task state differ from the output")
    if set(task["failed_samples"]) != {s for s, _, e in records if e is not None}:
        result.state_problems.append("failed_samples in the task state differ from the output")
    if set(task["committed_samples"]) != set(samples):
        result.state_problems.append("committed_samples in the task state are not every sample")
    state = json.loads((task_dir / f"{spec.prefix}_state.json").read_text())
    if state["batches"] or state["queue"]["num_requests"]:
        result.state_problems.append("the requester state still has batches or queued requests")
    layout = TaskLayout(task_dir, spec.prefix)
    for path in task_dir.iterdir():
        name = path.name
        if not layout.owns(name.split(".tmp-")[0]):  # another task's file (tasks may share the folder)
            continue
        if ".tmp-" in name or name.endswith("_journal.json") or "_batch_" in name[len(spec.prefix) :]:
            result.stray_files.append(name)
    if sim is not None:
        result.double_pushed = double_pushed(sim)
    return result


def simulator_config(seed: int, **overrides: Any) -> SimulatorConfig:
    """Batches slow enough that kills land in every phase; mild faults on both paths."""
    config = SimulatorConfig(validating_s=0.3, in_progress_s=2.0, finalizing_s=0.2, latency_ms=60, seed=seed)
    config.error_line_rate = 0.03
    config.http_500_rate = 0.03
    config.http_429_rate = 0.02
    config.drop_connection_rate = 0.02
    for key, value in overrides.items():
        setattr(config, key, value)
    return config
