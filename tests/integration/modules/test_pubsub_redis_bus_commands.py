"""The pubsub Redis bus's SUBSCRIBE/UNSUBSCRIBE commands: what close() does to the subscribes still waiting, how long
a subscribe or an unsubscribe waits behind a stuck write, which reply confirms a subscribe, and a write that fails."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis
from test_engine_attack_pubsub import RedisProxy
from test_pubsub_redis_subscribe_race import waits_for_confirmation

from iii_engine.modules.base import EngineError
from iii_engine.modules.pubsub import bus as bus_module
from tests.polling import until

pytestmark = [pytest.mark.redis, pytest.mark.our_engine("drives the pubsub Redis bus through a proxy")]

REDIS_URL = "redis://127.0.0.1:6379/0"


async def nothing(topic: str, data: Any) -> None:
    """A deliver that drops what it gets (these tests look at subscriptions, not messages)."""


async def test_close_fails_the_subscribes_still_waiting_at_once() -> None:
    # Before: close() returned at once but a subscribe waiting for Redis's confirmation went on for its 10 s, and one
    # waiting for the lock behind a stuck write for ~20 s, both ending in "no confirmation within 10 s".
    topic = f"stop-{uuid.uuid4()}"
    async with RedisProxy() as proxy:
        bus = bus_module.RedisBus(proxy.url)
        await bus.start(nothing)
        proxy.hold()  # Redis stalls: the SUBSCRIBE waits in the proxy, unconfirmed
        confirming = asyncio.create_task(bus.subscribe(topic))
        await until(lambda: waits_for_confirmation(confirming))
        await bus._commands.acquire()  # a write stuck under the lock
        try:
            queued = asyncio.create_task(bus.subscribe(f"{topic}-queued"))
            await asyncio.sleep(0)  # it is waiting now (for the lock, or its confirmation)
            started = time.monotonic()
            await bus.close()
            for task in (confirming, queued):
                with pytest.raises(EngineError, match="subscribe_failed: the pubsub module is stopping"):
                    await asyncio.wait_for(task, 2)
            assert time.monotonic() - started < 2
        finally:
            bus._commands.release()


async def test_a_write_stuck_under_the_lock_holds_no_subscribe_past_its_timeout_nor_an_unsubscribe(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: one write stuck under the command lock (redis-py's 10 s socket timeout) held an unsubscribe as long,
    # and a subscribe waited 9.5 s for the lock and then its own 10 s (failed at 20.07 s).
    topic = f"stuck-{uuid.uuid4()}"
    async with RedisProxy() as proxy:
        bus = bus_module.RedisBus(proxy.url)
        await bus.start(nothing)
        try:
            await bus.subscribe(topic)
            monkeypatch.setattr(bus_module, "_SUBSCRIBE_TIMEOUT_S", 0.5)
            await bus._commands.acquire()  # a write stuck under the lock
            try:
                started = time.monotonic()
                await asyncio.wait_for(bus.unsubscribe(topic), 3)
                with pytest.raises(EngineError, match=r"no confirmation within 0\.5 s"):
                    await asyncio.wait_for(bus.subscribe(f"{topic}-later"), 3)
                assert time.monotonic() - started < 3.5
            finally:
                bus._commands.release()
        finally:
            await bus.close()


async def test_a_connection_dropped_by_a_failed_write_is_counted_as_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: a SUBSCRIBE whose write failed dropped the connection, and the reader reconnected without a word
    # (connection_losses stayed 0, nothing logged about messages lost meanwhile) unless its own read happened to
    # break too. The write fails here with the connection left up, so the reader sees nothing: the count is _sync's.
    topic = f"dropped-{uuid.uuid4()}"
    async with RedisProxy() as proxy:
        bus = bus_module.RedisBus(proxy.url)
        await bus.start(nothing)
        try:
            connection: Any = bus._pubsub.connection

            async def fail(*args: Any, **kwargs: Any) -> None:
                raise ConnectionError("write failed")

            monkeypatch.setattr(connection, "send_packed_command", fail)
            monkeypatch.setattr(bus_module, "_SUBSCRIBE_TIMEOUT_S", 0.3)
            with pytest.raises(EngineError, match="no confirmation"):
                await bus.subscribe(topic)
            assert bus.connection_losses == 1
        finally:
            await bus.close()


class ReplyHoldingProxy(RedisProxy):
    """A :class:`RedisProxy` that can also hold what Redis sends back (:meth:`hold_replies`)."""

    def __init__(self) -> None:
        super().__init__()
        self._replies = asyncio.Event()
        self._replies.set()

    def hold_replies(self) -> None:
        self._replies.clear()

    def release_replies(self) -> None:
        self._replies.set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, held: bool) -> None:
        if held:
            return await super()._pipe(reader, writer, held=held)
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                await self._replies.wait()
                writer.write(data)
                await writer.drain()
        writer.transport.abort()


async def subscribers_become(redis: Redis, topic: str, count: int) -> None:
    """Wait until Redis counts ``count`` subscribers of ``topic`` (it says so only when asked: polled)."""
    for _ in range(500):
        if (await redis.pubsub_numsub(topic))[0][1] == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{topic} never had {count} subscribers")


async def test_a_subscribe_is_not_confirmed_by_the_reply_to_a_subscribe_withdrawn_before_it() -> None:
    # Before: the reply to a SUBSCRIBE that an UNSUBSCRIBE withdrew confirmed a later subscribe of the topic, which
    # returned "active" before Redis had its own SUBSCRIBE: a message published then reached nobody (20 of 20 with a
    # 30 ms client-to-server delay).
    topic = f"early-{uuid.uuid4()}"
    redis = Redis.from_url(REDIS_URL)
    proxy = ReplyHoldingProxy()
    async with proxy:
        bus = bus_module.RedisBus(proxy.url)
        await bus.start(nothing)
        try:
            proxy.hold_replies()  # Redis does the commands; the bus hears nothing back yet
            withdrawn = asyncio.create_task(bus.subscribe(topic))
            await subscribers_become(redis, topic, 1)
            await bus.unsubscribe(topic)
            with pytest.raises(EngineError, match="withdrawn"):
                await withdrawn
            await subscribers_become(redis, topic, 0)
            proxy.hold()  # the next SUBSCRIBE stays in the proxy
            later = asyncio.create_task(bus.subscribe(topic))
            await until(lambda: waits_for_confirmation(later))
            proxy.release_replies()  # the first SUBSCRIBE's reply, then the UNSUBSCRIBE's, reach the bus
            # the reader takes both replies well within this (bounded observation: nothing to await in between)
            await asyncio.wait({later}, timeout=0.5)
            assert not later.done(), "confirmed while Redis has the topic unsubscribed"
            proxy.release()
            await asyncio.wait_for(later, 5)
            assert (await redis.pubsub_numsub(topic))[0][1] == 1
        finally:
            await bus.close()
            await redis.aclose()
