"""Turn one result line (Batch API output/error line, or a direct call recorded in that shape) into a ResultInfo.

Rules: HTTP 200 bodies are read by the endpoint (refusals, finish reasons, parse failures, choice counts);
error answers are read by ``error_kinds.error_kind`` (status, type, code and message): rate limits, 408/409/
5xx and transport errors are retryable, other 4xx are fatal (``same_refusal`` turns one identical refusal of
every request of a batch into a configuration error instead, see there); ``batch_expired`` and
``batch_cancelled`` are retryable without counting towards ``max_retries``; a missing or malformed line is
a retryable error for that request only, never for the whole batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .endpoints import Endpoint
from .error_kinds import ErrorKind, error_fields, error_kind
from .errors import GPTBatchError
from .request import GPTRequestInfo, GPTRequestItem
from .results import ErrorInfo, ResponseInfo, ResultInfo

__all__ = ["FREE_RETRY_CODES", "classify", "same_refusal"]

FREE_RETRY_CODES = frozenset({"batch_expired", "batch_cancelled"})


def _error_message(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return f"{error.get('code') or error.get('type') or 'error'}: {error.get('message', '')}"
    return str(body)[:200]


def classify(
    line: dict[str, Any] | None,
    item: GPTRequestItem,
    req_info: GPTRequestInfo,
    num_outputs: int,
    endpoint: Endpoint,
    spec: dict[str, str] | None,
    *,
    max_retries: int,
    retry_fatal: bool,
    missing_is_free: bool = False,
) -> ResultInfo:
    """Classify one request's result line and decide whether it will be retried."""
    info = ResultInfo(item=item, req_info=req_info, max_retries=max_retries)
    if line is None:
        info.err_info = ErrorInfo(
            fatal=False,
            type="BatchError",
            subtype="MissingResult",
            msg="the batch returned no result for this request",
            counts_as_retry=not missing_is_free,
        )
    elif not isinstance(line, dict) or "custom_id" not in line:
        info.err_info = ErrorInfo(False, "BatchError", "MalformedLine", "the result line is not valid JSON")
    elif line.get("error"):
        error = line["error"]
        code = str(error.get("code") or "unknown") if isinstance(error, dict) else "unknown"
        message = error.get("message", "") if isinstance(error, dict) else str(error)
        info.err_info = ErrorInfo(
            fatal=False,
            type="BatchError",
            subtype=code,
            msg=message or code,
            counts_as_retry=code not in FREE_RETRY_CODES,
        )
    else:
        _classify_response(info, line.get("response") or {}, num_outputs, endpoint, spec)
    if info.err_info is not None:
        allowed = info.retries_left or not info.err_info.counts_as_retry
        info.retry = allowed and (retry_fatal or not info.err_info.fatal)
    return info


def _classify_response(
    info: ResultInfo,
    response: dict[str, Any],
    num_outputs: int,
    endpoint: Endpoint,
    spec: dict[str, str] | None,
) -> None:
    status = response.get("status_code")
    body = response.get("body")
    if status == 200 and isinstance(body, dict):
        try:
            parsed = endpoint.parse(body, num_outputs, spec)
        except GPTBatchError:
            raise
        except (AttributeError, TypeError, KeyError, IndexError, ValueError) as exc:
            # A body in another shape than the endpoint's (a proxy's, a local server's): retried like a cut body,
            # rather than stopping the processing of the batch, and of every later run, on the same line
            why = f"the response body is not a {endpoint.path} answer ({type(exc).__name__}: {exc})"
            info.resp_info = ResponseInfo(endpoint=endpoint.path, body=body)  # its usage is still paid for
            info.err_info = ErrorInfo(False, "ResponseError", "MalformedBody", why)
            return
        info.resp_info = ResponseInfo(endpoint=endpoint.path, body=body, parsed=parsed.parsed)
        info.warn_infos = parsed.warnings
        if parsed.errors:
            info.err_info = parsed.errors[0]
            info.err_info.data = [e.to_json() for e in parsed.errors[1:]] or None
        return
    if status == 200:
        info.err_info = ErrorInfo(False, "ResponseError", "MalformedBody", "the response body is not a JSON object")
        return
    kind = error_kind(status if isinstance(status, int) else None, body)
    fatal = kind not in (ErrorKind.RATE_LIMIT, ErrorKind.SERVER)
    type_, code, _ = error_fields(body)
    info.err_info = ErrorInfo(
        fatal,
        "ResponseError",
        f"HTTP{status}",
        _error_message(body),
        data={"status": status, "kind": kind.value, "type": type_, "code": code, "body": body},
    )


def same_refusal(infos: Iterable[ResultInfo]) -> ErrorInfo | None:
    """The refusal that every request of a batch got, if they all got the same one (else None).

    One identical 4xx for every request says the server refuses the configuration (URL, key, model, a
    gateway's settings), not the requests: a 401/403/404 or a quota error even for a single request, any
    other 4xx for two requests or more. Rate limits and server errors never count: they pass.
    """
    errors = [info.err_info for info in infos]
    first = errors[0] if errors else None
    if first is None or not isinstance(first.data, dict) or "kind" not in first.data:
        return None
    signature = (first.data["status"], first.data["type"], first.data["code"])
    for err in errors:
        data = err.data if err is not None else None
        if not isinstance(data, dict) or (data.get("status"), data.get("type"), data.get("code")) != signature:
            return None
    kind = ErrorKind(first.data["kind"])
    status = first.data["status"]
    if kind in (ErrorKind.RATE_LIMIT, ErrorKind.SERVER) or not isinstance(status, int) or not 400 <= status < 500:
        return None
    if kind == ErrorKind.REQUEST and len(errors) < 2:
        return None
    return first
