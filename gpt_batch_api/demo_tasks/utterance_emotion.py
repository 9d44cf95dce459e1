"""Demo task ``utterance_emotion``: label the emotion of short utterances by asking the model several times.

Each utterance gets between ``opinions_min`` and ``opinions_max`` opinions; an ``OpinionAdviser`` says
when the majority is clear (its share reaches ``confidence``) or the budget is spent. This shows a task
whose requests depend on earlier answers: ``generate_requests`` is called again after each result and
asks for more opinions only where needed. Output: one JSON line per utterance
(``utterance_emotion_output.jsonl``).
"""

from __future__ import annotations

import dataclasses
import json
from enum import StrEnum
from importlib import resources
from typing import Any

import pydantic

from ..opinion_adviser import OpinionAdviser
from ..output_files import DataclassListOutputFile
from ..request import CachedGPTRequest, GPTRequest
from ..results import BatchResult
from ..task_manager import TaskManager
from .payloads import structured_payload


class Emotion(StrEnum):
    joy = "joy"
    sadness = "sadness"
    anger = "anger"
    fear = "fear"
    surprise = "surprise"
    disgust = "disgust"
    neutral = "neutral"


class EmotionOpinion(pydantic.BaseModel):
    reasoning: str = pydantic.Field(description="One short sentence on the cues in the utterance")
    emotion: Emotion


@dataclasses.dataclass
class UtteranceEmotion:
    id: str
    text: str
    emotion: str | None  # the majority opinion (None: no usable opinion)
    clear: bool  # the majority reached the required confidence
    confidence: float
    opinions: list[str]


def load_utterances() -> list[dict[str, str]]:
    text = resources.files(__package__).joinpath("data/utterances.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class UtteranceEmotionTask(TaskManager[DataclassListOutputFile[UtteranceEmotion]]):
    DEFAULT_META = {
        "model": "gpt-4o-mini",
        "max_completion_tokens": 128,
        "completion_ratio": 0.5,
        "temperature": 0.9,
        "top_p": 1.0,
        "opinions_min": 3,
        "opinions_max": 5,
        "confidence": 0.78,
    }

    def __init__(
        self,
        task_dir: str,
        *,
        model: str | None = None,
        max_completion_tokens: int | None = None,
        completion_ratio: float | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        opinions_min: int | None = None,
        opinions_max: int | None = None,
        confidence: float | None = None,
        max_samples: int | None = None,
        **kwargs: Any,
    ):
        # Meta values left as None take the defaults on a new task and keep the stored ones on an existing task.
        given = {"model": model, "max_completion_tokens": max_completion_tokens,
                 "completion_ratio": completion_ratio, "temperature": temperature, "top_p": top_p,
                 "opinions_min": opinions_min, "opinions_max": opinions_max, "confidence": confidence}  # fmt: skip
        self.given_meta = {key: value for key, value in given.items() if value is not None}
        super().__init__(
            task_dir,
            kwargs.pop("name_prefix", "utterance_emotion"),
            DataclassListOutputFile.output_factory(UtteranceEmotion),
            init_meta={**self.DEFAULT_META, **self.given_meta},
            **kwargs,
        )
        self.utterances = load_utterances()[:max_samples]  # all of them unless a quick try asks for fewer

    def requested_meta(self) -> dict[str, Any]:
        return dict(self.given_meta)

    def on_task_enter(self) -> None:
        # The task's meta (not a flag's default) decides the cost predictions; --reinit_meta changes it.
        self.GR.set_assumed_completion_ratio(self.T.meta["completion_ratio"])

    @property
    def adviser(self) -> OpinionAdviser:
        meta = self.T.meta
        return OpinionAdviser(meta["opinions_min"], meta["opinions_max"], meta["confidence"])

    def _record(self, key: str) -> dict[str, Any]:
        """Per utterance in ``committed_meta``: requests committed, opinions received, failed requests."""
        record: dict[str, Any] = self.T.committed_meta.setdefault(key, {"asked": 0, "opinions": [], "failed": 0})
        return record

    def generate_requests(self) -> bool:
        meta, adviser, done = self.T.meta, self.adviser, True
        for utt in self.utterances:
            key = utt["id"]
            if key in self.T.succeeded_samples or key in self.T.failed_samples:
                continue
            done = False
            rec = self._record(key)
            pending = rec["asked"] - len(rec["opinions"]) - rec["failed"]
            for _ in range(adviser.num_more(rec["opinions"], rec["failed"], pending)):
                self.add_request(
                    GPTRequest(
                        payload=structured_payload(
                            self.GR.endpoint.path,
                            meta,
                            "Classify the main emotion of the utterance.",
                            f"Utterance: {utt['text']}",
                            EmotionOpinion,
                        ),
                        meta={"id": key},
                    )
                )
        if self.num_pooled_requests:
            self.commit_requests()
        return done

    def commit_cached_request(self, cached_req: CachedGPTRequest) -> None:
        key = cached_req.item.req.meta["id"]
        self._record(key)["asked"] += 1
        self.T.committed_samples[key] = self._record(key)["asked"]

    def process_batch_result(self, result: BatchResult) -> bool:
        touched = set()
        for info in result.infos.values():
            key = info.meta["id"]
            rec = self._record(key)
            parsed = info.resp_info.parsed if info.resp_info is not None else None
            if info.err_info is None and parsed and parsed[0] is not None:
                rec["opinions"].append(parsed[0].emotion.value)
            elif not info.retry:
                rec["failed"] += 1
            touched.add(key)
        written = False
        by_id = {u["id"]: u for u in self.utterances}
        for key in touched:
            rec = self._record(key)
            pending = rec["asked"] - len(rec["opinions"]) - rec["failed"]
            if not self.adviser.is_final(rec["opinions"], rec["failed"], pending):
                continue
            decision = self.adviser.decide(rec["opinions"])
            self.D.append(
                UtteranceEmotion(
                    key,
                    by_id[key]["text"],
                    None if decision.label is None else str(decision.label),
                    decision.clear,
                    round(decision.confidence, 3),
                    list(rec["opinions"]),
                )
            )
            self.T.responded_meta[key] = len(rec["opinions"])
            if decision.label is None:
                self.T.failed_samples[key] = "NoOpinion"
            else:
                self.T.succeeded_samples[key] = decision.label
            written = True
        return written

    def wipe_unfinished(self, wipe_failed: bool) -> bool:
        for key in list(self.T.committed_meta):
            if key in self.T.succeeded_samples or (key in self.T.failed_samples and not wipe_failed):
                continue
            self.T.committed_meta.pop(key)
            self.T.committed_samples.pop(key, None)
            self.T.failed_samples.pop(key, None)
            self.T.responded_meta.pop(key, None)
        return False
