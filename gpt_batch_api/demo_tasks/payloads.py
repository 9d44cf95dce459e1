"""The demo tasks' request payload for the endpoint the task runs on (``--chat_endpoint``): chat completions
take ``messages`` and ``response_format``, the Responses API ``instructions``, ``input`` and ``text_format``,
Anthropic's Messages API ``system``, ``messages`` and ``max_tokens`` (the ``response_format`` becomes a forced
tool, see endpoints/messages.py)."""

from __future__ import annotations

from typing import Any

import pydantic

__all__ = ["structured_payload"]


def structured_payload(
    endpoint: str, meta: dict[str, Any], system: str, user: str, answer: type[pydantic.BaseModel]
) -> dict[str, Any]:
    """A request for one structured ``answer`` to ``user`` (with the ``system`` instructions) on ``endpoint``."""
    sampling = {"temperature": meta["temperature"], "top_p": meta["top_p"]}
    if endpoint == "/v1/responses":
        return {"model": meta["model"], "instructions": system, "input": user, "text_format": answer,
                "max_output_tokens": meta["max_completion_tokens"], **sampling}  # fmt: skip
    if endpoint == "/v1/messages":  # Claude takes temperature or top_p, not both
        return {"model": meta["model"], "system": system, "messages": [{"role": "user", "content": user}],
                "response_format": answer, "max_tokens": meta["max_completion_tokens"],
                "temperature": meta["temperature"]}  # fmt: skip
    return {
        "model": meta["model"],
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        "response_format": answer,
        "max_completion_tokens": meta["max_completion_tokens"],
        **sampling,
    }
