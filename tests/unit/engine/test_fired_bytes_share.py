"""iii_engine.limits.FiredCalls: a fan-out set off by a worker's call must fit that worker's share
(max_call_bytes_per_worker) as well as the engine-wide max_fired_bytes.

Before, the share was checked only before the call: one publish of a 3 MB frame to 3 subscribers held 9 MB under a
1 MiB share (and a 1 MiB max_fired_bytes), and every other worker's publish waited, then failed with fire_limit.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging

import pytest

from iii_engine.invocations import Invocations
from iii_engine.limits import FiredCalls, WorkerCalls
from iii_engine.modules.base import EngineError
from iii_engine.registry import Registry
from iii_engine.workers import Outbox, WorkerConnection
from tests.charges import worker_call

pytestmark = pytest.mark.timeout(10)


async def _send(text: str) -> None:
    return None


def _worker(worker_id: str = "w1") -> WorkerConnection:
    return WorkerConnection(outbox=Outbox(_send), id=worker_id)


def _call(worker: WorkerConnection, size: int) -> contextvars.Context:
    """The context of a worker's built-in call of a ``size``-byte frame, charged as the engine charges it."""
    return worker_call(worker, size)[1]


def _fired(wait_timeout_ms: int = 5000) -> FiredCalls:
    return FiredCalls(100, wait_timeout_ms, max_fired_bytes=10_000, max_call_bytes_per_worker=1000)


async def test_a_fan_out_bigger_than_the_share_is_refused_at_once_naming_it() -> None:
    fired = _fired(wait_timeout_ms=60_000)  # a wait would outlast the test
    worker = _worker()
    inside = _call(worker, 300)
    assert not inside.run(fired.try_take, 3)  # 300 + 900 > 1,000, though the engine has room for 9,000 more
    with pytest.raises(EngineError) as refused:
        await asyncio.get_running_loop().create_task(fired.take(3, "publish to topic 't'", "subscribers"),
                                                     context=inside)
    assert refused.value.code == "fire_limit"
    assert refused.value.message == (
        "publish to topic 't': none of its 3 subscribers reached: they would hold 900 bytes (300 each, its frame's "
        "size), more with the frame itself than worker w1 may hold (max_call_bytes_per_worker 1000)")
    assert (fired.in_flight, fired.bytes_in_flight, fired.waiting, fired.refused) == (0, 0, 0, 3)
    assert worker.call_bytes == 300  # its frame only: the call's own charge gives it back


async def test_a_worker_holding_most_of_its_share_is_refused_and_another_worker_is_not() -> None:
    fired = _fired()
    first, second = _worker("w1"), _worker("w2")
    assert _call(first, 200).run(fired.try_take, 3)  # 800 of its 1,000
    with pytest.raises(EngineError) as refused:
        await asyncio.get_running_loop().create_task(fired.take(1, "publish", "subscribers"),
                                                     context=_call(first, 150))
    assert refused.value.message == (
        "publish: none of its 1 subscribers reached: worker w1 holds 950 bytes in calls in flight and the "
        "trigger-fired calls they set off, and these would hold 150 more (max_call_bytes_per_worker 1000)")
    assert first.call_bytes == 950  # nothing taken
    assert _call(second, 200).run(fired.try_take, 4)  # its own share: exactly full is allowed
    assert (fired.bytes_in_flight, second.call_bytes) == (1400, 1000)


async def test_a_waiting_producers_bytes_count_on_its_share_until_it_leaves() -> None:
    fired = FiredCalls(100, 100, max_fired_bytes=1000, max_call_bytes_per_worker=1000)
    holder, waiter = _worker("w1"), _worker("w2")
    assert _call(holder, 250).run(fired.try_take, 3)  # the engine-wide budget: 750 of 1,000
    loop = asyncio.get_running_loop()
    first = loop.create_task(fired.take(2, "publish a", "subscribers"), context=_call(waiter, 200))
    await asyncio.sleep(0)
    assert (fired.waiting, waiter.call_bytes) == (2, 600)  # its frame and the 400 bytes it asks for
    # a second waiter of the same worker would take it past its share: refused at once, not queued
    with pytest.raises(EngineError, match=r"holds 900 bytes .* these would hold 300 more \(max_call_bytes_per_wor"):
        await loop.create_task(fired.take(1, "publish b", "subscribers"), context=_call(waiter, 300))
    with pytest.raises(EngineError, match="no room within 100 ms"):
        await first  # its wait runs out: what it asked for goes back to its share
    assert (fired.waiting, waiter.call_bytes, fired.bytes_in_flight) == (0, 500, 750)


async def test_a_waiter_cancelled_or_served_keeps_its_workers_bytes_exact() -> None:
    fired = FiredCalls(100, 5000, max_fired_bytes=1000, max_call_bytes_per_worker=1000)
    holder, waiter = _worker("w1"), _worker("w2")
    holding = _call(holder, 250)
    held = holding.run(fired.try_take, 3)
    assert held is not None
    loop = asyncio.get_running_loop()
    cancelled = loop.create_task(fired.take(2, "publish a", "subscribers"), context=_call(waiter, 200))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert (fired.waiting, waiter.call_bytes) == (0, 200)
    inside = _call(waiter, 100)
    served = loop.create_task(fired.take(2, "publish b", "subscribers"), context=inside)
    await asyncio.sleep(0)
    assert waiter.call_bytes == 500  # two frames, and the 200 bytes it waits for
    held.release()
    hold = await served
    assert (fired.bytes_in_flight, waiter.call_bytes, holder.call_bytes) == (200, 500, 250)
    hold.release()
    assert (fired.in_flight, fired.bytes_in_flight, waiter.call_bytes) == (0, 0, 300)


def test_the_call_path_keeps_the_share_each_bound_was_given() -> None:
    # the engine gives max_call_bytes_per_worker to both; Invocations copied the WorkerCalls' one over FiredCalls'
    fired = FiredCalls(max_call_bytes_per_worker=1000)
    invocations = Invocations(Registry(), {}, fired=fired, worker_calls=WorkerCalls(10, 2000))
    assert (invocations.fired.worker_byte_limit, invocations.worker_calls.byte_limit) == (1000, 2000)


async def test_fan_outs_past_the_share_are_logged_naming_it_not_max_fired_calls(
        caplog: pytest.LogCaptureFixture) -> None:
    fired = _fired(wait_timeout_ms=60_000)
    inside = _call(_worker(), 300)
    with caplog.at_level(logging.WARNING, logger="iii_engine.limits"):
        # a producer nobody waits for (a trigger set's dispatch, Invocations.fire): try_take, then skip
        assert not inside.run(fired.try_take, 3)
        fired.skip("state handlers", 3)
        with pytest.raises(EngineError):  # a waiting producer refused at once
            await asyncio.get_running_loop().create_task(fired.take(3, "publish", "subscribers"), context=inside)
        assert not fired.try_take(101)  # no room: still logged as before
        fired.skip("cron tick", 101)
        fired.close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "iii_engine.limits"]
    assert warnings[0] == (
        "trigger-fired calls not made, past the share of the worker whose call set them off (max_call_bytes_per_worker "
        "1000): 3 skipped (nobody to wait), 0 refused (their producer failed with fire_limit) since the last warning "
        "(counted in skipped and refused); 0 in flight; latest: state handlers: they would hold 900 bytes (300 each, "
        "its frame's size), more with the frame itself than worker w1 may hold (max_call_bytes_per_worker 1000)")
    assert warnings[1].startswith("trigger-fired calls not made, no room under max_fired_calls 100: 101 skipped")
    assert warnings[2].startswith("trigger-fired calls not made, past the share of the worker whose call set them "
                                  "off (max_call_bytes_per_worker 1000): 0 skipped (nobody to wait), 3 refused")
    assert (fired.skipped, fired.refused, fired.degraded()) == (104, 3, True)
