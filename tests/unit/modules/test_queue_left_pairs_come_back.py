"""An engine sharing a Redis queue store never leaves to "other engines" a function its own workers serve: its own
advertisement (of a worker that just left) answers "served" for up to its TTL, and a worker registering while that
lookup was under way was missed, so the engine's claims skipped the function's jobs for good, nothing logged (a
worker that reconnected 0-30 ms later got stuck in 5 of 5 runs, one engine alone as well)."""

from __future__ import annotations

import asyncio
from typing import Any

from iii_engine.modules.queue.module import SERVED_ELSEWHERE, OtherEngines


class _Store:
    """The three calls OtherEngines makes, answering as a store whose advertisement says "served elsewhere"."""

    def __init__(self) -> None:
        self.during_lookup: list[Any] = []

    async def served_elsewhere(self, engine_id: str, ttl_ms: int, queue: str, function_id: str) -> int:
        for hook in self.during_lookup:
            hook()
        await asyncio.sleep(0)
        return SERVED_ELSEWHERE

    async def wanted(self) -> tuple[int, list[tuple[str, str]]]:
        return 0, [("q", "F")]

    async def advertise(self, engine_id: str, read_ms: int, runs: list[tuple[str, str]],
                        left: list[tuple[str, str]], *, ttl_ms: int, waiting: int = 0) -> list[bool]:
        return [True for _ in left]  # every left pair still advertised (by this engine itself, as it happens)


def _engines(served: set[str]) -> tuple[OtherEngines, _Store, list[int]]:
    store, woken = _Store(), []
    return OtherEngines(store, 3000, served.__contains__, lambda: woken.append(1), ("q",)), store, woken  # type: ignore[arg-type]


async def test_a_worker_registering_during_the_lookup_keeps_the_jobs_here() -> None:
    served: set[str] = set()
    engines, store, _ = _engines(served)
    store.during_lookup.append(lambda: served.add("F"))  # the worker comes back while the lookup is under way
    await engines.leave_to_others("q", "F")
    assert not engines.left_to_others("q", "F")  # before: True, and F's jobs were skipped for good


async def test_a_refresh_gives_back_pairs_this_engine_runs_again_whatever_the_store_says() -> None:
    served: set[str] = set()
    engines, _, woken = _engines(served)
    assert await engines.leave_to_others("q", "F") == SERVED_ELSEWHERE
    assert engines.left_to_others("q", "F")
    served.add("F")  # registered here without registered() being told (it ran before the pair was left)
    await engines.refresh()
    assert not engines.left_to_others("q", "F") and woken  # before: still left, the consumers never woken
