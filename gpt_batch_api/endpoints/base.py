"""The endpoint interface, and the lookup of pydantic classes named in queued requests."""

from __future__ import annotations

import abc
import dataclasses
import functools
import importlib
import re
import sys
from typing import TYPE_CHECKING, Any

import pydantic

from ..errors import ConfigError
from ..results import ErrorInfo

if TYPE_CHECKING:
    from ..tokens import InputTokens, TokenEstimator

__all__ = ["Endpoint", "ParseSpec", "ParsedBody", "class_spec", "resolve_class"]

ParseSpec = dict[str, str]  # {"module": ..., "qualname": ..., "alt_module": ...}: where the model class lives


@dataclasses.dataclass(slots=True)
class ParsedBody:
    """What an endpoint reads out of one successful (HTTP 200) response body."""

    parsed: list[Any] | None = None
    errors: list[ErrorInfo] = dataclasses.field(default_factory=list)
    warnings: list[ErrorInfo] = dataclasses.field(default_factory=list)


def retryable(subtype: str, msg: str) -> ErrorInfo:
    return ErrorInfo(fatal=False, type="ResponseError", subtype=subtype, msg=msg)


def warning(subtype: str, msg: str) -> ErrorInfo:
    return ErrorInfo(fatal=False, type="ResponseWarning", subtype=subtype, msg=msg)


@functools.lru_cache(maxsize=256)
def response_format_for(cls: type) -> Any:
    """The strict JSON-schema ``response_format`` for a pydantic model, built once per class.

    Building it (pydantic's ``model_json_schema`` through the SDK helper) costs about a millisecond; a task
    sends the same class with every request. The result is shared: treat it as read-only.
    """
    from openai.lib import type_to_response_format_param

    return type_to_response_format_param(cls)


def class_spec(cls: type) -> ParseSpec:
    """Where to find ``cls`` again in a later run, even if that run starts from another entry point."""
    spec = {"module": cls.__module__, "qualname": cls.__qualname__}
    if cls.__module__ == "__main__":
        main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if main_spec is not None and main_spec.name:
            spec["alt_module"] = main_spec.name  # run as `python -m pkg.mod`: importable as pkg.mod
    return spec


def _lookup(module_name: str, qualname: str) -> type | None:
    try:
        obj: Any = sys.modules.get(module_name) or importlib.import_module(module_name)
    except ImportError:
        return None
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, type) else None


_class_cache: dict[tuple[tuple[str, str], ...], type[pydantic.BaseModel]] = {}


def resolve_class(spec: ParseSpec) -> type[pydantic.BaseModel]:
    """Find the pydantic class named by ``spec``; raises ConfigError with the fix if it cannot be found."""
    key = tuple(sorted(spec.items()))
    if key in _class_cache:
        return _class_cache[key]
    qualname = spec["qualname"]
    candidates = [spec["module"], spec.get("alt_module", ""), "__main__"]
    if spec["module"] == "__main__" or spec.get("alt_module"):
        main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        candidates.append(main_spec.name if main_spec is not None else "")
    for name in filter(None, candidates):
        cls = _lookup(name, qualname)
        if cls is not None:
            _class_cache[key] = cls
            return cls
    raise ConfigError(
        f"The response_format class {qualname} (module {spec['module']}) of queued requests cannot be found. "
        "Run the task from the same code that created it (the class must be importable or defined in the "
        "script), or wipe the queued requests with --wipe_requests."
    )


# A whole answer in one Markdown code block, as local models that do not enforce response_format write it
_CODE_BLOCK = re.compile(r"\A\s*```[\w-]*[ \t]*\n(.*?)\n?[ \t]*```\s*\Z", re.DOTALL)


def parse_model(cls: type[pydantic.BaseModel], text: str | None) -> tuple[Any, ErrorInfo | None]:
    if text is None:
        return None, retryable("NoContent", "the response has no content to parse")
    try:
        return cls.model_validate_json(text), None
    except pydantic.ValidationError as exc:
        block = _CODE_BLOCK.match(text) if "```" in text else None
        if block is not None:  # the same JSON, in a code block: asking again would buy the same answer
            try:
                return cls.model_validate_json(block.group(1)), None
            except pydantic.ValidationError:
                pass
        return None, retryable("ParseError", f"the response does not match {cls.__name__}: {exc.errors()[:2]}")


def sdk_object(cls: Any, body: dict[str, Any]) -> Any:
    """``body`` as the SDK's type ``cls``: validated, or (for a compatible server's answer the SDK's types refuse,
    e.g. an unknown status or a missing id) built without validation, as the SDK itself builds what it receives.
    Task code reads this object: a ValidationError there would stop the task on an answer that was paid for."""
    try:
        return cls.model_validate(body)
    except pydantic.ValidationError:
        return cls.construct(**body)


class Endpoint(abc.ABC):
    """One API endpoint: body preparation, response reading, and SDK objects."""

    path: str

    @abc.abstractmethod
    def prepare(self, payload: dict[str, Any]) -> tuple[dict[str, Any], ParseSpec | None]:
        """Return the JSON body to send and, if structured output is requested, where its class lives."""

    @abc.abstractmethod
    def parse(self, body: dict[str, Any], num_outputs: int, spec: ParseSpec | None) -> ParsedBody:
        """Read a successful response body (``num_outputs``: what the request asked for, see ``num_outputs()``):
        parsed outputs, errors (retryable or fatal) and warnings."""

    @abc.abstractmethod
    def to_sdk_object(self, body: dict[str, Any], parsed: list[Any] | None) -> Any:
        """The body as the ``openai`` SDK's response type."""

    def num_outputs(self, payload: dict[str, Any]) -> int:
        """How many outputs one request asks for (e.g. chat ``n``)."""
        return 1

    def input_tokens(self, payload: dict[str, Any], estimator: TokenEstimator) -> InputTokens:
        """The predicted input tokens of one request: the endpoint picks the estimator's recipe for its shape."""
        return estimator.json_body(payload)

    def output_limit(self, payload: dict[str, Any]) -> int | None:
        """The most output tokens one request allows, all its outputs together (None: it sets no limit)."""
        limit = requested_output_limit(payload)
        return limit * self.num_outputs(payload) if limit is not None else None


def requested_output_limit(payload: dict[str, Any]) -> int | None:
    """The output token limit a request sets, whichever API's name it uses."""
    limit = payload.get("max_completion_tokens") or payload.get("max_tokens") or payload.get("max_output_tokens")
    return int(limit) if limit else None
