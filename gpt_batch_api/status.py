"""The compact status report printed by ``--no_run``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .requester_state import BatchStatus

if TYPE_CHECKING:
    from .task_manager import TaskManager

__all__ = ["status_report"]


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def status_report(task: TaskManager[Any]) -> str:
    """Samples by state, queue, batches, retries, failures, tokens and cost, and headroom under each limit."""
    T, gr = task.T, task.GR
    S, totals, limits = gr.S, gr.S.totals, gr.limits
    now = time.time()
    lines = [
        f"Task {gr.layout.prefix} in {gr.layout.task_dir}",
        "  meta: " + (", ".join(f"{key}={value!r}" for key, value in T.meta.items()) or "(empty)"),
        f"  samples: {len(T.committed_samples)} committed, {len(T.responded_meta)} responded, "
        f"{len(T.succeeded_samples)} succeeded, {len(T.failed_samples)} failed",
        f"  queue: {S.queue.num_requests} requests, {S.queue.tokens_input / 1000:.1f} ktokens, "
        f"predicted cost {S.queue.cost:.4f}",
    ]
    if S.batches:
        lines.append("  batches:")
    for batch in S.batches:
        remote = batch.remote
        detail = ""
        if batch.status in (BatchStatus.REMOTE, BatchStatus.FINISHED):
            detail = (
                f" remote {remote.batch_id} {remote.provider_status or remote.status}: "
                f"{remote.succeeded + remote.failed}/"
                f"{remote.total or batch.num_requests} done ({remote.failed} failed)"
            )
        lines.append(
            f"    #{batch.id} {batch.status.value}: {batch.num_requests} requests, "
            f"{batch.tokens_input / 1000:.1f} ktokens, cost {batch.cost:.4f}, age {_age(now - batch.created_at)}"
            + detail
        )
    true_cost = totals.true_cost_batch + totals.true_cost_direct
    lines += [
        f"  processed: {totals.processed_requests} requests, {totals.succeeded} ok, {totals.retried} retried, "
        f"{totals.failed} failed for good",
        "  errors by type: "
        + (", ".join(f"{k} {v}" for k, v in sorted(totals.errors_by_type.items(), key=lambda kv: -kv[1])) or "none"),
        f"  tokens: {totals.prompt_tokens} prompt ({totals.cached_tokens} cached), {totals.completion_tokens} "
        f"completion ({totals.reasoning_tokens} reasoning)",
        f"  cost: true {true_cost:.4f} (batch {totals.true_cost_batch:.4f}, direct {totals.true_cost_direct:.4f}), "
        f"predicted for everything pushed {totals.pushed_cost:.4f}",
        "  headroom (the totals above survive --wipe_task, so the task limits count every run's spending):",
        f"    task: {_left(limits.task.requests, totals.pushed_requests)} requests, "
        f"{_left(limits.task.ktokens, totals.pushed_tokens / 1000)} ktokens, "
        f"{_left(limits.task.cost, totals.pushed_cost)} cost",
        f"    session (a new run): {_left(limits.session.requests, 0)} requests, "
        f"{_left(limits.session.ktokens, 0)} ktokens, {_left(limits.session.cost, 0)} cost",
        f"    remote: {limits.max_remote_batches - len(S.batches_in(BatchStatus.REMOTE))} batches",
    ]
    return "\n".join(lines)


def _left(limit: float | None, used: float) -> str:
    if limit is None:
        return "unlimited"
    left = limit - used
    return f"{left:.0f}" if float(left).is_integer() else f"{left:.2f}"
