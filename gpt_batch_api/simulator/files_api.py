"""The Files API: upload (multipart), retrieve, content, delete and list, kept in memory."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from .common import ApiError, new_id

__all__ = ["FileStore", "StoredFile", "parse_multipart"]

MAX_UPLOAD_BYTES = 512 * 1024 * 1024  # OpenAI's per-file limit
PURPOSES = ("batch", "batch_output", "assistants", "fine-tune", "vision", "user_data", "evals")


@dataclasses.dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            # batch input and output files expire after 30 days, as OpenAI's do by default
            "expires_at": self.created_at + 30 * 86400 if self.purpose in ("batch", "batch_output") else None,
        }


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Parse a multipart/form-data body into ``{field: (filename or None, value bytes)}``."""
    boundary = None
    for piece in content_type.split(";")[1:]:
        key, _, setting = piece.strip().partition("=")
        if key.lower() == "boundary":
            boundary = setting.strip('"')
    if not content_type.lower().startswith("multipart/form-data") or not boundary:
        raise ApiError(400, "Expected a multipart/form-data body with a boundary (upload the file as a form).")
    fields: dict[str, tuple[str | None, bytes]] = {}
    delimiter = b"--" + boundary.encode()
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, _, value = part.partition(b"\r\n\r\n")
        if value.endswith(b"\r\n"):
            value = value[:-2]
        name, filename = None, None
        for line in head.decode("utf-8", "replace").split("\r\n"):
            if line.lower().startswith("content-disposition:"):
                for item in line.split(";")[1:]:
                    key, _, raw = item.strip().partition("=")
                    if key == "name":
                        name = raw.strip('"')
                    elif key == "filename":
                        filename = raw.strip('"')
        if name is not None:
            fields[name] = (filename, value)
    return fields


class FileStore:
    """Files by id, in creation order. The caller holds the simulator's lock around every method."""

    def __init__(self) -> None:
        self.files: dict[str, StoredFile] = {}

    def add(self, filename: str, purpose: str, data: bytes) -> StoredFile:
        stored = StoredFile(new_id("file-"), filename, purpose, data, int(time.time()))
        self.files[stored.id] = stored
        return stored

    def upload(self, content_type: str, body: bytes) -> dict[str, Any]:
        fields = parse_multipart(content_type, body)
        if "file" not in fields:
            raise ApiError(400, "Missing required parameter: 'file'.", param="file", code="missing_required_parameter")
        purpose = fields.get("purpose", (None, b""))[1].decode()
        if not purpose:
            raise ApiError(
                400, "Missing required parameter: 'purpose'.", param="purpose", code="missing_required_parameter"
            )
        if purpose not in PURPOSES:
            raise ApiError(400, f"'{purpose}' is not one of {list(PURPOSES)} - 'purpose'", param="purpose")
        filename, data = fields["file"]
        if len(data) > MAX_UPLOAD_BYTES:
            raise ApiError(413, f"File is too large ({len(data)} bytes); the limit is {MAX_UPLOAD_BYTES} bytes.")
        return self.add(filename or "upload", purpose, data).to_api()

    def get(self, file_id: str) -> StoredFile:
        stored = self.files.get(file_id)
        if stored is None:
            raise ApiError(404, f"No such File object: {file_id}", param="id")
        return stored

    def delete(self, file_id: str) -> dict[str, Any]:
        self.get(file_id)
        del self.files[file_id]
        return {"id": file_id, "object": "file", "deleted": True}

    def list(self, query: dict[str, str]) -> dict[str, Any]:
        items = list(self.files.values())
        if query.get("purpose"):
            items = [f for f in items if f.purpose == query["purpose"]]
        if query.get("order", "desc") == "desc":
            items.reverse()
        page, has_more = paginate(items, query, default_limit=10_000, max_limit=10_000)
        return {
            "object": "list",
            "data": [f.to_api() for f in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": has_more,
        }


def paginate(items: list[Any], query: dict[str, str], default_limit: int, max_limit: int) -> tuple[list[Any], bool]:
    """The page after the item whose id is ``query['after']`` (if any), of at most ``query['limit']`` items."""
    try:
        limit = int(query.get("limit", default_limit))
    except ValueError:
        raise ApiError(400, f"Invalid 'limit': expected an integer, got {query['limit']!r}.", param="limit") from None
    if not 1 <= limit <= max_limit:
        raise ApiError(400, f"Invalid 'limit': must be from 1 to {max_limit}, got {limit}.", param="limit")
    after = query.get("after")
    if after:
        ids = [item.id for item in items]
        if after not in ids:
            raise ApiError(400, f"Invalid 'after': no object with id {after!r} in this list.", param="after")
        items = items[ids.index(after) + 1 :]
    return items[:limit], len(items) > limit
