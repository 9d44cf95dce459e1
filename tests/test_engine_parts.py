"""The requester's parts: composed, not mixed in; the budget charges and refunds a batch in one place."""

from __future__ import annotations

import ast
import importlib.util
import itertools
import pkgutil
from pathlib import Path

import pydantic
import pytest

import gpt_batch_api
from gpt_batch_api.budget import Budget, SessionUsage, amounts_of
from gpt_batch_api.events import LIMIT_REACHED, EventBus
from gpt_batch_api.requester_options import RequesterOptions
from gpt_batch_api.requester_state import ALLOWED_MOVES, BatchState, BatchStatus, RequesterState

PACKAGE = Path(gpt_batch_api.__file__).parent
PARTS = ("budget.py", "remote.py", "processing.py", "direct_batches.py", "request_queue.py", "dryrun.py")


def test_no_mixin_classes_and_no_stub_base():
    names = []
    for module in pkgutil.walk_packages([str(PACKAGE)], "gpt_batch_api."):
        if ".simulator" in module.name or module.name.endswith("_demo"):
            continue
        tree = ast.parse(Path(importlib.util.find_spec(module.name).origin).read_text())
        names += [node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    assert "GPTRequester" in names
    assert [n for n in names if n.endswith("Mixin")] == []
    assert not (PACKAGE / "requester_base.py").exists()


def test_parts_reach_into_no_other_object_s_private_members():
    """A part uses only its own private members; what it needs from others comes in through its constructor."""
    reaches = []
    for name in PARTS:
        tree = ast.parse((PACKAGE / name).read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                reaches.append(f"{name}:{node.lineno} .{node.attr}")
    assert reaches == []


def _batch(status: BatchStatus, requests: int = 4) -> BatchState:
    return BatchState(
        id=1, status=status, num_requests=requests, tokens_input=100 * requests, tokens_output=10 * requests,
        cost=0.25 * requests, size=50 * requests, first_req_id=0, last_req_id=requests - 1, created_at=0.0,
    )  # fmt: skip


def _budget(state: RequesterState, events: EventBus | None = None, **options: object) -> tuple[Budget, SessionUsage]:
    opts = RequesterOptions.from_kwargs(dict(options))
    usage = SessionUsage()
    return Budget(opts.limits(), lambda: state, usage, events or EventBus(), opts.option_text), usage


def test_charge_counts_a_batch_once_by_its_kind_and_refund_undoes_it_exactly():
    state = RequesterState(endpoint="/v1/chat/completions")
    budget, usage = _budget(state)
    remote, direct = _batch(BatchStatus.REMOTE), _batch(BatchStatus.DIRECT, 3)
    budget.charge(remote)
    budget.charge(direct)
    totals = state.totals

    def counted() -> tuple[int, int, int, int]:
        return totals.pushed_requests, totals.pushed_tokens, totals.pushed_batches, totals.direct_batches

    assert counted() == (7, 700, 1, 1)
    assert totals.pushed_cost == 0.25 * 7
    assert (usage.pushed.requests, usage.pushed.tokens, usage.pushed.size) == (7, 700, 350)
    budget.refund(remote)
    budget.refund(direct)
    assert counted() == (0, 0, 0, 0)
    assert totals.pushed_cost == 0.0 and usage.pushed.requests == usage.pushed.tokens == usage.pushed.size == 0


def test_blocker_names_the_session_then_the_task_limit_and_says_it_once():
    state = RequesterState(endpoint="/v1/chat/completions")
    events = EventBus()
    seen: list[str] = []
    events.subscribe(lambda name, fields: seen.append(fields["message"]) if name == LIMIT_REACHED else None)
    budget, usage = _budget(state, events, max_session_requests=6, max_task_requests=10)
    batch = _batch(BatchStatus.LOCAL)
    assert budget.blocker(amounts_of(batch)) is None
    budget.charge(batch)
    assert budget.blocker(amounts_of(batch)) == "max_session_requests"  # 4 + 4 > 6
    usage.pushed.requests = 0  # a new session: the task's 4 stay counted
    state.totals.pushed_requests = 8
    assert budget.blocker(amounts_of(batch)) == "max_task_requests"
    budget.note_blocked("max_task_requests")
    budget.note_blocked("max_task_requests")
    assert seen == ["Not sending more requests for now: --max_task_requests 10 reached"]
    assert budget.last_block_reason == "max_task_requests"


def test_a_batch_makes_only_the_allowed_moves_and_a_refused_one_changes_nothing():
    allowed = {(a, b) for a, targets in ALLOWED_MOVES.items() for b in targets}
    # The life of a batch, including its ways back (congestion, damaged download, refusal, nothing created).
    assert allowed == {
        (BatchStatus.LOCAL, BatchStatus.PUSHING), (BatchStatus.LOCAL, BatchStatus.DIRECT),
        (BatchStatus.PUSHING, BatchStatus.REMOTE), (BatchStatus.PUSHING, BatchStatus.LOCAL),
        (BatchStatus.REMOTE, BatchStatus.FINISHED), (BatchStatus.REMOTE, BatchStatus.LOCAL),
        (BatchStatus.FINISHED, BatchStatus.REMOTE), (BatchStatus.FINISHED, BatchStatus.LOCAL),
    }  # fmt: skip
    for start, target in itertools.product(BatchStatus, repeat=2):
        batch = _batch(start)
        if (start, target) in allowed:
            batch.move_to(target)
            assert batch.status == target
            assert BatchState.model_validate(batch.model_dump(mode="json")).status == target
        else:
            with pytest.raises(RuntimeError, match=f"cannot move from {start} to {target}"):
                batch.move_to(target)
            assert batch.status == start


def test_a_plain_status_assignment_is_refused():
    batch = _batch(BatchStatus.REMOTE)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        batch.status = BatchStatus.LOCAL
    assert batch.status == BatchStatus.REMOTE
