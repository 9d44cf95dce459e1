"""What the task sees for each answered (or failed) request, and how results are classified.

Every request of a finished batch gets one ``ResultInfo``: a response (``resp_info``), an error
(``err_info``, fatal or not), warnings, and ``retry`` (whether the requester will queue it again after
``TaskManager.process_batch_result`` returns; the task may change it, e.g. with ``request_retry``).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from .request import GPTRequestInfo, GPTRequestItem
from .result_bodies import ResultBodies

__all__ = ["BatchResult", "ErrorInfo", "ResponseInfo", "ResultInfo", "ResultKind", "ResultStats"]


class ResultKind(enum.StrEnum):
    SUCCESS = "success"  # a usable response, no warning
    WARNING = "warning"  # a usable response with warnings (e.g. finish_reason length on plain text)
    RETRYABLE = "retryable"  # an error a retry may fix (5xx, 429, expiry, missing line, parse failure)
    FATAL = "fatal"  # an error a retry is not expected to fix (400, invalid request)


@dataclasses.dataclass
class ErrorInfo:
    """An error or warning about one request. ``type`` groups (e.g. ``ResponseError``), ``subtype`` names it."""

    fatal: bool
    type: str
    subtype: str
    msg: str
    data: Any = None
    counts_as_retry: bool = True  # False for batch_expired / batch_cancelled: those retries are free

    def to_json(self) -> dict[str, Any]:
        return {"fatal": self.fatal, "type": self.type, "subtype": self.subtype, "msg": self.msg}


class ResponseInfo:
    """A response body as the API returned it, plus structured outputs parsed into the pydantic model.

    The body of a batch result may be read again from the batch's results file on use (see
    ``result_bodies``): take from it what you need inside ``process_batch_result``, and keep changes in your
    own objects rather than in the body.
    """

    def __init__(self, endpoint: str, body: dict[str, Any], parsed: list[Any] | None = None) -> None:
        self.endpoint = endpoint
        self.parsed = parsed  # per choice (chat) or per output (responses); None entries = not parsed
        self._body: dict[str, Any] | None = body
        self._payload: Any = None
        self._source: ResultBodies | None = None
        self._line: tuple[int, int] = (0, 0)  # offset and size of its line in the source

    def read_from(self, source: ResultBodies, offset: int, size: int) -> None:
        """The body can be read again from the line at ``offset`` of ``source`` (and may be dropped)."""
        self._source, self._line = source, (offset, size)
        source.hold(self, size)

    def drop_body(self) -> None:
        if self._source is not None:
            self._body = self._payload = None

    @property
    def body(self) -> dict[str, Any]:
        body = self._body
        if body is None:
            assert self._source is not None
            body = self._body = self._source.read(*self._line)
            self._source.hold(self, self._line[1])
        return body

    @body.setter
    def body(self, body: dict[str, Any]) -> None:
        self._body, self._payload, self._source = body, None, None  # the task's own body stays

    @property
    def model(self) -> str | None:
        return self.body.get("model")

    @property
    def usage(self) -> dict[str, Any]:
        return self.body.get("usage") or {}

    @property
    def payload(self) -> Any:
        """The body as an ``openai`` SDK object (built on first use, as it costs a validation)."""
        if self._payload is None:
            from .endpoints import get_endpoint

            self._payload = get_endpoint(self.endpoint).to_sdk_object(self.body, self.parsed)
        return self._payload

    def __repr__(self) -> str:
        held = "dropped" if self._body is None else repr(self._body)
        return f"ResponseInfo(endpoint={self.endpoint!r}, body={held}, parsed={self.parsed!r})"


@dataclasses.dataclass(slots=True)
class ResultInfo:
    """One request of a finished batch: its request, response, errors, warnings and retry decision."""

    item: GPTRequestItem
    req_info: GPTRequestInfo
    max_retries: int
    resp_info: ResponseInfo | None = None
    err_info: ErrorInfo | None = None
    warn_infos: list[ErrorInfo] = dataclasses.field(default_factory=list)
    retry: bool = False
    parse_spec: dict[str, str] | None = None  # where the structured output class lives (kept for a retry)

    @property
    def req_id(self) -> int:
        return self.item.id

    @property
    def meta(self) -> dict[str, Any]:
        """The request's ``meta`` as given to GPTRequest (an empty dict if it had none)."""
        return self.item.req.meta

    @property
    def retry_num(self) -> int:
        return self.item.req.retry_num

    @property
    def kind(self) -> ResultKind:
        if self.err_info is not None:
            return ResultKind.FATAL if self.err_info.fatal else ResultKind.RETRYABLE
        return ResultKind.WARNING if self.warn_infos else ResultKind.SUCCESS

    @property
    def retries_left(self) -> bool:
        """Whether a counted retry is still allowed (``retry_num < max_retries``)."""
        return self.retry_num < self.max_retries

    @property
    def next_retry_num(self) -> int:
        counts = self.err_info.counts_as_retry if self.err_info is not None else True
        return self.retry_num + 1 if counts else self.retry_num

    def request_retry(self, type: str, subtype: str, msg: str, *, fatal: bool = False) -> bool:
        """Mark this result as an error found by the task (e.g. a wrong answer) and retry it if allowed.

        Returns whether it will be retried.
        """
        self.err_info = ErrorInfo(fatal=fatal, type=type, subtype=subtype, msg=msg)
        self.retry = self.retries_left
        return self.retry


@dataclasses.dataclass
class ResultStats:
    """Counts and totals over one batch result."""

    num_requests: int = 0
    num_success: int = 0
    num_warnings: int = 0  # responses with at least one warning
    num_retryable: int = 0
    num_fatal: int = 0
    num_retries: int = 0  # requests queued again
    num_expired: int = 0  # free retries: batch_expired / batch_cancelled lines, results of a vanished batch
    num_missing: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    predicted_input_tokens: int = 0
    assumed_output_tokens: int = 0
    output_token_limit: int = 0  # sum of the requests' max_completion_tokens x choices (completion ratio = used/this)
    true_cost: float = 0.0
    predicted_cost: float = 0.0
    error_subtypes: dict[str, int] = dataclasses.field(default_factory=dict)
    warning_subtypes: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def pass_ratio(self) -> float:
        if self.num_requests == 0:
            return 1.0
        return (self.num_success + self.num_warnings + self.num_expired) / self.num_requests

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["pass_ratio"] = self.pass_ratio
        return data


@dataclasses.dataclass
class BatchResult:
    """A finished batch as handed to ``TaskManager.process_batch_result``."""

    batch_id: int
    direct: bool
    remote_status: str | None  # e.g. completed / expired / cancelled / failed (None for direct batches)
    infos: dict[int, ResultInfo]  # by request id, in request id order
    stats: ResultStats

    @property
    def info(self) -> dict[int, ResultInfo]:
        """Alias of ``infos`` (the name users of the reference library know)."""
        return self.infos
