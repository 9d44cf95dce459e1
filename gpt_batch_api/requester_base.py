"""What the parts of GPTRequester (remote batches, processing, direct batches) share, declared once.

GPTRequester is assembled from mixins kept in their own modules by responsibility. Each mixin derives from
``RequesterBase``, which tells the type checker which attributes GPTRequester sets and which methods the
mixins call on one another; at run time it adds nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backends import BatchBackend
    from .budget import Budget, SessionUsage
    from .costs import TokenCoster
    from .direct_batches import DirectRunner
    from .endpoints import Endpoint
    from .events import EventBus
    from .limits import Amounts, Limits
    from .requester_options import RequesterOptions
    from .requester_state import BatchState, RequesterState
    from .store.jsonl import JsonlAppender
    from .store.layout import TaskLayout
    from .tokens import TokenEstimator

__all__ = ["RequesterBase"]


class RequesterBase:
    if TYPE_CHECKING:
        S: RequesterState
        opts: RequesterOptions
        layout: TaskLayout
        limits: Limits
        endpoint: Endpoint
        coster: TokenCoster
        estimator: TokenEstimator
        events: EventBus
        dryrun: bool
        usage: SessionUsage
        budget: Budget
        direct_runner: DirectRunner
        congested_since: float | None
        congestion_tokens: int | None
        stop_check: Callable[[], bool]
        interruptible: Callable[[], AbstractContextManager[Any]]
        _queue: JsonlAppender | None

        @property
        def client(self) -> Any: ...

        def commit(self, *, with_task: bool = False) -> None: ...

        def queue_line(
            self,
            line: bytes,
            *,
            req_id: int,
            retry_num: int,
            tokens_input: int,
            tokens_output: int,
            cost_batch: float,
            cost_direct: float,
            parse: dict[str, str] | None,
            num_outputs: int,
            meta: dict[str, Any],
        ) -> bytes: ...

        # Defined by one mixin, called by another:
        def spend_blocker(self, this: Amounts, *, remote: Amounts | None = None) -> str | None: ...

        def note_blocked(self, reason: str | None) -> None: ...

        def cleanup_remote(self) -> None: ...

        def unpush(self, batch: BatchState, *, keep_remote: bool = False) -> None: ...

        @property
        def backend(self) -> BatchBackend: ...

        @property
        def api_base_url(self) -> str: ...
