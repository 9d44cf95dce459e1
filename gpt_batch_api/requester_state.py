"""The requester state (``<prefix>_state.json``): small, versioned, and free of per-request data.

Per-request data lives in the queue and batch files; this file holds counters, queue offsets and one
entry per batch, so saving it costs the same whether the task has a hundred requests or a million.
It is only ever written inside a transaction (see store/transaction.py), together with the task state.
"""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic

from .errors import TaskFileError
from .store.atomic import read_json
from .store.jsonl import WIPE_REQUESTS_FIX

__all__ = [
    "ALLOWED_MOVES",
    "BatchState",
    "BatchStatus",
    "QueueState",
    "RemoteInfo",
    "RequesterState",
    "Totals",
    "load_state",
]

STATE_VERSION = 3


class BatchStatus(enum.StrEnum):
    """Where a batch is in its life. Processed batches leave the state (their summary goes to history)."""

    LOCAL = "local"  # batch files written in the task dir; nothing sent yet
    PUSHING = "pushing"  # push started: an input file may be uploaded and a remote batch may exist
    REMOTE = "remote"  # the remote batch exists and has not finished
    FINISHED = "finished"  # the remote batch ended; its output and error files are downloaded locally
    DIRECT = "direct"  # run through the direct API; answers are appended to its results journal


# Every move a batch may make. Anything else is a bug in the engine: it is refused before it reaches the
# state file, where a wrong status would send requests twice (LOCAL while remote) or never (FINISHED unfetched).
ALLOWED_MOVES: dict[BatchStatus, frozenset[BatchStatus]] = {
    BatchStatus.LOCAL: frozenset({BatchStatus.PUSHING, BatchStatus.DIRECT}),  # push starts / --force_direct
    BatchStatus.PUSHING: frozenset({BatchStatus.REMOTE, BatchStatus.LOCAL}),  # created or adopted / nothing found
    # ended and downloaded / refused for congestion, or adopted by mistake (someone else's results)
    BatchStatus.REMOTE: frozenset({BatchStatus.FINISHED, BatchStatus.LOCAL}),
    # download found damaged: fetch again / every request refused for the same configuration error
    BatchStatus.FINISHED: frozenset({BatchStatus.REMOTE, BatchStatus.LOCAL}),
    BatchStatus.DIRECT: frozenset(),  # a direct batch stays direct until it is processed and leaves the state
}


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", validate_assignment=False)


class RemoteInfo(_Model):
    """What is known of a batch's remote side, in no provider's words (see backends/base.py ``RemoteBatch``)."""

    backend: str | None = None  # the BatchBackend's name
    batch_id: str | None = None
    status: str | None = None  # a RemoteStatus value, or "missing" (gone from the server)
    provider_status: str | None = None  # the provider's own word
    succeeded: int = 0
    failed: int = 0
    total: int = 0
    handles: dict[str, str] = {}  # opaque ids the backend needs later (OpenAI: its file ids)
    errors: list[str] = []  # why a failed batch was refused
    congested: bool = False  # refused for the provider's enqueued-token limit
    certain: bool = True  # False: adopted from circumstantial evidence (confirmed by its results)
    created_at: float | None = None
    finished_at: float | None = None
    # Where the batch was created: the backend's name and the API server (``server_identity``), committed
    # before the create call. None in states written before this was kept, or if the push failed before.
    sent_backend: str | None = None
    sent_server: str | None = None


class BatchState(_Model):
    id: int
    status: BatchStatus = pydantic.Field(frozen=True)  # changed only by move_to, which checks the move
    num_requests: int
    tokens_input: int
    tokens_output: int
    cost: float  # predicted, at batch or direct prices depending on the mode
    size: int  # bytes of the batch input file
    first_req_id: int
    last_req_id: int
    created_at: float
    push_started_at: float | None = None
    remote: RemoteInfo = RemoteInfo()
    # CRC-32 of the batch's input and info files as written (checked before anything of it is sent; None in
    # batches cut before version 3, whose files are checked by their line and key counts only).
    input_crc: int | None = None
    info_crc: int | None = None

    @property
    def direct(self) -> bool:
        return self.status == BatchStatus.DIRECT

    def move_to(self, status: BatchStatus) -> None:
        """Change the status if ``ALLOWED_MOVES`` permits it; raises RuntimeError (an engine bug) otherwise."""
        if status not in ALLOWED_MOVES[self.status]:
            raise RuntimeError(f"Batch {self.id} cannot move from {self.status} to {status} (a bug in gpt_batch_api)")
        self.__dict__["status"] = status  # the field is frozen against plain assignment


class QueueState(_Model):
    """The committed part of the queue file ``<prefix>_queue_<gen>.jsonl`` is bytes [start, end)."""

    gen: int = 0
    start: int = 0
    end: int = 0
    num_requests: int = 0
    tokens_input: int = 0
    cost: float = 0.0
    size: int = 0


class Totals(_Model):
    """Running totals over the whole task (session totals are kept in memory only)."""

    pushed_requests: int = 0  # requests sent to the remote or the direct API
    pushed_tokens: int = 0
    pushed_cost: float = 0.0
    pushed_batches: int = 0
    direct_batches: int = 0
    processed_requests: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    assumed_output_tokens: int = 0
    true_cost_batch: float = 0.0
    true_cost_direct: float = 0.0
    errors_by_type: dict[str, int] = pydantic.Field(default_factory=dict)  # error subtype -> results


class RequesterState(_Model):
    version: int = STATE_VERSION
    task_uid: str = pydantic.Field(default_factory=lambda: uuid.uuid4().hex)
    created_at: float = pydantic.Field(default_factory=time.time)
    endpoint: str = "/v1/chat/completions"
    next_request_id: int = 1
    next_batch_id: int = 1
    queue: QueueState = QueueState()
    batches: list[BatchState] = []
    totals: Totals = Totals()
    num_pass_failures: int = 0
    remote_cleanup: list[RemoteInfo] = []  # remote batches/files to delete (after the commit that made them garbage)
    history: list[dict[str, Any]] = []  # compact summaries of the last processed batches

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def batch(self, batch_id: int) -> BatchState:
        for batch in self.batches:
            if batch.id == batch_id:
                return batch
        raise KeyError(batch_id)

    def batches_in(self, *statuses: BatchStatus) -> list[BatchState]:
        return [b for b in self.batches if b.status in statuses]


_OPENAI_STATUSES = {  # version 1 kept OpenAI's words
    "validating": "pending",
    "in_progress": "running",
    "finalizing": "ending",
    "cancelling": "ending",
    "completed": "completed",
    "expired": "expired",
    "cancelled": "cancelled",
    "failed": "failed",
    "missing": "missing",
}


def _remote_v1_to_v2(old: dict[str, Any]) -> dict[str, Any]:
    handles = {key: old[key] for key in ("file_id", "output_file_id", "error_file_id") if old.get(key)}
    if "file_id" in handles:
        handles["input_file_id"] = handles.pop("file_id")
    status = old.get("status")
    errors = old.get("errors") or []
    return {
        "backend": "openai" if handles or old.get("batch_id") else None,
        "batch_id": old.get("batch_id"),
        "status": None if status is None else _OPENAI_STATUSES.get(status, "unknown"),
        "provider_status": status,
        "succeeded": old.get("completed", 0),
        "failed": old.get("failed", 0),
        "total": old.get("total", 0),
        "handles": handles,
        "errors": [f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict)],
        "congested": any(isinstance(e, dict) and e.get("code") == "token_limit_exceeded" for e in errors),
        "created_at": old.get("created_at"),
        "finished_at": old.get("finished_at"),
    }


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Version 2: the remote info is backend-neutral (backend name, neutral status, opaque handles)."""
    for batch in data.get("batches") or []:
        if isinstance(batch, dict) and isinstance(batch.get("remote"), dict):
            batch["remote"] = _remote_v1_to_v2(batch["remote"])
    data["remote_cleanup"] = [
        {"backend": "openai", "handles": {"file": file_id}}
        for file_id in data.get("remote_cleanup") or []
        if isinstance(file_id, str)
    ]
    data["version"] = 2
    return data


def _v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    """Version 3: each batch keeps the CRC-32 of its files (unknown for the batches cut before)."""
    for batch in data.get("batches") or []:
        if isinstance(batch, dict):
            batch.setdefault("input_crc", None)
            batch.setdefault("info_crc", None)
    data["version"] = 3
    return data


# One upgrade function per version bump: UPGRADES[n] turns a version-n document into version n + 1.
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2, 2: _v2_to_v3}


def load_state(path: Path) -> RequesterState:
    """Load and upgrade the requester state; raise TaskFileError (file untouched) if it is unusable."""
    data = read_json(path, what="requester state", fix=WIPE_REQUESTS_FIX)
    if not isinstance(data, dict) or not isinstance(data.get("version"), int):
        raise TaskFileError(
            f"{path} is not a requester state file (no version field). {_recover_hint(path)}", str(path)
        )
    version = data["version"]
    if version > STATE_VERSION:
        raise TaskFileError(
            f"{path} was written by a newer gpt_batch_api (state version {version}, this one reads up to "
            f"{STATE_VERSION}). Upgrade gpt_batch_api to continue this task.",
            str(path),
        )
    while version < STATE_VERSION:
        data = UPGRADES[version](data)
        version = data["version"]
    if missing := _missing_fields(data):
        raise TaskFileError(
            f"{path} lacks {', '.join(missing[:5])}: it was changed outside gpt_batch_api (a missing field would "
            f"silently reset request ids, the queue or the spending totals). {_recover_hint(path)}",
            str(path),
        )
    try:
        return RequesterState.model_validate(data)
    except pydantic.ValidationError as exc:
        raise TaskFileError(f"{path} is not a valid requester state: {exc}. {_recover_hint(path)}", str(path)) from exc


def _missing_fields(data: dict[str, Any]) -> list[str]:
    """The fields a committed state always holds but ``data`` lacks. Every field is written (``to_json``), so a
    new field needs a version bump and an upgrade function, not only a default."""
    missing = [name for name in RequesterState.model_fields if name not in data]
    for name, model in (("queue", QueueState), ("totals", Totals)):
        if isinstance(data.get(name), dict):
            missing += [f"{name}.{field}" for field in model.model_fields if field not in data[name]]
    batches = data.get("batches")
    for i, batch in enumerate(batches if isinstance(batches, list) else []):
        if isinstance(batch, dict):
            missing += [f"batches[{i}].{field}" for field in BatchState.model_fields if field not in batch]
    return missing


def _recover_hint(path: Path) -> str:
    return (
        "The file was not modified. Restore it from a backup, or start the requests afresh with --wipe_requests "
        "(answered samples are kept and unanswered ones are sent again; batches of this task still running on "
        "the server are not cancelled: cancel them on the provider's dashboard to avoid paying twice)."
    )
