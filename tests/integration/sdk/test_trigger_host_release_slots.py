"""A release (or a reconnect's sweep) unbinds its triggers at most 64 at once, and a hook past its deadline (30 s
without one) gives its place to the next trigger, so every trigger's unbind starts within about (n / 64) deadlines.

Before: a hook held its place until it ended; with no deadline (``invocation_timeout_ms=0``), 64 unbinds that never
returned held every place, and a release of 130 triggers started 64 unbinds, never the other 66.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from iii import trigger_host
from iii.trigger_host import _SWEEP_CONCURRENCY, TriggerTypeHost, _each_at_most
from iii.triggers import TriggerConfig, TriggerHandler
from tests.polling import until

from .conftest import MakeWorker, RealEngineThread

_TRIGGERS = 2 * _SWEEP_CONCURRENCY + 2  # three rounds of places
_SLOT_S = 0.2  # the wait that stands for "no deadline" (30 s), made short so a round takes 0.2 s


class _HungUnbinds(TriggerHandler[Any]):
    """Binds at once; each unbind waits for ``gate`` (set on the loop the hooks run on)."""

    def __init__(self) -> None:
        self.bound: list[str] = []
        self.unbinds: list[str] = []
        self.gate: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        self.bound.append(config.id)

    async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
        self.unbinds.append(config.id)
        if self.gate is None:
            self.gate, self.loop = asyncio.Event(), asyncio.get_running_loop()
        await self.gate.wait()

    def open(self) -> None:
        if self.loop is not None and self.gate is not None:
            self.loop.call_soon_threadsafe(self.gate.set)


async def test_a_release_with_no_deadline_starts_every_unbind_past_64_hung_ones(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trigger_host, "_DETACHED_WAIT_S", _SLOT_S)
    host, hooks = TriggerTypeHost(hook_deadline=None), _HungUnbinds()
    host.add("hook", hooks)
    for i in range(_TRIGGERS):
        assert await host.register("hook", f"t{i}", "f", {}, generation=1) is None
    released = host.release("hook")
    assert released is not None
    started = time.monotonic()
    release = asyncio.ensure_future(released)
    try:
        # before: 64 started, the other 66 never (each hung unbind held its place for good)
        await until(lambda: len(hooks.unbinds) == _TRIGGERS, within=10)
        took = time.monotonic() - started
        assert sorted(hooks.unbinds) == sorted(f"t{i}" for i in range(_TRIGGERS))
        # three rounds of 64 places, a round freed after _SLOT_S: not the rounds after each other's hooks' end
        assert took < 2 * _SLOT_S + 5, took
        assert not release.done()  # no deadline: each hung unbind is still waited for, in its trigger's turn
        hooks.open()
        await asyncio.wait_for(release, 10)
    finally:
        release.cancel()


def test_a_release_through_the_client_with_no_deadline_unbinds_every_trigger(
        real: RealEngineThread, make_real_worker: MakeWorker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trigger_host, "_DETACHED_WAIT_S", _SLOT_S)
    owner, user = make_real_worker("owner", invocation_timeout_ms=0), make_real_worker("user")
    hooks = _HungUnbinds()
    owner.register_trigger_type({"id": "hook", "description": "d"}, hooks)
    real.wait_for(lambda: "hook" in real.worker_trigger_types())
    for i in range(_TRIGGERS):
        user.register_trigger({"type": "hook", "function_id": "u::f", "config": {"i": i}})
    real.run(until(lambda: len(hooks.bound) == _TRIGGERS, within=10))
    owner.unregister_trigger_type({"id": "hook"})
    try:
        # before: 64 of 130 (the client's loop's view), the rest never
        real.run(until(lambda: len(hooks.unbinds) == _TRIGGERS, within=10))
        assert sorted(hooks.unbinds) == sorted(hooks.bound)
    finally:
        hooks.open()


async def test_a_run_past_its_hold_gives_its_place_and_is_still_waited_for() -> None:
    events: list[str] = []
    gate = asyncio.Event()
    running = 0
    most = 0

    async def run(item: int) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        events.append(f"start {item}")
        try:
            if item == 0:
                await gate.wait()  # past its hold: item 2 starts in its place
            else:
                await asyncio.sleep(0)
                if item == 2:
                    gate.set()
        finally:
            running -= 1
            events.append(f"end {item}")

    await asyncio.wait_for(_each_at_most(2, range(4), run, hold_s=0.05), 5)
    assert events.index("start 2") < events.index("end 0")  # before: no place until item 0 ended
    assert len(events) == 8  # every run ended before the helper returned
    assert most <= 3  # two places, plus the one run past its hold


async def test_the_first_error_of_a_run_is_raised_once_every_run_has_ended() -> None:
    ended: list[int] = []

    async def run(item: int) -> None:
        await asyncio.sleep(0)
        ended.append(item)
        if item == 1:
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await _each_at_most(2, range(5), run, hold_s=5)
    assert sorted(ended) == [0, 1, 2, 3, 4]


async def test_cancelled_it_cancels_the_runs_still_going() -> None:
    cancelled: list[int] = []
    started: list[int] = []

    async def run(item: int) -> None:
        try:
            started.append(item)
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(item)
            raise

    helper = asyncio.ensure_future(_each_at_most(2, range(5), run, hold_s=5))
    await until(lambda: len(started) == 2)
    helper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await helper
    assert sorted(cancelled) == [0, 1]  # the two holding a place; the others never started
