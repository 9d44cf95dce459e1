"""Check a task's files without changing any: ``python -m gpt_batch_api.verify --task_dir DIR --task_prefix P``.

Every file the committed state names is read the way a run reads it (the requester state, the queue, each
batch's files, the task state and its log, the output) and reported as intact, missing or damaged, with
the way out for each damaged one: which files ``--wipe_requests`` rebuilds (queue and batches: answered
samples are kept) and which need ``--wipe_task`` or a backup (task state and output). Nothing is deleted,
least of all paid answers. Exit status 0 if everything is intact, 1 otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from .batch_files import check_batch_file
from .errors import GPTBatchError
from .queue_records import parse_queue_record
from .requester_state import BatchStatus, RequesterState, load_state
from .store.atomic import read_json
from .store.jsonl import read_jsonl, read_raw_lines
from .store.layout import TaskLayout
from .task_state import TaskStateFiles

__all__ = ["Finding", "main", "verify_task"]

REBUILD_REQUESTS = "rerun with --wipe_requests: the queue and batches are rebuilt, answered samples are kept"
REBUILD_TASK = "restore it from a backup, or rerun with --wipe_task (forgets all progress and the output)"


@dataclasses.dataclass
class Finding:
    name: str  # a file name (or "task" for the whole)
    ok: bool
    detail: str
    fix: str = ""


def _first(exc: Exception) -> str:
    """The first sentence of an error message: what is wrong (our messages go on with the way out)."""
    return str(exc).split(". ")[0]


def _check(findings: list[Finding], name: str, fix: str, check: object) -> bool:
    try:
        detail = check() if callable(check) else str(check)
    except (GPTBatchError, OSError, ValueError, KeyError, TypeError) as exc:
        findings.append(Finding(name, False, _first(exc), fix))
        return False
    findings.append(Finding(name, True, str(detail)))
    return True


def verify_task(task_dir: str | os.PathLike[str], prefix: str) -> list[Finding]:
    """What is intact and what is not in the task ``prefix`` in ``task_dir`` (read-only)."""
    layout = TaskLayout(Path(task_dir), prefix)
    findings: list[Finding] = []
    own = layout.own_files()
    if not own:
        return [Finding("task", True, f"no files of task {prefix!r} in {task_dir}: a run starts it fresh")]
    if layout.journal.exists():
        findings.append(Finding(layout.journal.name, True, "a commit was interrupted: the next run completes it"))

    state = RequesterState()
    if layout.requester_state.exists():
        try:
            state = load_state(layout.requester_state)
            findings.append(Finding(layout.requester_state.name, True, "intact"))
        except GPTBatchError as exc:
            findings.append(Finding(layout.requester_state.name, False, _first(exc), REBUILD_REQUESTS))
    else:
        findings.append(Finding(layout.requester_state.name, False, "missing", REBUILD_REQUESTS))

    queue = layout.queue(state.queue.gen)
    if state.queue.end:

        def queue_lines() -> str:
            count = 0
            for _, raw in read_raw_lines(queue, state.queue.start, state.queue.end):
                parse_queue_record(raw)
                count += 1
            return f"intact: {count} queued requests"

        _check(findings, queue.name, REBUILD_REQUESTS, queue_lines)
    for batch in state.batches:
        input_path, info_path = layout.batch_input(batch.id), layout.batch_info(batch.id)

        def batch_lines(batch=batch, input_path=input_path, info_path=info_path) -> str:  # type: ignore[no-untyped-def]
            check_batch_file(layout, batch)  # what a run checks before sending any of it
            return f"intact: batch {batch.id} ({batch.status.value}, {batch.num_requests} requests)"

        _check(findings, input_path.name, REBUILD_REQUESTS, batch_lines)
        if batch.status in (BatchStatus.FINISHED, BatchStatus.DIRECT):
            results = layout.batch_results(batch.id)
            if results.exists():
                findings.append(Finding(results.name, True, "results on disk (a damaged line only costs a retry)"))

    if layout.task_state.exists():
        try:
            task_state = TaskStateFiles(layout.task_state).load()
            findings.append(Finding(layout.task_state.name, True, "intact (with its log)"))
            _verify_output(findings, layout, task_state.output)
        except GPTBatchError as exc:
            findings.append(Finding(layout.task_state.name, False, _first(exc), REBUILD_TASK))
    else:
        findings.append(Finding(layout.task_state.name, False, "missing", REBUILD_TASK))
    return findings


def _verify_output(findings: list[Finding], layout: TaskLayout, committed: dict | None) -> None:  # type: ignore[type-arg]
    if not committed:
        return
    folder = layout.task_dir
    for part in committed.get("parts") or []:
        path = folder / part["name"]

        def part_lines(path: Path = path, part: dict = part) -> str:  # type: ignore[type-arg]
            count = sum(1 for _ in read_jsonl(path, 0, part["size"]))
            if count != part["entries"]:
                raise ValueError(f"{path.name} has {count} entries, the task state says {part['entries']}")
            return f"intact: {count} output entries"

        _check(findings, path.name, REBUILD_TASK, part_lines)
    if committed.get("exists"):
        path = Path(f"{layout.output_base}.json")

        def output_object() -> str:
            if not isinstance(read_json(path, what="output"), dict):  # a dataclass or model is a JSON object
                raise ValueError(f"{path.name} does not hold a JSON object")
            return "intact"

        _check(findings, path.name, REBUILD_TASK, output_object)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpt_batch_api.verify", description=__doc__.split("\n")[0])
    parser.add_argument("--task_dir", required=True, help="Folder of the task's files")
    parser.add_argument("--task_prefix", required=True, help="Prefix of the task's files (e.g. char_codes)")
    args = parser.parse_args(argv)
    try:
        findings = verify_task(args.task_dir, args.task_prefix)
    except GPTBatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for finding in findings:
        mark = "ok     " if finding.ok else "DAMAGED"
        print(f"{mark} {finding.name}: {finding.detail}" + (f"\n        fix: {finding.fix}" if finding.fix else ""))
    bad = [f for f in findings if not f.ok]
    if not bad:
        print("Every file is intact.")
        return 0
    needs_task = any(f.fix == REBUILD_TASK for f in bad)
    print(
        f"{len(bad)} file(s) damaged. Nothing was changed. Way out: "
        + (REBUILD_TASK if needs_task else REBUILD_REQUESTS)
        + "."
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
