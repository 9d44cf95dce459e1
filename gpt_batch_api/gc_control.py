"""When the cyclic garbage collector runs while a task runs.

The engine allocates millions of short-lived, acyclic objects (parsed lines, result infos, pooled requests),
which reference counting frees. The cyclic collector only needs to find garbage cycles, yet by default it
walks every young object again and again, and objects that live for one batch (its 50,000 result infos)
are walked, promoted and walked again before they die. Measured with ``benchmarks/e2e_batch.py``: about 30%
of the CPU per request at 30,000 requests with the default thresholds.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["fewer_gc_passes", "gc_paused"]


@contextlib.contextmanager
def fewer_gc_passes(gen0_threshold: int = 1_000_000) -> Iterator[None]:
    """Run the collector less often, then restore its thresholds.

    A collection starts when the tracked objects alive have grown by ``gen0_threshold`` since the last one.
    Processing one batch of 50,000 requests keeps ~750,000 alive at once, so below a million the collector
    walks them (200,000: 98.8 and 91.8 us per request in e2e_batch at 100,000 requests; a million: 89.5 and
    83.7). Cyclic garbage can then grow by up to a million objects (~100 MB) before it is collected.
    """
    thresholds = gc.get_threshold()
    gc.set_threshold(max(gen0_threshold, thresholds[0]), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No collection inside the block (e.g. processing one batch); the collector resumes after it.

    Objects that die inside the block are freed by reference counting as usual and never walked. Cyclic
    garbage made inside is not lost: it waits for the first collection after the block (so a block must be
    bounded, like one batch, not a whole run).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
