"""Monitoring subscribers: terminal progress bars, wandb (offline, read back from the run files), the view tool.

wandb only ever runs with WANDB_MODE=offline or disabled here; nothing leaves the machine.
"""

from __future__ import annotations

import io
import json
import logging
import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gpt_batch_api import events as ev
from gpt_batch_api.events import EventBus
from gpt_batch_api.progress import ProgressDisplay
from gpt_batch_api.results import ResultStats
from gpt_batch_api.wandb_monitor import WandbMonitor, batch_result_metrics, public_config

PLANTED_KEY = "sk-plantedCONFIGkey0123456789abcdef"
PLANTED_ARGV = "sk-plantedARGVkey0123456789abcdef"
PLANTED_ENV = "plantedENVsecretValue42"
PLANTED_ANTHROPIC_ENV = "plantedANTHROPICsecret77"
PLANTED_URL = "plantedURLpassword"


@pytest.fixture
def wandb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Offline wandb confined to tmp_path, with no config or credentials from the real home directory."""
    for name in list(os.environ):
        if name.startswith("WANDB_"):
            monkeypatch.delenv(name)
    wandb_dir = tmp_path / "wandb_dir"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(wandb_dir))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb_data"))
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:1")  # if anything tried to go online, it fails here
    return wandb_dir


# ---------------------------------------------------------------------------------------------- progress


def _feed_progress(display: ProgressDisplay) -> None:
    display.handle(ev.GENERATION_PROGRESS, {"done": 5, "total": None})
    display.handle(
        ev.REMOTE_PROGRESS,
        {
            "batches": [
                {
                    "batch_id": 1,
                    "remote_id": "batch_a",
                    "status": "in_progress",
                    "completed": 3,
                    "failed": 1,
                    "total": 10,
                },
                {
                    "batch_id": 2,
                    "remote_id": "batch_b",
                    "status": "validating",
                    "completed": 0,
                    "failed": 0,
                    "total": 5,
                },
            ]
        },
    )
    display.handle(ev.DIRECT_PROGRESS, {"batch_id": 7, "done": 2, "total": 4})


class _FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_show_generation_remote_and_direct() -> None:
    out = io.StringIO()
    display = ProgressDisplay(enabled=True, file=out, mininterval=0)
    _feed_progress(display)
    text = out.getvalue()
    assert "Generating requests" in text and "5sample" in text.replace(" ", "")
    assert "Batch 1" in text and "4/10" in text and "in_progress" in text
    assert "Batch 2" in text and "0/5" in text
    assert "Remote batches" in text and "4/15" in text
    assert "Direct batch 7" in text and "2/4" in text

    display.handle(ev.DIRECT_PROGRESS, {"batch_id": 7, "done": 4, "total": 4})
    assert "4/4" in out.getvalue()
    # Batch 1 is gone from the remote list (processed): its bar closes, the overall bar follows the rest.
    display.handle(
        ev.REMOTE_PROGRESS,
        {
            "batches": [
                {"batch_id": 2, "remote_id": "b", "status": "in_progress", "completed": 5, "failed": 0, "total": 5}
            ]
        },
    )
    assert set(display._remote) == {2, "overall"}
    assert "5/5" in out.getvalue()
    display.handle(ev.RUN_FINISHED, {"status": "complete", "message": ""})
    assert not display._remote and not display._direct and display._generation is None
    display.close()  # idempotent


def test_progress_is_silent_unless_wanted() -> None:
    not_tty = io.StringIO()
    display = ProgressDisplay(enabled=None, file=not_tty, mininterval=0)
    assert not display.enabled
    _feed_progress(display)
    display.close()
    assert not_tty.getvalue() == ""

    forced_off = _FakeTTY()
    display = ProgressDisplay(enabled=False, file=forced_off, mininterval=0)
    _feed_progress(display)
    display.close()
    assert forced_off.getvalue() == ""

    tty = _FakeTTY()
    display = ProgressDisplay(enabled=None, file=tty, mininterval=0)
    _feed_progress(display)
    display.close()
    assert "Remote batches" in tty.getvalue()


def test_progress_failure_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(io.StringIO):
        def write(self, s: str) -> int:
            raise OSError("terminal gone")

    display = ProgressDisplay(enabled=True, file=Broken(), mininterval=0)
    with caplog.at_level(logging.WARNING):
        _feed_progress(display)
        _feed_progress(display)
    assert not display.enabled
    assert sum("Progress display failed" in r.getMessage() for r in caplog.records) == 1


# ---------------------------------------------------------------------------------------------- wandb


def _wandb_records(path: Path) -> list[Any]:
    """Records of a .wandb transaction log (LevelDB-style log of protobuf records), read with wandb's protos."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a wandb transaction log"
    pos, block, pending, records = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk
            record = pb.Record()  # type: ignore[attr-defined]
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _read_run(wandb_dir: Path) -> SimpleNamespace:
    import wandb

    # run.finish() returns before wandb's service process has flushed the run's transaction log (under load
    # the file still held only its 7-byte header); teardown waits for that process to exit, file closed.
    wandb.teardown()
    (run_file,) = wandb_dir.rglob("*.wandb")
    history: dict[int, dict[str, Any]] = {}
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    group = None
    for rec in _wandb_records(run_file):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            group = rec.run.run_group
            config.update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in rec.config.update})
        elif kind == "history":
            row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
            history.setdefault(row["_step"], {}).update(row)
        elif kind == "summary":
            summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.summary.update})
    return SimpleNamespace(history=history, config=config, summary=summary, group=group)


def test_wandb_offline_logs_metrics_config_and_never_a_key(
    wandb_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Places a key could leak from: the config, the command line (wandb metadata), the environment, a URL.
    monkeypatch.setattr(sys, "argv", ["task.py", "--openai_api_key", PLANTED_ARGV])
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED_ENV)
    monkeypatch.setenv("ANTHROPIC_API_KEY", PLANTED_ANTHROPIC_ENV)
    run_dir = tmp_path / "runs"
    monitor = WandbMonitor(
        project="gpt_batch_api", entity=None, run_id=None, name="test run", group=None, dir=str(run_dir), config=None
    )
    bus = EventBus()
    bus.subscribe(monitor.handle)
    assert monitor.start()
    config = {
        "task": "NumbersTask",
        "meta": {"model": "gpt-test", "note": f"copied {PLANTED_ENV} by mistake", "n2": PLANTED_ANTHROPIC_ENV},
        "openai_api_key": PLANTED_KEY,
        "client_base_url": f"http://user:{PLANTED_URL}@127.0.0.1:9/v1",
        "max_batch_requests": 100,
        "max_completion_tokens": 64,
        "token_estimator_warn": "once",
        "extra_headers": {"Authorization": f"Bearer {PLANTED_KEY}"},
    }
    bus.emit(ev.RUN_STARTED, task="NumbersTask", config=config)
    stats = ResultStats(
        num_requests=10,
        num_success=7,
        num_warnings=1,
        num_fatal=2,
        true_cost=0.5,
        predicted_cost=1.0,
        error_subtypes={"invalid_json": 2},
    )
    bus.emit(ev.BATCH_PROCESSED, batch_id=1, stats=stats.to_json())
    bus.emit(ev.STATUS, metrics={"Task/samples_committed": 10, "Cost/true": 0.5, "Task/step": 1}, step=1)
    bus.emit(ev.STATUS, metrics={"Task/samples_committed": 20, "Cost/true": 0.75, "Task/step": 2}, step=2)
    bus.emit(ev.RUN_FINISHED, status="complete", message="")
    monitor.finish()
    monitor.finish()  # idempotent
    assert monitor.enabled

    run = _read_run(run_dir)
    assert run.group == "NumbersTask"
    assert run.history[1]["Task/samples_committed"] == 10
    assert run.history[1]["Result/requests"] == 10
    assert run.history[1]["Result/fatal"] == 2
    assert run.history[1]["Errors/invalid_json"] == 2
    assert run.history[1]["Result/pass_ratio"] == pytest.approx(0.8)
    assert run.history[1]["Result/true_to_predicted_cost"] == pytest.approx(0.5)
    assert run.history[2]["Cost/true"] == 0.75
    assert "Result/requests" not in run.history[2]  # batch statistics belong to the step that processed them
    assert run.summary["Run/status"] == "complete"
    assert run.config["max_batch_requests"] == 100
    assert run.config["max_completion_tokens"] == 64
    assert run.config["token_estimator_warn"] == "once"
    assert run.config["meta"]["model"] == "gpt-test"
    assert "openai_api_key" not in run.config

    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        for secret in (PLANTED_KEY, PLANTED_ARGV, PLANTED_ENV, PLANTED_ANTHROPIC_ENV, PLANTED_URL):
            assert secret.encode() not in data, f"{secret} leaked into {path}"


def test_wandb_failure_is_isolated(wandb_env: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from wandb.sdk import wandb_run

    calls = []

    def broken_log(self: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(args)
        raise RuntimeError("wandb exploded")

    monitor = WandbMonitor(project="p", entity=None, run_id="fixedid1", name=None, group="g", dir=tmp_path, config={})
    seen: list[str] = []
    bus = EventBus()
    bus.subscribe(monitor.handle)
    bus.subscribe(lambda name, fields: seen.append(name))
    monitor.start()
    bus.emit(ev.RUN_STARTED, task="T", config={"a": 1})
    with pytest.MonkeyPatch.context() as mp, caplog.at_level(logging.WARNING):
        mp.setattr(wandb_run.Run, "log", broken_log)
        bus.emit(ev.STATUS, metrics={"Task/step": 1}, step=1)
        bus.emit(ev.STATUS, metrics={"Task/step": 2}, step=2)
    assert seen == [ev.RUN_STARTED, ev.STATUS, ev.STATUS]  # later subscribers still get every event
    assert len(calls) == 1 and not monitor.enabled  # switched off after the first failure
    assert sum("wandb logging is switched off" in r.getMessage() for r in caplog.records) == 1
    monitor.finish()  # must not raise


def test_wandb_disabled_mode_writes_nothing(wandb_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    run_dir = tmp_path / "disabled"
    monitor = WandbMonitor(project="p", entity=None, run_id=None, name=None, group=None, dir=run_dir, config={})
    monitor.start()
    monitor.handle(ev.RUN_STARTED, {"task": "T", "config": {"x": 1}})
    monitor.handle(ev.STATUS, {"metrics": {"Task/step": 1}, "step": 1})
    monitor.finish()
    assert monitor.enabled
    assert not [p for p in run_dir.rglob("*") if p.is_file()]


def test_public_config_drops_and_redacts_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", PLANTED_ENV)
    clean = public_config(
        {
            "openai_api_key": None,
            "OPENAI_APIKEY": "x",
            "client_secret": 5,
            "hf_token": "hf_abcdefghijklmnop",
            "max_batch_ktokens": 12.5,
            "token_estimator_warn": "always",
            "nested": {"password": "p", "keep": [f"sk-{'a' * 30}", "fine", PLANTED_ENV]},
            "url": f"https://bob:{PLANTED_URL}@example.org/v1",
        }
    )
    assert clean == {
        "max_batch_ktokens": 12.5,
        "token_estimator_warn": "always",
        "nested": {"keep": ["<redacted>", "fine", "<redacted>"]},
        "url": "https://<redacted>@example.org/v1",
    }


def test_batch_result_metrics_names() -> None:
    metrics = batch_result_metrics(
        ResultStats(num_requests=3, num_retries=1, warning_subtypes={"refusal": 1}).to_json()
    )
    assert metrics["Result/requests"] == 3 and metrics["Result/retries"] == 1 and metrics["Warnings/refusal"] == 1
    assert metrics["Result/batches"] == 1


# ---------------------------------------------------------------------------------------------- view


def _logged_metric_names(tmp_path: Path) -> set[str]:
    from gpt_batch_api.gpt_requester import GPTRequester
    from gpt_batch_api.task_manager import TaskManager
    from gpt_batch_api.task_state import TaskState

    names = set(GPTRequester(tmp_path / "gr", "t").metrics())
    names |= set(TaskManager.task_metrics(SimpleNamespace(T=TaskState(meta={}))))  # type: ignore[arg-type]
    return names


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # wandb-workspaces still uses pydantic v1 validators
def test_view_has_panels_for_every_logged_metric(tmp_path: Path) -> None:
    from gpt_batch_api.wandb_configure_view import build_workspace, describe, view_metrics

    workspace = build_workspace("someone", "proj")
    shown = {str(y) for section in workspace.sections for panel in section.panels for y in (panel.y or [])}
    assert shown == view_metrics()
    missing = _logged_metric_names(tmp_path) - shown
    assert not missing, f"metrics without a panel: {sorted(missing)}"
    for name in ("Result/pass_ratio", "Result/fatal", "Result/retries", "Result/true_to_predicted_cost"):
        assert name in shown
    regexes = {panel.metric_regex for section in workspace.sections for panel in section.panels}
    assert {"Errors/.*", "Warnings/.*"} <= regexes
    model = json.dumps(workspace._to_model().model_dump(mode="json"))  # serialises as wandb would store it
    assert "Task/samples_committed" in model and "Cost/true" in model
    text = describe(workspace)
    assert "Section 'Cost'" in text and "Usage/completion_ratio" in text


def _view_cli(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    base.update(HOME=str(tmp_path), WANDB_CONFIG_DIR=str(tmp_path / "cfg"), **env)
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "gpt_batch_api.wandb_configure_view", *args],
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc, time.monotonic() - start


def test_view_cli_prints_offline_and_fails_fast_without_server(tmp_path: Path) -> None:
    proc, _ = _view_cli(tmp_path, "--src_show", WANDB_BASE_URL="http://127.0.0.1:1")
    assert proc.returncode == 0, proc.stderr
    assert "Section 'Batch results'" in proc.stdout and "Nothing saved: pass --dst_entity" in proc.stdout

    proc, elapsed = _view_cli(tmp_path, "--dst_entity", "me", WANDB_BASE_URL="http://127.0.0.1:1")
    assert proc.returncode == 1
    assert "Cannot connect to the wandb server http://127.0.0.1:1" in proc.stderr and "wandb login" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert elapsed < 20

    proc, _ = _view_cli(tmp_path, "--dst_entity", "me", WANDB_MODE="offline", WANDB_BASE_URL="http://127.0.0.1:1")
    assert proc.returncode == 1 and "WANDB_MODE=offline" in proc.stderr

    proc, _ = _view_cli(tmp_path, "--src_nw", "abc", WANDB_BASE_URL="http://127.0.0.1:1")
    assert proc.returncode == 1 and "--src_nw needs --src_entity" in proc.stderr


# ---------------------------------------------------------------------------------------------- end to end


def test_task_run_logs_to_offline_wandb_without_the_key(
    wandb_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gpt_batch_api.simulator import Simulator, SimulatorConfig

    from .support.helpers import FAST_BATCHES
    from .support.numbers_task import NumbersTask

    key = "sk-plantedE2Ekey0123456789abcdefgh"
    run_dir = tmp_path / "wandb_runs"
    with Simulator(SimulatorConfig(**FAST_BATCHES)) as sim:
        task = NumbersTask(
            str(tmp_path / "task"),
            120,
            chunk=40,
            wandb=True,
            wandb_dir=str(run_dir),
            progress=True,
            client_base_url=sim.base_url,
            openai_api_key=key,
            min_batch_requests=10,
            max_batch_requests=50,
        )
        assert task.run() is True
    out = capsys.readouterr().out
    assert "Generating requests" in out and "Remote batches" in out

    run = _read_run(run_dir)
    assert run.group == "NumbersTask"
    last = run.history[max(run.history)]
    assert last["Task/samples_succeeded"] == 120 and last["Task/pushed_batches"] == 3
    assert sum(row.get("Result/requests", 0) for row in run.history.values()) == 120
    assert run.summary["Run/status"] == "complete"
    assert run.config["task"] == "NumbersTask" and run.config["max_batch_requests"] == 50
    for path in (p for p in run_dir.rglob("*") if p.is_file()):
        assert key.encode() not in path.read_bytes(), f"API key leaked into {path}"
