"""gpt_batch_api: run large LLM jobs through OpenAI's Batch API, safely and restartably.

Public names are imported lazily (on first attribute access), so ``python -m gpt_batch_api.<tool> --help``
stays fast: the openai SDK, tiktoken and wandb load only when they are used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # type checkers see the real classes; at run time they load on first use (see __getattr__)
    from .costs import TokenCoster
    from .errors import (
        APIError,
        AuthenticationError,
        BatchAPIUnavailableError,
        ConfigError,
        GPTBatchError,
        LimitError,
        ProcessingError,
        QuotaExceededError,
        ServerRefusedError,
        StopRequested,
        TaskFileError,
        TaskLockedError,
    )
    from .gpt_requester import GPTRequester
    from .opinion_adviser import OpinionAdviser
    from .output_files import DataclassListOutputFile, DataclassOutputFile, TaskOutputFile
    from .request import GPTRequest
    from .requester_options import RequesterOptions
    from .results import BatchResult, ErrorInfo, ResponseInfo, ResultInfo
    from .task_manager import TaskManager
    from .task_state import TaskState, load_task_state
    from .tokens import TokenEstimator

_EXPORTS = {
    "APIError": "errors",
    "AuthenticationError": "errors",
    "BatchAPIUnavailableError": "errors",
    "BatchResult": "results",
    "ConfigError": "errors",
    "LimitError": "errors",
    "ProcessingError": "errors",
    "QuotaExceededError": "errors",
    "ServerRefusedError": "errors",
    "StopRequested": "errors",
    "TaskFileError": "errors",
    "TaskLockedError": "errors",
    "DataclassListOutputFile": "output_files",
    "DataclassOutputFile": "output_files",
    "ErrorInfo": "results",
    "GPTBatchError": "errors",
    "GPTRequest": "request",
    "GPTRequester": "gpt_requester",
    "RequesterOptions": "requester_options",
    "OpinionAdviser": "opinion_adviser",
    "ResponseInfo": "results",
    "ResultInfo": "results",
    "TaskManager": "task_manager",
    "TaskOutputFile": "output_files",
    "TaskState": "task_state",
    "TokenCoster": "costs",
    "TokenEstimator": "tokens",
    "load_task_state": "task_state",
}

__all__ = [
    "APIError",
    "AuthenticationError",
    "BatchAPIUnavailableError",
    "BatchResult",
    "ConfigError",
    "DataclassListOutputFile",
    "DataclassOutputFile",
    "ErrorInfo",
    "GPTBatchError",
    "GPTRequest",
    "GPTRequester",
    "LimitError",
    "OpinionAdviser",
    "ProcessingError",
    "QuotaExceededError",
    "RequesterOptions",
    "ResponseInfo",
    "ResultInfo",
    "ServerRefusedError",
    "StopRequested",
    "TaskFileError",
    "TaskLockedError",
    "TaskManager",
    "TaskOutputFile",
    "TaskState",
    "TokenCoster",
    "TokenEstimator",
    "__version__",
    "load_task_state",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gpt_batch_api' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
