"""Input tokens of images, by OpenAI's two published rules, with the model table in one place.

* Tile rule (gpt-4o, gpt-4o-mini, o1, o3, gpt-4-turbo...): ``detail=low`` costs the base tokens; otherwise
  the image is fitted into 2048x2048, scaled so its shortest side is at most 768, and every 512-px tile
  costs the per-tile tokens, plus the base.
* Patch rule (gpt-4.1-mini, gpt-4.1-nano, o4-mini, gpt-5-mini...): the image is cut into 32-px patches;
  beyond a budget of 1536 patches it is scaled down to fit; tokens = patches x a per-model multiplier.

Image sizes are read from the header of a base64 data URL (PNG, GIF, WebP, JPEG), decoding only the
first kilobytes. Remote URLs are fetched only if allowed (with a timeout); else an assumed size is used
and a warning is given, because the count is then only an estimate.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import struct

__all__ = ["ImageRule", "image_rule_for_model", "image_size_from_bytes", "image_size_from_data_url", "image_tokens"]


@dataclasses.dataclass(frozen=True)
class ImageRule:
    kind: str  # "tile" or "patch"
    base: int = 0  # tile rule: tokens for the whole image (and for detail=low)
    per_tile: int = 0  # tile rule: tokens per 512-px tile
    multiplier: float = 1.0  # patch rule: tokens per 32-px patch
    patch_budget: int = 1536


# Longest matching prefix wins. Update here when OpenAI publishes new numbers.
IMAGE_RULES: dict[str, ImageRule] = {
    "gpt-4o-mini": ImageRule("tile", base=2833, per_tile=5667),
    "gpt-4o": ImageRule("tile", base=85, per_tile=170),
    "gpt-4.1-mini": ImageRule("patch", multiplier=1.62),
    "gpt-4.1-nano": ImageRule("patch", multiplier=2.46),
    "gpt-4.1": ImageRule("tile", base=85, per_tile=170),
    "gpt-4.5": ImageRule("tile", base=85, per_tile=170),
    "gpt-4-turbo": ImageRule("tile", base=85, per_tile=170),
    "gpt-5-mini": ImageRule("patch", multiplier=1.62),
    "gpt-5-nano": ImageRule("patch", multiplier=2.46),
    "gpt-5": ImageRule("tile", base=70, per_tile=140),
    "o4-mini": ImageRule("patch", multiplier=1.72),
    "o1": ImageRule("tile", base=75, per_tile=150),
    "o3": ImageRule("tile", base=75, per_tile=150),
    "computer-use-preview": ImageRule("tile", base=65, per_tile=129),
}
DEFAULT_RULE = IMAGE_RULES["gpt-4o"]


def image_rule_for_model(model: str) -> tuple[ImageRule, bool]:
    """``(rule, known)`` for a model name; unknown models use the gpt-4o rule."""
    best = max((prefix for prefix in IMAGE_RULES if model.startswith(prefix)), key=len, default=None)
    return (IMAGE_RULES[best], True) if best else (DEFAULT_RULE, False)


def image_tokens(width: int, height: int, detail: str, rule: ImageRule) -> int:
    if rule.kind == "patch":
        return _patch_tokens(width, height, rule)
    if detail == "low":
        return rule.base
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    tiles = math.ceil(w / 512) * math.ceil(h / 512)
    return rule.base + rule.per_tile * tiles


def _patch_tokens(width: int, height: int, rule: ImageRule) -> int:
    patches = math.ceil(width / 32) * math.ceil(height / 32)
    if patches > rule.patch_budget:
        ratio = math.sqrt(32 * 32 * rule.patch_budget / (width * height))
        ratio *= min(
            math.floor(width * ratio / 32) / (width * ratio / 32),
            math.floor(height * ratio / 32) / (height * ratio / 32),
        )
        patches = min(rule.patch_budget, math.ceil(width * ratio / 32) * math.ceil(height * ratio / 32))
    return math.ceil(patches * rule.multiplier)


def image_size_from_data_url(url: str, max_prefix: int = 65536) -> tuple[int, int] | None:
    """Width and height from a ``data:image/...;base64,`` URL, decoding only a prefix; None if unknown."""
    if not url.startswith("data:") or "," not in url[:200]:
        return None
    payload = url[url.index(",") + 1 :]
    prefix = payload[: max_prefix - max_prefix % 4]
    try:
        data = base64.b64decode(prefix, validate=False)
    except (binascii.Error, ValueError):
        return None
    size = image_size_from_bytes(data)
    if size is None and len(prefix) < len(payload):  # e.g. a JPEG with a large EXIF block before its SOF
        try:
            size = image_size_from_bytes(base64.b64decode(payload))
        except (binascii.Error, ValueError):
            return None
    return size


def image_size_from_bytes(data: bytes) -> tuple[int, int] | None:
    """Width and height from the first bytes of a PNG, GIF, WebP or JPEG file; None if not found."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8X":
            return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
        if chunk == b"VP8 ":
            w, h = struct.unpack("<HH", data[26:30])
            return w & 0x3FFF, h & 0x3FFF
        if chunk == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + length
    return None
