"""The durable-file layer: atomic replace, JSONL appends and recovery, transactions, the task lock, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gpt_batch_api.errors import TaskFileError, TaskLockedError
from gpt_batch_api.store.atomic import atomic_write_bytes, cleanup_temp_files, read_json
from gpt_batch_api.store.jsonl import JsonlAppender, read_jsonl, recover_jsonl
from gpt_batch_api.store.lock import TaskLock
from gpt_batch_api.store.signals import DeferSignals, StopMonitor
from gpt_batch_api.store.transaction import Transaction, recover_transaction

REPO = Path(__file__).resolve().parents[1]


def run_py(code: str, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=full_env, **kw)


def test_atomic_write_killed_mid_write_leaves_old_or_new_content(tmp_path):
    target = tmp_path / "state.json"
    old = b"old" * 10
    atomic_write_bytes(target, old)
    new = b"N" * 30_000_000  # big enough that the writer is often killed inside the write
    for delay in (0.0, 0.02, 0.05, 0.1, 0.2, 0.4):
        proc = run_py(
            f"""
            from gpt_batch_api.store.atomic import atomic_write_bytes
            while True:
                atomic_write_bytes({str(target)!r}, b"N" * 30_000_000)
                atomic_write_bytes({str(target)!r}, {old!r})
            """
        )
        time.sleep(0.3 + delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        content = target.read_bytes()
        assert content in (old, new), f"torn file of {len(content)} bytes"
        cleanup_temp_files(tmp_path, lambda name: True)
        assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_read_json_reports_corruption_and_does_not_touch_the_file(tmp_path):
    path = tmp_path / "x_state.json"
    path.write_bytes(b'{"version": 1, "queue": {')
    with pytest.raises(TaskFileError, match="corrupt.*not modified"):
        read_json(path, what="requester state")
    assert path.read_bytes() == b'{"version": 1, "queue": {'
    with pytest.raises(TaskFileError, match="missing"):
        read_json(tmp_path / "nope.json")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_closing_an_appender_on_a_full_disk_does_not_hide_the_error_that_ended_the_run():
    """Appended bytes not yet committed are dropped at the next open: a full disk when closing is no error of
    its own (it used to replace a commit's clear "the disk is full" with a raw OSError traceback)."""
    appender = JsonlAppender(Path("/dev/full"), 0)  # every write that reaches it fails with ENOSPC
    appender.append_raw(b'{"buffered": true}\n')
    with pytest.raises(TaskFileError, match="disk is full"):
        appender.flush()  # a commit's flush still says so
    appender.close()
    appender.close()  # closed once, quietly


def test_jsonl_appender_truncates_uncommitted_tail_and_reader_rejects_torn_lines(tmp_path, caplog):
    path = tmp_path / "q.jsonl"
    app = JsonlAppender(path)
    app.append({"a": 1})
    app.append_many([{"b": 2}, {"c": 3}])
    committed = app.flush()
    app.append_raw(b'{"d": 4}\n{"e": ')  # a crash before the next commit leaves this behind
    app.flush()
    app.close()
    with pytest.raises(TaskFileError, match="incomplete line"):
        list(read_jsonl(path))
    assert [obj for _, obj in read_jsonl(path, 0, committed)] == [{"a": 1}, {"b": 2}, {"c": 3}]
    app = JsonlAppender(path, committed_size=committed)
    assert "dropping" in caplog.text
    assert path.stat().st_size == committed
    offset = app.append({"z": 9})
    app.close()
    assert [(o, obj) for o, obj in read_jsonl(path)][-1] == (offset, {"z": 9})
    with pytest.raises(TaskFileError, match="shorter"):
        JsonlAppender(path, committed_size=committed + 10_000)


def test_read_jsonl_rejects_garbage_and_recover_jsonl_truncates_it(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"ok": 1}\n{not json}\n')
    with pytest.raises(TaskFileError, match="corrupt line at byte 10"):
        list(read_jsonl(path))
    assert recover_jsonl(path) == len(b"{not json}\n")
    assert [obj for _, obj in read_jsonl(path)] == [{"ok": 1}]


def test_full_disk_is_a_clear_error(tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    app = JsonlAppender("/dev/full")
    with pytest.raises(TaskFileError, match="disk is full"):  # raised by the write or, if buffered, by the flush
        app.append({"x": "y" * 100_000})
        app.flush()


def test_transaction_applies_all_or_nothing_at_every_crash_point(tmp_path):
    for point in ("txn_after_stage", "txn_after_journal", "txn_mid_apply", "txn_before_journal_remove", "none"):
        folder = tmp_path / point
        folder.mkdir()
        (folder / "a.json").write_text('"a0"')
        (folder / "b.json").write_text('"b0"')
        (folder / "gone.txt").write_text("x")
        proc = run_py(
            f"""
            from pathlib import Path
            from gpt_batch_api.store.transaction import Transaction
            f = Path({str(folder)!r})
            with Transaction(f / "j_journal.json") as txn:
                txn.write_json(f / "a.json", "a1")
                txn.write_json(f / "b.json", "b1")
                txn.delete(f / "gone.txt")
            """,
            env={"GPT_BATCH_API_CRASH_POINT": point},
        )
        proc.wait()
        recovered = recover_transaction(folder / "j_journal.json")
        cleanup_temp_files(folder, lambda name: True)
        a, b = (json.loads((folder / n).read_text()) for n in ("a.json", "b.json"))
        if point == "txn_after_stage":
            assert (a, b, (folder / "gone.txt").exists(), recovered) == ("a0", "b0", True, False)
        else:
            assert (a, b, (folder / "gone.txt").exists()) == ("a1", "b1", False), point
            assert recovered == (point != "none"), point
        assert sorted(p.name for p in folder.iterdir()) == ["a.json", "b.json"] + (
            ["gone.txt"] if point == "txn_after_stage" else []
        )


def test_transaction_exception_aborts_and_removes_staged_files(tmp_path):
    (tmp_path / "a.json").write_text('"a0"')
    with pytest.raises(RuntimeError), Transaction(tmp_path / "j_journal.json") as txn:
        txn.write_json(tmp_path / "a.json", "a1")
        raise RuntimeError("boom")
    assert (tmp_path / "a.json").read_text() == '"a0"'
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_corrupt_journal_is_refused(tmp_path):
    (tmp_path / "j_journal.json").write_text("{broken")
    with pytest.raises(TaskFileError, match="journal.*corrupt"):
        recover_transaction(tmp_path / "j_journal.json")
    assert (tmp_path / "j_journal.json").read_text() == "{broken"


def test_second_process_waits_then_fails_naming_the_holder(tmp_path, caplog):
    lock_path = tmp_path / "t.lock"
    holder = run_py(
        f"""
        import time
        from gpt_batch_api.store.lock import TaskLock
        with TaskLock({str(lock_path)!r}):
            print("locked", flush=True)
            time.sleep(60)
        """,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        caplog.set_level("INFO")
        start = time.monotonic()
        with pytest.raises(TaskLockedError, match=f"pid {holder.pid}") as info:
            TaskLock(lock_path, timeout=1.0, poll_interval=0.05, status_interval=0.3).acquire()
        assert 0.9 < time.monotonic() - start < 5
        assert str(lock_path) in str(info.value) and "--lock_timeout" in str(info.value)
        assert "Still waiting" in caplog.text
    finally:
        holder.kill()
        holder.wait()
    with TaskLock(lock_path, timeout=5):  # a killed holder's lock is free again
        pass


def test_defer_signals_holds_sigint_until_the_end_of_the_section():
    events = []
    with pytest.raises(KeyboardInterrupt):
        with DeferSignals():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            events.append("section finished")
    assert events == ["section finished"]


def test_stop_monitor_flags_first_signal_and_interrupts_on_second():
    with StopMonitor() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert stop.stop_requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)


def test_a_stop_that_library_code_turns_into_another_error_is_still_a_stop():
    """A Ctrl+C inside an interruptible call may be raised inside library code that wraps it (pydantic turns
    it into a SchemaError while building a model lazily): it must still end the run as a stop (exit 130)."""
    import signal as signal_module

    from gpt_batch_api.errors import StopRequested
    from gpt_batch_api.store.signals import StopMonitor

    class WrappedError(Exception):
        pass

    with StopMonitor() as monitor:
        with pytest.raises(StopRequested):
            with monitor.interruptible():
                try:
                    signal_module.raise_signal(signal_module.SIGINT)
                except StopRequested as exc:
                    raise WrappedError("wrapped by a library") from exc
        with pytest.raises(ValueError):  # other errors of an interruptible call stay what they are
            monitor.stop_requested = False
            with monitor.interruptible():
                raise ValueError("not a stop")
