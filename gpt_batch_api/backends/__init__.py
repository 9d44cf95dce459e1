"""Batch providers behind one seam (``BatchBackend``, see ``base``); provider SDKs are imported only here.

Adding a provider: a module here with a class that implements ``BatchBackend`` (each method's guarantees are
in its docstring), one entry in ``create_backend``, and one entry in tests/test_backends.py's ``BACKENDS``.
"""

from typing import Any

from .base import (
    BatchBackend,
    BatchTag,
    CandidatesUnresolved,
    DownloadSummary,
    ForeignResults,
    InputTokenCounter,
    RemoteBatch,
    RemoteStatus,
    TokenCounts,
)

__all__ = [
    "BatchBackend",
    "BatchTag",
    "CandidatesUnresolved",
    "DownloadSummary",
    "ForeignResults",
    "InputTokenCounter",
    "RemoteBatch",
    "RemoteStatus",
    "TokenCounts",
    "create_backend",
]


def create_backend(provider: str, **settings: Any) -> BatchBackend:
    """The backend named ``provider``; its SDK is imported only now (``anthropic`` is an optional extra)."""
    if provider == "anthropic":
        from .anthropic_backend import AnthropicBatchBackend

        return AnthropicBatchBackend(**settings)
    if provider == "openai":
        from .openai_backend import OpenAIBatchBackend

        return OpenAIBatchBackend(**settings)
    raise ValueError(f"unknown batch provider {provider!r}")
