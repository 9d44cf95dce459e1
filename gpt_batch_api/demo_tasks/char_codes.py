"""Demo task ``char_codes``: for each character of a fixed set, ask for its Unicode code point and name.

One request per character, with a structured output. An answer whose code point is not the character's
is rejected and retried (``info.request_retry``), which shows how a task checks answers. The output is
one JSON document (``char_codes_output.json``) mapping each character to what the model said.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from typing import Any

import pydantic

from ..output_files import DataclassOutputFile
from ..request import CachedGPTRequest, GPTRequest
from ..results import BatchResult
from ..task_manager import TaskManager
from .payloads import structured_payload

# Letters, digits, punctuation and a few non-ASCII characters with well-known names.
CHARACTERS = "".join(chr(c) for c in range(0x21, 0x7F)) + "£€¥©®°±µ¶·¿ÄÖÜßàçéñøΩπ→∞≈≠≤≥★♥✓"


class CharAnswer(pydantic.BaseModel):
    character: str = pydantic.Field(description="The character itself")
    code_point: str = pydantic.Field(description="Its Unicode code point, formatted like U+0041")
    name: str = pydantic.Field(description="Its official Unicode name, e.g. LATIN CAPITAL LETTER A")


@dataclasses.dataclass
class CharInfo:
    code_point: str
    name: str
    name_correct: bool  # the model's name equals unicodedata's
    retry_num: int


@dataclasses.dataclass
class CharCodesOutput:
    chars: dict[str, CharInfo] = dataclasses.field(default_factory=dict)


def code_point(char: str) -> str:
    return f"U+{ord(char):04X}"


def prompt_for(char: str) -> str:
    return f"Give the Unicode code point and the official Unicode name of the character '{char}'."


class CharCodesTask(TaskManager):
    D: DataclassOutputFile[CharCodesOutput]

    def __init__(
        self,
        task_dir: str,
        *,
        model: str = "gpt-4o-mini",
        max_completion_tokens: int = 96,
        completion_ratio: float = 0.5,
        temperature: float = 0.2,
        top_p: float = 1.0,
        **kwargs: Any,
    ):
        kwargs.setdefault("assumed_completion_ratio", completion_ratio)
        super().__init__(
            task_dir,
            kwargs.pop("name_prefix", "char_codes"),
            DataclassOutputFile.output_factory(CharCodesOutput),
            init_meta={
                "model": model,
                "max_completion_tokens": max_completion_tokens,
                "completion_ratio": completion_ratio,
                "temperature": temperature,
                "top_p": top_p,
            },
            **kwargs,
        )

    def generate_requests(self) -> bool:
        meta = self.T.meta
        for char in CHARACTERS:
            if char in self.T.committed_samples:
                continue
            self.add_request(
                GPTRequest(
                    payload=structured_payload(
                        self.GR.endpoint.path,
                        meta,
                        "You are an expert on Unicode. Answer precisely.",
                        prompt_for(char),
                        CharAnswer,
                    ),
                    meta={"char": char},
                )
            )
            if len(self.GR.P) >= 50 and self.commit_requests():
                return False
        if self.GR.P:
            self.commit_requests()
        return True

    def commit_cached_request(self, cached_req: CachedGPTRequest) -> None:
        self.T.committed_samples[cached_req.item.req.meta["char"]] = cached_req.item.id

    def process_batch_result(self, result: BatchResult) -> bool:
        output = self.D.data or CharCodesOutput()
        written = False
        for info in result.infos.values():
            char = info.meta["char"]
            parsed = info.resp_info.parsed if info.resp_info is not None else None
            answer = parsed[0] if info.err_info is None and parsed else None
            if answer is not None and answer.code_point.upper() != code_point(char):
                info.request_retry(
                    "TaskSpecific", "WrongCodePoint", f"{char!r} is {code_point(char)}, not {answer.code_point}"
                )
                answer = None
            if answer is not None:
                true_name = unicodedata.name(char, "")
                output.chars[char] = CharInfo(
                    answer.code_point.upper(), answer.name, answer.name.upper() == true_name, info.retry_num
                )
                self.T.succeeded_samples[char] = info.retry_num
                self.T.failed_samples.pop(char, None)
                written = True
            elif not info.retry:
                self.T.failed_samples[char] = info.err_info.subtype if info.err_info else "NoAnswer"
            self.T.responded_meta[char] = info.retry_num
        if written:
            self.D.set(output)
        return written

    def wipe_unfinished(self, wipe_failed: bool) -> bool:
        for char in list(self.T.committed_samples):
            if char in self.T.succeeded_samples or (char in self.T.failed_samples and not wipe_failed):
                continue
            del self.T.committed_samples[char]
            self.T.failed_samples.pop(char, None)
            self.T.responded_meta.pop(char, None)
        return False
