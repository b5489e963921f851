"""A trigger's ticks reach the Redis cron lock in the order of their times, whatever order the lock's scripts would
run in.

Before, the ticks asked while an earlier script was in flight went in a script of their own on another pooled
connection, and Redis ran whichever arrived first. After a 3 s stall of Redis a trigger's tick went in after its
next one, and the lock (which keeps the last tick fired) took it as fired already: no engine fired it and nothing
counted it (4-5 ticks of 5 every-second triggers per stall).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from iii_engine.modules.cron.locks import RedisCronLock
from tests.polling import until
from tests.services import require_redis

pytestmark = [pytest.mark.timeout(30), pytest.mark.redis]


@pytest.fixture
async def lock() -> AsyncIterator[RedisCronLock]:
    prefix = f"test-cron-order-{uuid.uuid4().hex[:8]}:"
    lock = RedisCronLock(require_redis(), key_prefix=prefix)
    try:
        yield lock
    finally:
        await lock.close()
        admin = aioredis.Redis.from_url(require_redis())
        keys = [key async for key in admin.scan_iter(match=f"{prefix}*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()


def _held_first_script(lock: RedisCronLock, monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, list[list[Any]]]:
    """The lock's first script waits for the returned event before it reaches Redis (a stall); ticks sent per script
    are noted."""
    script = lock._script
    gate = asyncio.Event()
    sent: list[list[Any]] = []

    async def held(keys: list[str], args: list[Any]) -> Any:
        sent.append(list(args[1:]))
        if len(sent) == 1:
            await gate.wait()
        return await script(keys=keys, args=args)

    monkeypatch.setattr(lock, "_script", held)
    return gate, sent


async def _turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_tick_asked_while_the_previous_one_is_in_flight_waits_for_it(
        lock: RedisCronLock, monkeypatch: pytest.MonkeyPatch) -> None:
    gate, sent = _held_first_script(lock, monkeypatch)
    first = asyncio.ensure_future(lock.try_fire("job", 187_000))
    await until(lambda: len(sent) == 1)
    second = asyncio.ensure_future(lock.try_fire("job", 188_000))
    other = asyncio.ensure_future(lock.try_fire("another", 188_000))
    await until(lambda: len(sent) == 2)  # another trigger's tick is not held up by this one's
    await _turns(20)  # (a second script of "job" went out within these turns)
    assert sent == [[187_000], [188_000]]
    assert await other
    gate.set()
    assert await first and await second  # each fired, in turn
    assert sent == [[187_000], [188_000], [188_000]]
    assert not await lock.try_fire("job", 188_000)  # and each once


async def test_a_keys_ticks_in_one_script_go_in_the_order_of_their_times(
        lock: RedisCronLock, monkeypatch: pytest.MonkeyPatch) -> None:
    gate, sent = _held_first_script(lock, monkeypatch)
    first = asyncio.ensure_future(lock.try_fire("job", 1_000))
    await until(lambda: len(sent) == 1)
    later = [asyncio.ensure_future(lock.try_fire("job", tick)) for tick in (4_000, 2_000, 3_000)]
    await _turns(5)
    gate.set()
    assert await first and all(await asyncio.gather(*later))
    assert sent == [[1_000], [2_000, 3_000, 4_000]]


@pytest.mark.parametrize("lock_key", ["shared-report", None])
async def test_a_shared_locks_tick_taken_after_its_trigger_left_is_said(
        lock: RedisCronLock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        lock_key: str | None) -> None:
    # A worker leaving during a stall of Redis: its triggers' ticks, already on their way, were taken in Redis, so the
    # engines sharing their lock_key did not fire them, and nothing said so (a tick of each of 50 triggers). A trigger
    # id's own lock is nobody else's: nothing lost, nothing said.
    gate, sent = _held_first_script(lock, monkeypatch)
    asker = asyncio.ensure_future(lock.try_fire("job", 5_000, lock_key=lock_key))
    await until(lambda: len(sent) == 1)
    asker.cancel()  # its trigger unregistered here while its script is on its way
    with caplog.at_level(logging.WARNING, logger="iii_engine.modules.cron.locks"):
        gate.set()
        await until(lambda: not lock._sending)
    lines = [r.getMessage() for r in caplog.records if "taken in the lock store" in r.getMessage()]
    assert lock.ticks_taken_unfired == (1 if lock_key else 0)
    assert len(lines) == (1 if lock_key else 0), lines
    if lock_key:
        assert not await lock.try_fire("elsewhere", 5_000, lock_key=lock_key)  # taken indeed: another engine's try
