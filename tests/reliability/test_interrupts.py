"""Ctrl+C twice ("stop at once") while direct calls are in flight: their answers are kept, not bought again."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from gpt_batch_api.simulator import Simulator, SimulatorConfig

from ..support.helpers import assert_complete
from ..support.numbers_task import NumbersTask
from . import Ledger


def test_second_ctrl_c_keeps_the_answers_already_in_flight(tmp_path):
    ledger = Ledger()
    with Simulator(SimulatorConfig(latency_ms=400), responder=ledger) as sim:
        options = {"wandb": False, "progress": False, "client_base_url": sim.base_url, "openai_api_key": "sk-test"}
        options.update(force_direct=True, direct_concurrency=5, max_direct_requests=40)

        def press_ctrl_c_twice() -> None:
            deadline = time.monotonic() + 20
            while sum(map(len, ledger.answers.values())) < 5 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.15)  # the next five calls are on the wire now
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGINT)

        thread = threading.Thread(target=press_ctrl_c_twice)
        thread.start()
        with pytest.raises(KeyboardInterrupt):
            NumbersTask(str(tmp_path), 20, **options).run()
        thread.join()
        answered_before_rerun = sum(map(len, ledger.answers.values()))
        assert 5 < answered_before_rerun < 20, "the interrupt did not land while calls were in flight"
        assert NumbersTask(str(tmp_path), 20, **options).run() is True
    assert_complete(tmp_path, 20)
    twice = {key: len(times) for key, times in ledger.answers.items() if len(times) > 1}
    assert not twice, f"answers bought twice after a double Ctrl+C: {twice}"
