"""Plausible answers for the demo tasks when they run on the simulator (``--simulate``).

The simulator calls ``demo_responder(endpoint, body)`` for each request; returning None lets it invent a
schema-valid answer. Answers here are mostly right, sometimes wrong, so the demo exercises retries
(wrong code points) and opinion voting (disagreeing opinions).
"""

from __future__ import annotations

import json
import random
import re
import unicodedata
from typing import Any

_CHAR = re.compile(r"of the character '(.+)'\.$", re.S)
_UTTERANCE = re.compile(r"^Utterance: (.*)$", re.S)


def _hints() -> dict[str, str]:
    from .utterance_emotion import load_utterances

    return {u["text"]: u["hint"] for u in load_utterances()}


_HINTS: dict[str, str] | None = None
_WRONG_GIVEN: set[str] = set()  # characters already answered wrongly once
EMOTIONS = ("joy", "sadness", "anger", "fear", "surprise", "disgust", "neutral")


def demo_responder(endpoint: str, body: dict[str, Any]) -> str | None:
    global _HINTS
    messages = body.get("messages") or []
    user = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), body.get("input"))
    if not isinstance(user, str):
        return None
    rng = random.Random()
    match = _CHAR.search(user)
    if match:
        char = match.group(1)
        # An occasional wrong answer, to be retried; at most one per character, so that with 1,140 characters
        # no sample runs out of retries (three wrong answers in a row) and fails the demo by chance.
        wrong = char not in _WRONG_GIVEN and rng.random() < 0.05
        if wrong:
            _WRONG_GIVEN.add(char)
        code = ord(char) + wrong
        name = unicodedata.name(char, "UNKNOWN CHARACTER")
        return json.dumps({"character": char, "code_point": f"U+{code:04X}", "name": name})
    match = _UTTERANCE.match(user)
    if match:
        if _HINTS is None:
            _HINTS = _hints()
        hint = _HINTS.get(match.group(1), "neutral")
        emotion = hint if rng.random() < 0.8 else rng.choice(EMOTIONS)
        return json.dumps({"reasoning": "Simulated reading of the utterance's cues.", "emotion": emotion})
    return None
