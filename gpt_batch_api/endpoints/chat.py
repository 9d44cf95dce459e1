"""``/v1/chat/completions``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pydantic

from .base import (
    Endpoint,
    ParsedBody,
    ParseSpec,
    class_spec,
    parse_model,
    resolve_class,
    response_format_for,
    retryable,
    sdk_object,
    warning,
)

if TYPE_CHECKING:
    from ..tokens import InputTokens, TokenEstimator


def _is_model_class(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, pydantic.BaseModel)


class ChatCompletionsEndpoint(Endpoint):
    path = "/v1/chat/completions"

    def prepare(self, payload: dict[str, Any]) -> tuple[dict[str, Any], ParseSpec | None]:
        response_format = payload.get("response_format")
        if not isinstance(response_format, type) or not _is_model_class(response_format):
            return payload, None
        body = dict(payload)
        body["response_format"] = response_format_for(response_format)
        return body, class_spec(response_format)

    def num_outputs(self, payload: dict[str, Any]) -> int:
        return int(payload.get("n") or 1)

    def input_tokens(self, payload: dict[str, Any], estimator: TokenEstimator) -> InputTokens:
        return estimator.chat(payload)

    def parse(self, body: dict[str, Any], num_outputs: int, spec: ParseSpec | None) -> ParsedBody:
        result = ParsedBody()
        choices = body.get("choices") or []
        error = body.get("error")
        if not choices and error:  # a gateway's error sent with HTTP 200 (LiteLLM, homemade proxies): say which
            message = error.get("message", error) if isinstance(error, dict) else error
            why = f"the server answered HTTP 200 with an error: {message!s:.300}"
            result.errors.append(retryable("ErrorBody", why))
            result.parsed = [] if spec is not None else None
            return result
        if not isinstance(choices, list) or not all(isinstance(choice, dict) for choice in choices):
            # A server's or a proxy's own shape (vLLM, llama.cpp, gateways): not a chat completion
            result.errors.append(retryable("MalformedBody", f"the choices are not a list of objects: {choices!r:.200}"))
            result.parsed = [] if spec is not None else None
            return result
        expected = num_outputs
        if len(choices) != expected:
            result.errors.append(retryable("ChoicesMismatch", f"expected {expected} choices, got {len(choices)}"))
        cls = resolve_class(spec) if spec is not None else None
        parsed: list[Any] = []
        for index, choice in enumerate(choices):
            message = choice.get("message")
            if not isinstance(message, dict):
                message = {}
            finish = choice.get("finish_reason")
            where = f"choice {index}"
            if message.get("refusal"):
                result.errors.append(retryable("Refusal", f"{where}: the model refused: {message['refusal']}"))
            if finish == "content_filter":
                result.errors.append(retryable("ContentFilter", f"{where}: stopped by the content filter"))
            elif finish == "length":
                if cls is not None:
                    result.errors.append(retryable("FinishLength", f"{where}: output cut at max tokens"))
                else:
                    result.warnings.append(warning("FinishLength", f"{where}: output cut at max tokens"))
            if cls is None:
                continue
            value, error = (None, None) if result.errors else parse_model(cls, message_text(message.get("content")))
            if error is not None:
                result.errors.append(error)
            parsed.append(value)
        if cls is not None:
            result.parsed = parsed
        return result

    def to_sdk_object(self, body: dict[str, Any], parsed: list[Any] | None) -> Any:
        # Imported on first use: openai takes about a second to import, which a direct run need not wait for.
        from openai.types.chat import ChatCompletion, ParsedChatCompletion

        cls: Any = ChatCompletion if parsed is None else ParsedChatCompletion[Any]
        body = _with_text_contents(body)
        completion = sdk_object(cls, body)  # (finish_reason "abort" or null, no id: see sdk_object)
        if parsed is None:
            return completion
        for choice, value in zip(completion.choices, parsed, strict=False):
            choice.message.parsed = value
        return completion


def message_text(content: Any) -> str | None:
    """A message's text: its content, or the text parts of a content sent as a list of parts (servers such as
    Mistral's and gateways in front of them send ``[{"type": "thinking", ...}, {"type": "text", "text": ...}]``)."""
    if isinstance(content, str) or content is None:
        return content
    if not isinstance(content, list):
        return None
    texts: list[str] = []
    for part in content:
        text = part.get("text") if isinstance(part, dict) and part.get("type") == "text" else part
        if isinstance(text, str):
            texts.append(text)
    return "".join(texts) if texts else None


def _with_text_contents(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with each message content that is a list of parts given as its text (the SDK's type is a string,
    which is what a task reads); the body itself is not changed."""
    choices = body.get("choices")
    if not isinstance(choices, list) or not any(
        isinstance(choice, dict)
        and isinstance(choice.get("message"), dict)
        and isinstance(choice["message"].get("content"), list)
        for choice in choices
    ):
        return body
    copied = []
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and isinstance(message.get("content"), list):
            choice = {**choice, "message": {**message, "content": message_text(message["content"])}}
        copied.append(choice)
    return {**body, "choices": copied}
