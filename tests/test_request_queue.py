"""RequestQueue on real files: what is committed, taken, rotated, and what a crash before a commit leaves."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpt_batch_api.errors import TaskFileError
from gpt_batch_api.limits import Limits
from gpt_batch_api.request_queue import RequestQueue
from gpt_batch_api.requester_options import RequesterOptions
from gpt_batch_api.requester_state import QueueState
from gpt_batch_api.store.task_store import DryRunStore, TaskStore


class Harness:
    """A queue with its state and the deletions its commits schedule (what GPTRequester gives it)."""

    def __init__(self, task_dir: Path, state: QueueState | None = None, store: TaskStore | None = None) -> None:
        self.state = state or QueueState()
        self.deletes: list[Path] = []
        self.queue = RequestQueue(
            path_of=lambda gen: task_dir / f"t_queue_{gen}.jsonl",
            state=lambda: self.state,
            replace_state=self._replace,
            delete_on_commit=self.deletes.extend,
            store=store or TaskStore(),
        )

    def _replace(self, state: QueueState) -> None:
        self.state = state

    def add(self, *req_ids: int) -> None:
        records = [
            self.queue.record(
                b'{"custom_id":"id-%d","body":{}}' % i, req_id=i, retry_num=0, tokens_input=10 * i, tokens_output=1,
                cost_batch=0.5, cost_direct=1.0, parse=None, num_outputs=1, meta={"i": i},
            )
            for i in req_ids
        ]  # fmt: skip
        self.queue.append(records)

    def commit(self) -> None:
        self.queue.prepare_commit()
        for path in self.deletes:  # what the transaction does with the scheduled deletions
            path.unlink()
        self.deletes.clear()
        self.queue.committed()

    def ids(self) -> list[int]:
        return [record.id for _, record in self.queue.records()]


def committed_file(task_dir: Path, *req_ids: int) -> tuple[Harness, Path]:
    """A queue file holding the committed requests ``req_ids``, closed, with its harness (state included)."""
    h = Harness(task_dir)
    h.queue.open(wiping=False)
    h.add(*req_ids)
    h.commit()
    h.queue.close()
    return h, task_dir / "t_queue_0.jsonl"


def test_records_appear_at_the_commit_and_take_removes_them_with_their_totals(tmp_path):
    h = Harness(tmp_path)
    h.queue.open(wiping=False)
    h.add(1, 2, 3)
    assert h.ids() == []  # appended, not committed
    h.commit()
    assert h.ids() == [1, 2, 3]
    sizes = [record.size for _, record in h.queue.records()]
    assert (h.state.num_requests, h.state.tokens_input, h.state.cost, h.state.size) == (3, 60, 1.5, sum(sizes))
    taken = list(h.queue.records())[:2]
    end = taken[-1][0]
    h.queue.take([r for _, r in taken], end)  # the totals go down by what each record added
    assert h.ids() == [3]
    assert (h.state.num_requests, h.state.tokens_input, h.state.cost, h.state.start) == (1, 30, 0.5, end)
    assert h.state.size == sizes[2] == len(b'{"custom_id":"id-3","body":{}}') + 1


def test_a_consumed_queue_rotates_to_a_new_file_and_the_old_one_goes_in_the_same_commit(tmp_path):
    h = Harness(tmp_path)
    h.queue.open(wiping=False)
    h.add(1)
    h.commit()
    ((end, record),) = list(h.queue.records())
    h.queue.take([record], end)
    h.commit()
    assert h.state.gen == 1 and (h.state.start, h.state.end) == (0, 0)
    assert not (tmp_path / "t_queue_0.jsonl").exists()
    h.add(7)
    h.commit()
    assert h.ids() == [7]
    assert (tmp_path / "t_queue_1.jsonl").stat().st_size == h.state.end > 0


def test_bytes_appended_after_the_last_commit_are_dropped_when_the_queue_is_opened_again(tmp_path):
    h = Harness(tmp_path)
    h.queue.open(wiping=False)
    h.add(1)
    h.commit()
    h.add(2, 3)
    h.queue.close()  # a crash before the commit: the bytes are in the file, not in the state
    assert (tmp_path / "t_queue_0.jsonl").stat().st_size > h.state.end
    again = Harness(tmp_path, h.state)
    again.queue.open(wiping=False)
    assert again.ids() == [1]
    assert (tmp_path / "t_queue_0.jsonl").stat().st_size == h.state.end


def test_a_truncated_queue_file_is_refused_unless_the_requests_are_wiped(tmp_path):
    h, path = committed_file(tmp_path, 1, 2)
    path.write_bytes(path.read_bytes()[:10])
    with pytest.raises(TaskFileError, match="shorter .* --wipe_requests"):
        Harness(tmp_path, h.state).queue.open(wiping=False)
    assert path.stat().st_size == 10  # refused without touching it
    wiped = Harness(tmp_path, h.state)
    wiped.queue.open(wiping=True)
    assert wiped.state.gen == 1 and wiped.ids() == [] and wiped.deletes == [path]


def test_the_queue_fits_in_one_batch_until_a_batch_limit_is_reached(tmp_path):
    h = Harness(tmp_path)
    h.queue.open(wiping=False)
    limits: Limits = RequesterOptions(max_batch_requests=2, min_batch_requests=1).limits()
    h.add(1, 2)
    h.commit()
    assert h.queue.fits_in_one_batch(limits)
    h.add(3)
    h.commit()
    assert not h.queue.fits_in_one_batch(limits)


def test_with_the_dry_run_store_the_queue_reads_the_committed_file_and_keeps_its_appends_in_memory(tmp_path):
    h, path = committed_file(tmp_path, 1, 2)
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    dry = Harness(tmp_path, h.state.model_copy(), store=DryRunStore())
    dry.queue.open(wiping=False)
    dry.add(3)
    dry.commit()
    assert dry.ids() == [1, 2, 3]  # the plan of a dry run covers what it would have queued
    ((end, record), *_) = list(dry.queue.records())
    dry.queue.take([record], end)
    assert dry.ids() == [2, 3]
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t_queue_0.jsonl"]
