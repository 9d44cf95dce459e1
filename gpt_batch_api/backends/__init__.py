"""Batch providers behind one seam (``BatchBackend``, see ``base``); provider SDKs are imported only here."""

from .base import (
    BatchBackend,
    BatchTag,
    CandidatesUnresolved,
    DownloadSummary,
    ForeignResults,
    RemoteBatch,
    RemoteStatus,
)

__all__ = [
    "BatchBackend",
    "BatchTag",
    "CandidatesUnresolved",
    "DownloadSummary",
    "ForeignResults",
    "RemoteBatch",
    "RemoteStatus",
]
