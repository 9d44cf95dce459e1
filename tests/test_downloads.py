"""Result files are streamed to the task directory; a body cut short is downloaded again, not bought again."""

from __future__ import annotations

import threading

from gpt_batch_api.simulator import Simulator, SimulatorConfig
from gpt_batch_api.simulator import server as sim_server

from .support.helpers import FAST_BATCHES, assert_complete
from .support.numbers_task import NumbersTask

OPTIONS = {"min_batch_requests": 1, "max_batch_requests": 40, "remote_update_interval": 0.2}


def test_a_result_download_cut_short_is_downloaded_again(tmp_path, monkeypatch):
    cuts = {"left": 2, "done": 0}
    lock = threading.Lock()
    original = sim_server._Handler._write

    def write(self, status, payload, headers=None, content_type="application/json"):
        with lock:
            cut = self.path.endswith("/content") and status == 200 and cuts["left"] > 0
            cuts["left"] -= cut
            cuts["done"] += cut
        if not cut:
            return original(self, status, payload, headers, content_type)
        # The whole length is announced, half the body is sent, then the connection drops.
        head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(payload)}\r\n\r\n"
        self.wfile.write(head.encode() + payload[: len(payload) // 2])
        self.wfile.flush()
        self.close_connection = True

    monkeypatch.setattr(sim_server._Handler, "_write", write)
    with Simulator(SimulatorConfig(**FAST_BATCHES)) as sim:
        options = {"wandb": False, "progress": False, "client_base_url": sim.base_url, "openai_api_key": "sk-test"}
        assert NumbersTask(str(tmp_path), 60, **options, **OPTIONS).run() is True
        batches = sim.stats()["batches"]
    assert cuts["done"] == 2, "the fault was never injected"
    records = assert_complete(tmp_path, 60)
    assert all(r.error is None for r in records)
    assert len(batches) == 2, f"a batch was bought again: {len(batches)} remote batches for 60 requests"
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]
