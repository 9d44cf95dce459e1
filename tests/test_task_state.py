"""The task state on disk: a small head file plus an append-only log, each commit writing only the changes."""

from __future__ import annotations

import json
import random

import pytest

from gpt_batch_api.errors import TaskFileError
from gpt_batch_api.store.transaction import Transaction
from gpt_batch_api.task_state import TaskState, TaskStateFiles, load_task_state


def commit(files: TaskStateFiles, state: TaskState, tmp_path) -> None:
    with Transaction(tmp_path / "t_journal.json") as txn:
        files.prepare_commit(txn, state)


def reloaded(tmp_path) -> dict:
    return load_task_state(tmp_path / "t_task.json").to_json()


def test_changes_in_place_replacements_and_deletions_survive_a_reload(tmp_path):
    files = TaskStateFiles(tmp_path / "t_task.json")
    state = TaskState(meta={"model": "m"})
    commit(files, state, tmp_path)
    state.committed_samples.update({"a": 1, "b": 2})
    record = state.committed_meta.setdefault("a", {"opinions": []})
    commit(files, state, tmp_path)
    record["opinions"].append("joy")  # changed in place, never assigned again
    state.committed_samples["c"] = 3
    del state.committed_samples["b"]
    state.failed_samples["x"] = "err"
    state.failed_samples.pop("x")
    state.succeeded_samples |= {"a": True}
    commit(files, state, tmp_path)
    assert reloaded(tmp_path) == state.to_json()
    state.responded_meta = {"replaced": 1}  # a new dict object: written in full
    commit(files, state, tmp_path)
    assert reloaded(tmp_path) == state.to_json()
    assert reloaded(tmp_path)["committed_meta"] == {"a": {"opinions": ["joy"]}}


def test_a_commit_appends_only_the_changes(tmp_path):
    files = TaskStateFiles(tmp_path / "t_task.json")
    state = TaskState()
    state.committed_samples.update({f"s{i}": None for i in range(20_000)})
    commit(files, state, tmp_path)
    log = files.log_path(files.gen)
    size = log.stat().st_size
    head = (tmp_path / "t_task.json").stat().st_size
    state.succeeded_samples["s1"] = True
    commit(files, state, tmp_path)
    assert log.stat().st_size - size < 100, "more than the one change was written"
    assert (tmp_path / "t_task.json").stat().st_size < head + 50 and head < 1000


def test_the_log_is_compacted_once_it_outgrows_the_state(tmp_path, monkeypatch):
    monkeypatch.setattr("gpt_batch_api.task_state.COMPACT_MIN_BYTES", 2000)
    files = TaskStateFiles(tmp_path / "t_task.json")
    state = TaskState()
    rng = random.Random(1)
    gens = set()
    for step in range(300):
        key = f"k{rng.randrange(50)}"
        if rng.random() < 0.3:
            state.committed_samples.pop(key, None)
        else:
            state.committed_samples[key] = step
        commit(files, state, tmp_path)
        gens.add(files.gen)
    assert len(gens) > 2, "the log was never compacted"
    assert [p.name for p in tmp_path.glob("t_task_log_*.jsonl")] == [files.log_path(files.gen).name]
    assert reloaded(tmp_path) == state.to_json()


def test_bytes_after_the_recorded_end_are_an_uncommitted_commit_and_are_dropped(tmp_path):
    files = TaskStateFiles(tmp_path / "t_task.json")
    state = TaskState()
    commit(files, state, tmp_path)
    state.committed_samples["a"] = 1
    commit(files, state, tmp_path)
    committed = reloaded(tmp_path)
    with open(files.log_path(files.gen), "ab") as log:  # a crash after the append, before the commit point
        log.write(b'{"f":"committed_samples","set":{"b":2},"del":[]}\n{"f":"commit')
    files.close()
    assert reloaded(tmp_path) == committed
    again = TaskStateFiles(tmp_path / "t_task.json")
    state = again.load(cleanup=True)
    state.committed_samples["c"] = 3
    commit(again, state, tmp_path)
    assert reloaded(tmp_path)["committed_samples"] == {"a": 1, "c": 3}


def test_a_log_that_disagrees_with_the_head_is_refused(tmp_path):
    files = TaskStateFiles(tmp_path / "t_task.json")
    state = TaskState()
    state.committed_samples.update({"a": 1, "b": 2})
    commit(files, state, tmp_path)
    log = files.log_path(files.gen)
    log.write_bytes(log.read_bytes().replace(b'"b":2', b'"b":3').replace(b'"a":1,', b""))
    before = log.read_bytes()
    with pytest.raises(TaskFileError, match="does not match|shorter"):
        load_task_state(tmp_path / "t_task.json")
    assert log.read_bytes() == before


def test_version_1_files_are_upgraded_on_the_next_commit(tmp_path):
    v1 = {
        "version": 1,
        "meta": {"m": 1},
        "committed_samples": {"a": 1},
        "succeeded_samples": {"a": True},
        "committed_meta": {},
        "responded_meta": {},
        "failed_samples": {},
        "output": None,
    }
    (tmp_path / "t_task.json").write_text(json.dumps(v1))
    files = TaskStateFiles(tmp_path / "t_task.json")
    state = files.load()
    assert state.to_json() == v1
    state.committed_samples["b"] = 2
    commit(files, state, tmp_path)
    assert json.loads((tmp_path / "t_task.json").read_text())["version"] == 2
    assert reloaded(tmp_path)["committed_samples"] == {"a": 1, "b": 2}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {"scores": [0.5, float("-inf")]}])
def test_nan_or_infinity_in_a_value_is_refused_before_anything_is_written(tmp_path, value):
    """JSON has no NaN: written as null, it would come back as None after a restart."""
    from gpt_batch_api.errors import TaskDataError

    files = TaskStateFiles(tmp_path / "t_task.json")
    state = TaskState(meta={"model": "m"})
    state.succeeded_samples["ok"] = None  # a real null is fine
    commit(files, state, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    state.succeeded_samples["s1"] = value
    with pytest.raises(TaskDataError, match=r"succeeded_samples\['s1'\] holds NaN or infinity"):
        commit(files, state, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert reloaded(tmp_path)["succeeded_samples"] == {"ok": None}
