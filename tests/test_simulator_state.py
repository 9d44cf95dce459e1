"""A simulator with a state file continues what an earlier one (in another process) left: files and batches."""

from __future__ import annotations

import io
import json
import time

import openai

from gpt_batch_api.simulator import Simulator, SimulatorConfig
from gpt_batch_api.simulator.__main__ import main as simulator_main
from gpt_batch_api.simulator.config import FIELD_HELP

LINES = [
    {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"Say {i}."}]}}
    for i in range(3)
]  # fmt: skip


def client_for(sim: Simulator) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url, api_key="sk-state-test", max_retries=0)


def test_a_batch_in_progress_is_found_and_completed_by_the_next_simulator(tmp_path):
    state = tmp_path / "remote.json"
    config = SimulatorConfig(validating_s=0.05, in_progress_s=0.5, finalizing_s=0.05)
    with Simulator(config, state_path=state) as first:
        client = client_for(first)
        data = "".join(json.dumps(line) + "\n" for line in LINES).encode()
        upload = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
        batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
        assert client.batches.retrieve(batch.id).status in ("validating", "in_progress")
    # The first simulator is gone, as after a Ctrl+C of the demo; a new one loads its state.
    with Simulator(SimulatorConfig(), state_path=state) as second:
        client = client_for(second)
        time.sleep(0.7)  # the batch's lifecycle runs on its own timestamps, as a real remote batch would
        done = client.batches.retrieve(batch.id)
        assert done.status == "completed" and done.output_file_id
        answers = client.files.content(done.output_file_id).text.splitlines()
        assert sorted(json.loads(a)["custom_id"] for a in answers) == ["r0", "r1", "r2"]
        assert client.files.content(upload.id).content == data
    # A third one sees the finished batch and its output file without producing them again.
    with Simulator(SimulatorConfig(), state_path=state) as third:
        again = client_for(third).batches.retrieve(batch.id)
        assert again.output_file_id == done.output_file_id


def test_a_damaged_state_file_is_moved_aside_and_the_simulator_starts_empty(tmp_path):
    state = tmp_path / "remote.json"
    state.write_text("{not json")
    with Simulator(SimulatorConfig(), state_path=state) as sim:
        assert client_for(sim).batches.list().data == []
    assert (tmp_path / "remote.json.damaged").read_text() == "{not json"


def test_every_simulator_option_says_what_it_means_and_its_unit(capsys):
    import dataclasses

    fields = [f.name for f in dataclasses.fields(SimulatorConfig) if f.name != "server_kind"]
    missing = [name for name in fields if name not in FIELD_HELP]
    assert not missing, f"options without a meaning in --help: {missing}"
    try:
        simulator_main(["--help"])
    except SystemExit:
        pass
    out = " ".join(capsys.readouterr().out.split())
    assert "seconds a new batch stays 'validating' (default: 1.0)" in out
    assert "milliseconds added to every direct call" in out and "--state_file" in out


def test_a_save_cut_short_by_a_kill_leaves_no_temp_file_behind(tmp_path):
    state = tmp_path / "x_simulator.json"
    (tmp_path / "x_simulator.json.tmp-k1ll3d").write_text("{partial")
    with Simulator(SimulatorConfig(), state_path=state):
        pass
    assert list(tmp_path.iterdir()) == []


def test_the_simulator_loads_its_tokenizer_before_it_serves(monkeypatch):
    """A real server is warm when it takes calls; the simulator's first calls used to wait about 0.6 s for the
    o200k tokenizer, which a client benchmark's first run then counted as the client's."""
    from gpt_batch_api import encodings
    from gpt_batch_api.simulator import tokens

    monkeypatch.setattr(encodings, "_encodings", {})
    monkeypatch.setattr(tokens, "_by_model", {})
    loaded_when_serving = []

    def serve(self, banner):
        loaded_when_serving.append(sorted(encodings._encodings))

    monkeypatch.setattr(Simulator, "serve_until_interrupted", serve)
    assert simulator_main(["--port", "0"]) == 0
    assert loaded_when_serving == [["o200k_base"]]
