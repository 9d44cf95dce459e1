"""Processing a big batch result holds a bounded share of its response bodies (issue 18, memory on big batches).

A real batch of embeddings goes through the simulator (real SDK, real files); the body budget is set to a
tenth of the result file, so most bodies are dropped after classification and read again from their line when
the task uses them.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
import weakref

import pytest

from gpt_batch_api import GPTRequest, GPTRequester, result_bodies
from gpt_batch_api.errors import ProcessingError
from gpt_batch_api.requester_state import BatchStatus
from gpt_batch_api.simulator import Simulator, SimulatorConfig
from gpt_batch_api.store import fastjson

from .support.helpers import FAST_BATCHES

NUM, DIMS = 400, 256


def finished_embedding_batch(task_dir, base_url) -> GPTRequester:
    options = {"client_base_url": base_url, "openai_api_key": "sk-test", "endpoint": "/v1/embeddings"}
    gr = GPTRequester(task_dir, "mem", max_batch_requests=NUM, min_batch_requests=1, **options)
    gr.__enter__()
    for i in range(NUM):
        gr.add_request(GPTRequest({"model": "text-embedding-3-small", "input": f"s{i}", "dimensions": DIMS}))
    with gr.commit_requests():
        pass
    gr.batch_requests(flush=True)
    gr.push_batches()
    deadline = time.monotonic() + 60
    while not gr.S.batches_in(BatchStatus.FINISHED):
        assert time.monotonic() < deadline, "the simulator did not finish the batch"
        gr.update_remote()
        time.sleep(0.1)
    return gr


def test_processing_holds_a_bounded_share_of_the_bodies_and_reads_the_others_again(tmp_path, monkeypatch):
    with Simulator(SimulatorConfig(**FAST_BATCHES)) as sim:
        gr = finished_embedding_batch(tmp_path / "task", sim.base_url)
        try:
            path = gr.layout.batch_results(gr.S.batches_in(BatchStatus.FINISHED)[0].id)
            monkeypatch.setattr(result_bodies, "BODY_BUDGET_BYTES", path.stat().st_size // 10)
            tracemalloc.start()
            lines = [fastjson.loads(raw) for raw in path.read_bytes().splitlines()]
            all_bodies_bytes = tracemalloc.get_traced_memory()[0]  # every line parsed and held, as before the fix
            expected = {int(line["custom_id"].rsplit("-", 1)[1]): line["response"]["body"] for line in lines}
            del lines
            tracemalloc.reset_peak()
            start = tracemalloc.get_traced_memory()[0]
            seen: dict[int, list[float]] = {}
            kept = []

            def handler(result) -> None:  # reads every body, keeps one number of each
                for req_id, info in result.infos.items():
                    assert info.err_info is None
                    body = info.resp_info.body
                    assert body == expected[req_id]
                    seen[req_id] = body["data"][0]["embedding"][:1]
                kept.extend(result.infos.values())

            assert gr.process_batches(handler) == 1
            peak = tracemalloc.get_traced_memory()[1] - start
            tracemalloc.stop()
        finally:
            gr.__exit__(None, None, None)
    assert len(seen) == NUM
    assert peak < all_bodies_bytes / 2, f"processing held {peak:,} bytes; all bodies parsed take {all_bodies_bytes:,}"
    dropped = [info for info in kept if info.resp_info._body is None]
    assert dropped, "with a budget of a tenth of the file most bodies are dropped"
    with pytest.raises(ProcessingError, match="inside process_batch_result"):
        _ = dropped[0].resp_info.body  # the results file is deleted once the batch is processed
    # Freed by reference counting once the task lets go: a reference cycle per result would keep a whole batch
    # alive until the cyclic collector runs (it is paused while a batch is processed, and rare during a run).
    probe = weakref.ref(kept[-1].resp_info)  # not the one in the traceback of the error above
    gc.disable()
    try:
        del dropped, kept[:]
        assert probe() is None, "a processed result is kept alive by a reference cycle"
    finally:
        gc.enable()
