"""A local OpenAI-compatible server for tests, demos and benchmarks: no key, no cost, no network.

``Simulator(SimulatorConfig(...)).start()`` serves Files, Batches, chat completions, responses, embeddings
and models on 127.0.0.1; ``python -m gpt_batch_api.simulator --port N`` does the same from a shell.
"""

from __future__ import annotations

from .config import SimulatorConfig
from .server import Simulator

__all__ = ["Simulator", "SimulatorConfig"]
