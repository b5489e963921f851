"""The pubsub Redis bus after an outage: the first publish that finds Redis back wakes the subscriber connection's
reconnection, rather than publishes succeeding for as long as its pause between attempts (up to 2 s) while this
engine's subscribers got none of them."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from test_pubsub_redis_cancelled_subscribe import collected, started_bus

from iii_engine.modules.pubsub import bus as bus_module
from tests.integration.streams.private_redis import PrivateRedis
from tests.polling import until

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30),
              pytest.mark.our_engine("drives the pubsub Redis bus against a private redis-server")]


async def published_until_received(bus: bus_module.RedisBus, topic: str, got: asyncio.Queue[Any],
                                   within: float) -> int:
    """Publish 1, 2, ... through ``bus`` until one comes back; how many publishes succeeded before it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    sent = 0
    while True:
        await bus.publish(topic, sent)
        sent += 1
        try:
            # each publish waits a moment for its message (no event says the SUBSCRIBEs are renewed)
            _, first = await asyncio.wait_for(got.get(), 0.05)
            return int(first)
        except TimeoutError:
            assert loop.time() < deadline, f"none of {sent} messages published came back within {within} s"


async def test_a_publish_that_finds_redis_back_wakes_the_subscriber_connection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The pause between the subscriber connection's attempts made long: before, it was waited out whatever the
    # publishes found (108 publishes succeeded in the 1.2 s after Redis was back, none reaching this engine)
    monkeypatch.setattr(bus_module, "_RECONNECT_FIRST_S", 60.0)
    monkeypatch.setattr(bus_module, "_RECONNECT_MAX_S", 60.0)
    topic = f"outage-{uuid.uuid4()}"
    got, deliver = collected()
    with PrivateRedis(tmp_path) as server:
        await server.start()
        async with started_bus(server.url, deliver) as bus:
            await bus.subscribe(topic)
            server.kill()
            await until(lambda: bus.connection_losses == 1)  # and the reader pauses
            await server.start()
            first = await published_until_received(bus, topic, got, within=5)
            assert first <= 3  # the publish that woke it went before the renewal (a few more on a loaded machine)
            assert bus.connection_losses == 1


async def test_publishes_wake_the_subscriber_connection_once_per_outage(tmp_path: Path) -> None:
    # Re-attack: while publishes worked and the subscriber's new connection was refused (Redis's maxclients reached),
    # every publish woke the reader's reconnection: 419 attempts in 5 s at 100 publishes/s (7 with its backoff).
    topic = f"outage-{uuid.uuid4()}"
    with PrivateRedis(tmp_path) as server:
        await server.start()
        async with started_bus(server.url) as bus:
            await bus.subscribe(topic)
            await bus.publish(topic, 0)  # the publisher's pooled connection is up
            admin = aioredis.Redis.from_url(server.url, single_connection_client=True)
            try:
                clients = (await admin.info("clients"))["connected_clients"]
                await admin.config_set("maxclients", clients - 1)  # no new connection once the subscriber's goes
                before = (await admin.info("stats"))["rejected_connections"]
                await admin.client_kill_filter(_type="pubsub")
                await until(lambda: bus.connection_losses == 1)
                loop = asyncio.get_running_loop()
                end = loop.time() + 2
                while loop.time() < end:  # 2 s of publishes, every 10 ms
                    await bus.publish(topic, 1)
                    await asyncio.sleep(0.01)
                attempts = (await admin.info("stats"))["rejected_connections"] - before
            finally:
                await admin.config_set("maxclients", 10000)
                await admin.aclose()
            assert 1 <= attempts <= 8, attempts  # the backoff's (0.05, 0.1, ... up to 2 s) and one wake; before ~170
