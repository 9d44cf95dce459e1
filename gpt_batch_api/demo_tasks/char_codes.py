"""Demo task ``char_codes``: for each printable character of nine Unicode blocks, ask for its code point and name.

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

# The nine blocks the reference library's demo asks about (1,140 printable characters), so the two
# libraries can be compared on the same requests.
UNICODE_BLOCKS = {
    "Basic Latin": (0x0000, 0x007F),
    "Latin-1 Supplement": (0x0080, 0x00FF),
    "Latin Extended-A": (0x0100, 0x017F),
    "Latin Extended-B": (0x0180, 0x024F),
    "IPA Extensions": (0x0250, 0x02AF),
    "Spacing Modifier Letters": (0x02B0, 0x02FF),
    "Greek and Coptic": (0x0370, 0x03FF),
    "Cyrillic": (0x0400, 0x04FF),
    "Cyrillic Supplement": (0x0500, 0x052F),
}
CHARACTERS = "".join(
    chr(code) for first, last in UNICODE_BLOCKS.values() for code in range(first, last + 1) if chr(code).isprintable()
)


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


class CharCodesTask(TaskManager[DataclassOutputFile[CharCodesOutput]]):
    DEFAULT_META = {
        "model": "gpt-4o-mini",
        "max_completion_tokens": 96,
        "completion_ratio": 0.5,
        "temperature": 0.2,
        "top_p": 1.0,
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
        max_samples: int | None = None,
        **kwargs: Any,
    ):
        # Meta values left as None take the defaults on a new task and keep the stored ones on an existing task.
        given = {"model": model, "max_completion_tokens": max_completion_tokens,
                 "completion_ratio": completion_ratio, "temperature": temperature, "top_p": top_p}  # fmt: skip
        self.given_meta = {key: value for key, value in given.items() if value is not None}
        self.characters = CHARACTERS[:max_samples]  # all of them unless a quick try asks for fewer
        super().__init__(
            task_dir,
            kwargs.pop("name_prefix", "char_codes"),
            DataclassOutputFile.output_factory(CharCodesOutput),
            init_meta={**self.DEFAULT_META, **self.given_meta},
            **kwargs,
        )

    def requested_meta(self) -> dict[str, Any]:
        return dict(self.given_meta)

    def on_task_enter(self) -> None:
        # The task's meta (not a flag's default) decides the cost predictions; --reinit_meta changes it.
        self.GR.set_assumed_completion_ratio(self.T.meta["completion_ratio"])

    def generate_requests(self) -> bool:
        meta = self.T.meta
        for char in self.characters:
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
            if self.num_pooled_requests >= 50 and self.commit_requests():
                return False
        if self.num_pooled_requests:
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
