"""Cyclic garbage-collector settings for a process that is an engine (the ``iii-engine`` command), never for a
process that embeds one: the collector's settings are the whole process's.

Why: on the REST API's request path a quarter to a third of the engine's CPU per request went to the cyclic
collector. Full collections walk the tens of thousands of objects the engine makes at start-up (modules, settings
models, imported code), none of which ever becomes garbage, and the young generation was collected every 700
allocations. Once started, the engine freezes what exists (``gc.freeze``: the collector skips those objects from
then on) and collects the young generation every :data:`GEN0_THRESHOLD` allocations. Cycles are still collected,
only in larger batches; ``III_GC_TUNING=0`` leaves the collector as Python set it.

Example:
    >>> import gc
    >>> before = gc.get_threshold()
    >>> tune_gc({"III_GC_TUNING": "0"}), gc.get_threshold() == before
    (False, True)
"""

from __future__ import annotations

import gc
import os
from collections.abc import Mapping

__all__ = ["GEN0_THRESHOLD", "tune_gc"]

GEN0_THRESHOLD = 10_000
"""Allocations (net of frees) between young-generation collections; Python's default is 700."""


def tune_gc(env: Mapping[str, str] | None = None) -> bool:
    """Freeze the objects that exist now and collect the young generation less often; ``False`` (nothing
    changed) when ``III_GC_TUNING=0``. Call it once the engine has started, so its start-up objects are frozen."""
    if (os.environ if env is None else env).get("III_GC_TUNING", "1") == "0":
        return False
    gc.collect()  # garbage made while starting is freed first, not frozen with the rest
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, middle, oldest)
    return True
