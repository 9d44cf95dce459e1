"""RequestQueue: the requests committed but not yet in a batch (``<prefix>_queue_<gen>.jsonl``).

The queue file is append-only; the requester state's ``QueueState`` says which bytes of it are committed and
not yet cut into a batch ([start, end)) and keeps the running totals that the limits test. Appended records
become part of the queue only in the next commit: ``prepare_commit`` fsyncs them and moves ``end``; a crash
before that leaves bytes past ``end`` that the next load truncates. Once every committed record is in a batch
the file is rotated: the next generation starts empty and the old file is deleted in the same commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Unpack

from .errors import TaskFileError
from .limits import Amounts, Limits
from .queue_records import QueueRecord, QueueRecordFields, encode_queue_record, parse_queue_record
from .requester_state import QueueState
from .store.jsonl import corrupt_line_error
from .store.task_store import Appender, TaskStore

__all__ = ["RequestQueue"]

log = logging.getLogger(__name__)


class RequestQueue:
    """Append, read, take from the head and rotate the queue file; its totals live in ``QueueState``."""

    def __init__(
        self,
        *,
        path_of: Callable[[int], Path],
        state: Callable[[], QueueState],
        replace_state: Callable[[QueueState], None],
        delete_on_commit: Callable[[list[Path]], None],
        store: TaskStore,
    ) -> None:
        self._path_of = path_of  # queue file of a generation
        self._state = state  # the requester state is replaced on load: read the queue state through a getter
        self._replace_state = replace_state
        self._delete_on_commit = delete_on_commit
        self._store = store  # a dry run's keeps the appended records in memory only
        self._appender: Appender | None = None
        self._rotated = False

    @property
    def path(self) -> Path:
        return self._path_of(self._state().gen)

    def open(self, *, wiping: bool) -> None:
        """Open the queue file for appending, cutting bytes past the committed end (a crash before a commit).
        A damaged file is an error, unless ``wiping`` (--wipe_requests): then a fresh generation starts."""
        try:
            self._appender = self._store.appender(self.path, self._state().end)
        except TaskFileError as exc:
            if not wiping:
                raise
            log.warning("%s\nThe queue is wiped, as asked (--wipe_requests).", exc)
            self._delete_on_commit([self.path])
            self._replace_state(QueueState(gen=self._state().gen + 1))
            self._appender = self._store.appender(self.path, 0)

    def close(self) -> None:
        if self._appender is not None:
            self._appender.close()
            self._appender = None

    # ------------------------------------------------------------------ appending

    def record(self, line: bytes, **fields: Unpack[QueueRecordFields]) -> bytes:
        """The queue record of one request (its batch ``line`` without the newline), counted in the queue's
        totals; the caller appends it. New requests and retries both go through here."""
        queue = self._state()
        queue.num_requests += 1
        queue.tokens_input += fields["tokens_input"]
        queue.cost += fields["cost_batch"]
        queue.size += len(line) + 1
        return encode_queue_record(line, **fields)

    def append(self, records: list[bytes]) -> None:
        """Append records made by ``record``; they are committed with the next commit."""
        assert self._appender is not None
        self._appender.append_raw(b"".join(records))

    def enqueue(self, line: bytes, **fields: Unpack[QueueRecordFields]) -> None:
        """Append one request (a retry), committed with the caller's next commit."""
        self.append([self.record(line, **fields)])

    def wipe(self) -> None:
        """Forget every queued request (--wipe_requests): a fresh generation starts, the old file is deleted in
        the next commit."""
        old = self.path
        self._replace_state(QueueState(gen=self._state().gen + 1))
        if self._appender is not None:
            self.close()
            self._delete_on_commit([old])
            self._appender = self._store.appender(self.path, 0)

    # ------------------------------------------------------------------ reading and taking

    def records(self) -> Iterator[tuple[int, QueueRecord]]:
        """Committed records not yet in a batch, from the head, with their end offsets."""
        queue = self._state()
        yield from self._records_with_end(self.path, queue.start, queue.end)

    def _records_with_end(self, path: Path, start: int, end: int) -> Iterator[tuple[int, QueueRecord]]:
        for offset, raw in self._store.read_raw_lines(path, start, end):
            try:
                record = parse_queue_record(raw)
            except ValueError as exc:
                raise corrupt_line_error(path, offset, exc) from None
            yield offset + len(raw), record

    def fits_in_one_batch(self, limits: Limits) -> bool:
        """True if the whole queue fits in one batch (so it is not a full batch yet)."""
        queue = self._state()
        total = Amounts(queue.num_requests, queue.tokens_input, queue.cost, queue.size)
        return limits.batch.exceeded_by(total, limits.max_token_safety, limits.max_mb_safety) is None

    def take(self, records: list[QueueRecord], end: int) -> None:
        """Remove ``records`` (the head of the queue, up to offset ``end``) from the queue and from its totals,
        by what each one added to them."""
        queue = self._state()
        queue.num_requests -= len(records)
        queue.tokens_input -= sum(r.tokens_input for r in records)
        queue.cost -= sum(r.cost_batch for r in records)
        queue.size -= sum(r.size for r in records)
        queue.start = end

    # ------------------------------------------------------------------ commit

    def prepare_commit(self) -> None:
        """Before the transaction: make the appended records durable and count them in; rotate a consumed file
        (its deletion joins the same transaction)."""
        assert self._appender is not None
        queue = self._state()
        queue.end = self._appender.flush(fsync=True)
        self._rotated = queue.start == queue.end and queue.end > 0
        if self._rotated:
            self._delete_on_commit([self.path])
            queue.gen += 1
            queue.start = queue.end = 0

    def committed(self) -> None:
        """After the transaction: a rotated queue continues in its new, empty file."""
        if self._rotated:
            self.close()
            self._appender = self._store.appender(self.path, 0)
            self._rotated = False
