"""An engine sharing a Redis queue store is live to the other engines once its start returns: its first
advertisement is part of the start. Before, it was the first step of a task the start only created; an engine that
claimed a job in between found no other live engine, began its grace as if alone and, with a short grace,
dead-lettered a job the new engine's worker registered for a moment later (a CI failure of
test_once_the_serving_engine_is_gone_the_grace_applies_again)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import pytest

from iii_engine.modules.queue import module
from iii_engine.modules.queue.module import OtherEngines


class _Store:
    """The calls OtherEngines makes at a refresh, counting the advertisements; ``fail`` makes them raise."""

    def __init__(self, fail: bool = False) -> None:
        self.advertised = 0
        self.fail = fail
        self.during_wanted: Callable[[], None] = lambda: None

    async def wanted(self) -> tuple[int, list[tuple[str, str]]]:
        self.during_wanted()
        if self.fail:
            raise ConnectionError("Redis is gone")
        return 0, []

    async def advertise(self, engine_id: str, read_ms: int, runs: list[tuple[str, str]],
                        left: list[tuple[str, str]], *, ttl_ms: int, waiting: int = 0) -> list[bool]:
        self.advertised += 1
        return []

    async def leave(self, engine_id: str, ttl_ms: int) -> None:
        pass


async def test_the_first_advertisement_is_made_before_the_start_returns() -> None:
    store = _Store()
    others = OtherEngines(store, 3000, lambda function_id: False, lambda: None, ("q",))  # type: ignore[arg-type]
    await others.start()
    try:
        assert store.advertised == 1  # before: 0, the task had not run yet
        await asyncio.sleep(0)
        assert store.advertised == 1  # the next one waits refresh_ms (1 s), not made again at once
    finally:
        await others.stop()


async def test_a_store_failing_at_the_first_advertisement_does_not_fail_the_start() -> None:
    # the consumers meet (and report) a store that fails; the advertisement is tried again at the next refresh
    store = _Store(fail=True)
    others = OtherEngines(store, 3, lambda function_id: False, lambda: None, ("q",))  # type: ignore[arg-type]
    await others.start()
    try:
        store.fail = False
        while not store.advertised:  # noqa: ASYNC110 - the refresh loop tells nothing; refresh_ms is 1 ms here
            await asyncio.sleep(0.001)
    finally:
        await others.stop()


async def test_a_store_that_does_not_answer_holds_the_start_up_for_at_most_a_refresh(
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = _Store()
    never = asyncio.Event()

    async def hung() -> tuple[int, list[tuple[str, str]]]:
        await never.wait()
        raise AssertionError("unreachable")

    monkeypatch.setattr(store, "wanted", hung)
    monkeypatch.setattr(module, "ADVERTISE_MAX_MS", 50)
    others = OtherEngines(store, 3000, lambda function_id: False, lambda: None, ("q",))  # type: ignore[arg-type]
    await asyncio.wait_for(others.start(), 5)  # before this bound: waited as long as the store
    await others.stop()
    assert store.advertised == 0


async def test_halt_ends_the_advertising_at_once_even_with_no_time_left_for_the_stop() -> None:
    # The queue module's stop halts first, then waits (bounded) for stop(): with no time left, wait_for cancels
    # stop() before it runs, and before halt() the refresh went on for good, the stopped engine kept live.
    store = _Store()
    others = OtherEngines(store, 3, lambda function_id: False, lambda: None, ("q",))  # type: ignore[arg-type]
    await others.start()
    others.halt()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(others.stop(), 0)
    count = store.advertised
    await asyncio.sleep(0.05)  # some 50 refreshes' worth (refresh_ms is 1 ms here)
    assert store.advertised == count


async def test_a_halt_during_the_first_advertisement_starts_no_refresh() -> None:
    store = _Store()
    others = OtherEngines(store, 3, lambda function_id: False, lambda: None, ("q",))  # type: ignore[arg-type]
    store.during_wanted = others.halt
    await others.start()
    await asyncio.sleep(0.05)
    assert store.advertised == 1
