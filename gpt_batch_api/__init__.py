"""gpt_batch_api: run large LLM jobs through OpenAI's Batch API, safely and restartably.

Public names are imported lazily (on first attribute access), so ``python -m gpt_batch_api.<tool> --help``
stays fast: the openai SDK, tiktoken and wandb load only when they are used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "BatchResult": "results",
    "DataclassListOutputFile": "output_files",
    "DataclassOutputFile": "output_files",
    "ErrorInfo": "results",
    "GPTBatchError": "errors",
    "GPTRequest": "request",
    "GPTRequester": "gpt_requester",
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

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gpt_batch_api' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
