"""Odd inputs: numeric options x {nan, inf, negative}, sample keys that are not strings, NaN in requests.

A NaN cap compares false with everything, so it let every request through; a NaN price poisoned the queue.
Each odd value is refused at once with a message naming the option (or the key, or where the NaN is), and
the corrected run completes. A cap that stops a run is named with its value.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import subprocess
import sys

import pytest

from gpt_batch_api.errors import ConfigError, TaskDataError
from gpt_batch_api.request import GPTRequest
from gpt_batch_api.requester_options import INFINITE_OK, NEGATIVE_OK, RequesterOptions
from gpt_batch_api.simulator import Simulator, SimulatorConfig

from ..support.helpers import FAST_BATCHES, REPO, assert_complete, read_task_state
from ..support.numbers_task import NumbersTask

NUMERIC = [
    f.name
    for f in dataclasses.fields(RequesterOptions)
    if isinstance(getattr(RequesterOptions(), f.name), int | float)
    and not isinstance(getattr(RequesterOptions(), f.name), bool)
]


@pytest.mark.parametrize("value", [math.nan, math.inf, -1])
@pytest.mark.parametrize("name", NUMERIC)
def test_numeric_option_rejects_nan_inf_and_negative(name, value):
    allowed = (value < 0 and name in NEGATIVE_OK) or (
        math.isinf(value) and (name in INFINITE_OK or name.startswith("max_"))
    )
    if value == math.inf and name in ("max_token_safety", "max_mb_safety"):
        allowed = True  # no margin limit: harmless (a limit still applies)
    if math.isnan(value):
        allowed = False
    if allowed:
        try:
            RequesterOptions.from_kwargs({name: value})
        except ConfigError as exc:  # other rules (e.g. consistency of limits) may still refuse it, by name
            assert f"--{name}" in str(exc) or "--max_" in str(exc), str(exc)
        return
    with pytest.raises(ConfigError, match=f"--{name}"):
        RequesterOptions.from_kwargs({name: value})


def demo(tmp_path, *flags: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "gpt_batch_api.task_manager_demo", "--task", "char_codes", "--simulate"]
    cmd += ["--no_wandb", "--no_progress", "--task_dir", str(tmp_path), *flags]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("flag", "value", "good"),
    [
        ("--max_session_cost", "nan", "0.01"),
        ("--max_token_safety", "nan", "1.05"),
        ("--cost_input_batch_mtoken", "nan", "1.25"),
        ("--max_session_ktokens", "-5", "5"),
        ("--temperature", "nan", "0.5"),
    ],
)
def test_demo_refuses_an_odd_number_then_runs_with_a_good_one(tmp_path, flag, value, good):
    refused = demo(tmp_path, "--force_direct", flag, value)
    assert refused.returncode in (1, 2), refused.stderr  # 2: refused by the argument parser
    assert "Traceback" not in refused.stderr and flag.lstrip("-") in refused.stderr, refused.stderr
    assert not list(tmp_path.glob("*_queue_*")) or read_task_state(tmp_path, "char_codes")["committed_samples"] == {}
    ok = demo(tmp_path, "--force_direct", flag, good)
    assert ok.returncode == 0, ok.stderr
    if flag in ("--max_session_cost", "--max_session_ktokens"):  # a small cap stops the run and is named
        assert f"{flag} {good} reached" in ok.stderr, ok.stderr[-2000:]


def test_a_cap_that_stops_the_run_is_named_with_its_value(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    with Simulator(SimulatorConfig(**FAST_BATCHES)) as sim:
        options = {"client_base_url": sim.base_url, "openai_api_key": "sk-test", "wandb": False, "progress": False}
        assert NumbersTask(str(tmp_path), 30, force_direct=True, max_session_requests=10, **options).run() is False
        assert "Cannot make progress: --max_session_requests 10 reached" in caplog.text
        assert NumbersTask(str(tmp_path), 30, force_direct=True, **options).run() is True
    assert_complete(tmp_path, 30)


class KeyTask(NumbersTask):
    """Uses ``key_of(i)`` as the sample key and puts ``extra`` into every payload and meta."""

    key_of = staticmethod(lambda i: f"s{i:06d}")
    extra: dict[str, float] = {}

    def generate_requests(self) -> bool:
        for i in range(self.T.meta["num_samples"]):
            key = self.key_of(i)
            if key in self.T.committed_samples:
                continue
            payload = {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"Reply with the number {i} as JSON."}],
                **self.extra.get("payload", {}),
            }
            self.add_request(GPTRequest(payload=payload, meta={"sample": key, "i": i, **self.extra.get("meta", {})}))
        self.commit_requests()
        return True

    def commit_cached_request(self, cached_req):
        self.T.committed_samples[cached_req.item.req.meta["sample"]] = cached_req.item.id


@pytest.mark.parametrize("key_of", [lambda i: i, lambda i: (i, "x"), lambda i: 1.5 * i])
def test_a_non_string_sample_key_is_refused_where_it_is_set(tmp_path, key_of):
    with Simulator(SimulatorConfig(**FAST_BATCHES)) as sim:
        task = KeyTask(
            str(tmp_path), 5, force_direct=True, wandb=False, progress=False, openai_api_key="sk-test",
            client_base_url=sim.base_url,
        )  # fmt: skip
        task.key_of = staticmethod(key_of)
        with pytest.raises(TaskDataError, match="is not a string") as refused:
            task.run()
    assert repr(key_of(0)) in str(refused.value)
    assert read_task_state(tmp_path)["committed_samples"] == {}, "nothing may be committed under a bad key"


@pytest.mark.parametrize(
    ("extra", "where"),
    [
        ({"payload": {"temperature": math.nan}}, "payload at temperature"),
        ({"payload": {"logit_bias": {"12": -math.inf}}}, "payload at logit_bias.12"),
        ({"meta": {"weight": math.inf}}, "meta at weight"),
    ],
)
def test_nan_or_inf_in_a_request_is_refused_not_sent_as_null(tmp_path, extra, where):
    task = KeyTask(str(tmp_path), 3, force_direct=True, wandb=False, progress=False, openai_api_key="sk-test")
    task.extra = extra
    with pytest.raises(TaskDataError, match=where):
        task.run()
    assert read_task_state(tmp_path)["committed_samples"] == {}
