"""The pubsub Redis bus around a reconnection: replies to commands written while the subscriber connection is being
set up again, and the count of outages (messages published during one never reach this engine)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis
from test_engine_attack_pubsub import RedisProxy, publish_until_received
from test_pubsub_redis_bus_commands import ReplyHoldingProxy, subscribers_become
from test_pubsub_redis_cancelled_subscribe import collected, started_bus
from test_pubsub_redis_subscribe_race import waits_for_confirmation

from iii_engine.modules.base import EngineError
from iii_engine.modules.pubsub import bus as bus_module
from tests.polling import until

pytestmark = [pytest.mark.redis, pytest.mark.our_engine("drives the pubsub Redis bus through a proxy")]

REDIS_URL = "redis://127.0.0.1:6379/0"


async def test_a_subscribe_during_a_reconnection_is_not_confirmed_by_a_reply_to_a_withdrawn_one() -> None:
    # A reconnection counts as up from its socket on, through its handshake's round trips (held open here, as a slow
    # last reply would). Before, a subscribe, its unsubscribe and a second subscribe of one topic were written on the
    # new connection meanwhile, and the counts of replies owed were cleared only after them: the reply to the
    # withdrawn SUBSCRIBE confirmed the second subscribe while Redis had the topic unsubscribed and its SUBSCRIBE was
    # still on the way, and a message published then reached nobody.
    topic = f"reconnect-{uuid.uuid4()}"
    got, deliver = collected()
    redis = Redis.from_url(REDIS_URL)
    try:
        async with RedisProxy() as proxy, started_bus(proxy.url, deliver) as bus:
            connection: Any = bus._pubsub.connection
            handshake = connection.redis_connect_func
            in_setup, go_on = asyncio.Event(), asyncio.Event()

            async def slow_setup(conn: Any) -> None:
                await (handshake(conn) if handshake is not None else conn.on_connect())
                in_setup.set()
                await go_on.wait()

            connection.redis_connect_func = slow_setup
            proxy.cut()  # the reader reconnects, and its setup waits
            await in_setup.wait()
            withdrawn = asyncio.create_task(bus.subscribe(topic))
            await until(lambda: waits_for_confirmation(withdrawn))
            await bus.unsubscribe(topic)
            with pytest.raises(EngineError, match="withdrawn"):
                await withdrawn
            # Redis has done the commands written so far: the bus's own connection is busy, another one is asked
            await subscribers_become(redis, topic, 0)
            proxy.hold()  # the next commands stay in the proxy
            later = asyncio.create_task(bus.subscribe(topic))
            await until(lambda: waits_for_confirmation(later))
            go_on.set()
            # the reader takes the replies well within this (bounded observation: nothing to await in between)
            await asyncio.wait({later}, timeout=0.5)
            if later.done():  # how many a message published now would reach (before: 0)
                receivers = await redis.publish(topic, json.dumps("lost"))
                raise AssertionError(f"confirmed while Redis has the topic unsubscribed: {receivers} receivers")
            proxy.release()
            await asyncio.wait_for(later, 5)
            await subscribers_become(redis, topic, 1)
            await redis.publish(topic, json.dumps("after"))
            assert await asyncio.wait_for(got.get(), 5) == (topic, "after")
    finally:
        await redis.aclose()


async def test_a_half_open_subscriber_connection_is_found_counted_and_replaced(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # A connection that goes silent both ways (a NAT that forgot it, a host gone without a reset) never fails a
    # read. Before, the bus waited on it for good: messages published meanwhile reached nobody here, and no outage
    # was counted (connection_losses 0) or logged. Now a PING after a quiet spell finds it.
    monkeypatch.setattr(bus_module, "_QUIET_S", 0.2, raising=False)  # absent before the fix
    monkeypatch.setattr(bus_module, "_PONG_S", 0.3, raising=False)
    topic = f"half-open-{uuid.uuid4()}"
    got, deliver = collected()
    redis = Redis.from_url(REDIS_URL)
    proxy = ReplyHoldingProxy()
    try:
        async with proxy, started_bus(proxy.url, deliver) as bus:
            await bus.subscribe(topic)
            proxy.hold()
            proxy.hold_replies()  # silent both ways, the sockets still open
            await redis.publish(topic, json.dumps("lost"))
            await until(lambda: bus.connection_losses == 1, within=5)
            assert "no reply to PING within 0.3 s (a half-open connection)" in caplog.text
            # the outage is told from the last thing heard, not from the moment its silence was noticed (before, the
            # messages of the quiet spell and the PING's wait were in neither line: 300-500 of them at 20/s)
            lost = next(r.getMessage() for r in caplog.records if "connection lost" in r.getMessage())
            silent = float(lost.split("nothing heard from it for ")[1].split(" s")[0])
            assert silent >= 0.5, lost
            assert "messages published since then and until it is back do not reach this engine" in lost, lost
            proxy.release()
            proxy.release_replies()
            # the new connection subscribes the topic again (what the old one still had in flight is lost)
            received = await publish_until_received(redis, topic, got)
            assert received[0] == topic and isinstance(received[1], int)
            back = next(r.getMessage() for r in caplog.records if "connection back after" in r.getMessage())
            assert float(back.split("back after ")[1].split(" s")[0]) >= silent, back
    finally:
        await redis.aclose()


async def test_an_idle_subscriber_connection_that_answers_its_pings_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    # The quiet spell is checked between reads: a read of 1 s with a shorter deadline took a live connection for a
    # half-open one (2 false outages in 3 s with 0.2 s + 0.3 s), had reads not ended by the next check.
    monkeypatch.setattr(bus_module, "_QUIET_S", 0.2, raising=False)
    monkeypatch.setattr(bus_module, "_PONG_S", 0.3, raising=False)
    async with started_bus(REDIS_URL) as bus:
        ping = bus._ping
        pings = 0

        async def counted_ping() -> None:
            nonlocal pings
            pings += 1
            await ping()

        monkeypatch.setattr(bus, "_ping", counted_ping)
        await until(lambda: pings >= 3 or bus.connection_losses > 0)
        assert bus.connection_losses == 0
