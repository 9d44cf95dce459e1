"""Turn one result line (Batch API output/error line, or a direct call recorded in that shape) into a ResultInfo.

Rules: HTTP 200 bodies are read by the endpoint (refusals, finish reasons, parse failures, choice counts);
408/409/429/5xx and transport errors are retryable; other 4xx are fatal; ``batch_expired`` and
``batch_cancelled`` are retryable without counting towards ``max_retries``; a missing or malformed line is
a retryable error for that request only, never for the whole batch.
"""

from __future__ import annotations

from typing import Any

from .endpoints import Endpoint
from .request import GPTRequestInfo, GPTRequestItem
from .results import ErrorInfo, ResponseInfo, ResultInfo

__all__ = ["FREE_RETRY_CODES", "classify"]

FREE_RETRY_CODES = frozenset({"batch_expired", "batch_cancelled"})
RETRYABLE_STATUS = frozenset({408, 409, 429})


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
        parsed = endpoint.parse(body, num_outputs, spec)
        info.resp_info = ResponseInfo(endpoint=endpoint.path, body=body, parsed=parsed.parsed)
        info.warn_infos = parsed.warnings
        if parsed.errors:
            info.err_info = parsed.errors[0]
            info.err_info.data = [e.to_json() for e in parsed.errors[1:]] or None
        return
    if status == 200:
        info.err_info = ErrorInfo(False, "ResponseError", "MalformedBody", "the response body is not a JSON object")
        return
    fatal = not (status in RETRYABLE_STATUS or (isinstance(status, int) and status >= 500))
    info.err_info = ErrorInfo(fatal, "ResponseError", f"HTTP{status}", _error_message(body))
