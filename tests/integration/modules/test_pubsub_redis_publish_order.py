"""The pubsub Redis adapter sends an engine's PUBLISHes in the order ``publish`` was called.

Before, each publish took its own connection from a 50-connection pool, and fire-and-forget publishes each run in a
task of their own: 1,000 void publishes from one worker connection reached the subscriber with 16 to 44
out-of-order pairs. Now one ordered writer sends them (iii_engine/modules/pubsub/writer.py), its queue bounded,
each caller settled with its own outcome within the publish deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis
from module_worker import ModuleWorker
from test_engine_attack_pubsub import RedisProxy, engine_on, listen

from iii_engine.modules.pubsub.writer import OrderedPublisher, OutcomeUnknown
from tests.polling import until
from tests.services import require_redis

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30),
              pytest.mark.our_engine("configures the pubsub Redis adapter")]


@asynccontextmanager
async def subscribed(redis: aioredis.Redis, topic: str) -> AsyncIterator[Any]:
    """A raw Redis subscriber of ``topic``, subscribed once this yields."""
    pubsub = redis.pubsub()
    await pubsub.subscribe(topic)
    assert (await pubsub.get_message(timeout=5))["type"] == "subscribe"
    try:
        yield pubsub
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


async def received(pubsub: Any, count: int) -> list[Any]:
    got: list[Any] = []
    while len(got) < count:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
        assert message is not None, f"only {len(got)} of {count} messages arrived: {got[-5:]}"
        got.append(json.loads(message["data"]))
    return got


async def test_void_publishes_from_one_worker_reach_the_subscriber_in_order() -> None:
    topic = f"order-{uuid.uuid4()}"
    async with engine_on(require_redis()) as engine, ModuleWorker(engine.url) as subscriber, \
            ModuleWorker(engine.url) as publisher:
        got = await listen(subscriber, "order::on", "order-sub", topic)
        for i in range(1000):  # fire-and-forget: no invocation_id, each call runs in a task of its own
            await publisher.send({"type": "invokefunction", "function_id": "publish",
                                  "data": {"topic": topic, "data": i}})
        arrived = [await asyncio.wait_for(got.get(), 10) for _ in range(1000)]
    # before: "16 to 44 out-of-order pairs" (e.g. [..., 417, 416, ...])
    out_of_order = [(a, b) for a, b in itertools.pairwise(arrived) if b < a]
    assert out_of_order == []
    assert sorted(arrived) == list(range(1000))


async def test_publishes_past_the_queue_bound_wait_their_turn_in_order(redis_admin: aioredis.Redis) -> None:
    topic = f"order-{uuid.uuid4()}"
    writer = OrderedPublisher(redis_admin, timeout=10, max_messages=8, max_bytes=64 * 1024)
    held: list[tuple[int, int]] = []
    send = writer._send

    async def watched(batch: list[Any]) -> list[Exception | None]:
        held.append((writer._held, writer._held_bytes))
        return await send(batch)

    writer._send = watched  # type: ignore[method-assign]
    sizes = [10, 100_000, 30_000] * 20  # 100 KB is over the byte bound: it goes alone
    try:
        async with subscribed(redis_admin, topic) as pubsub:
            await asyncio.gather(*(writer.publish(topic, json.dumps([i, "x" * size]).encode())
                                   for i, size in enumerate(sizes)))
            got = await received(pubsub, len(sizes))
    finally:
        await writer.close()
    assert [i for i, _ in got] == list(range(len(sizes)))
    assert max(count for count, _ in held) <= 8
    assert all(size <= 64 * 1024 or count == 1 for count, size in held)
    assert writer.published == len(sizes) and writer._held == 0


async def test_a_publish_not_sent_by_its_deadline_is_withdrawn_never_sent_later(redis_admin: aioredis.Redis) -> None:
    topic = f"order-{uuid.uuid4()}"
    async with RedisProxy() as proxy, subscribed(redis_admin, topic) as pubsub:
        client = aioredis.Redis.from_url(proxy.url, socket_timeout=5)
        writer = OrderedPublisher(client, timeout=0.3)
        try:
            await writer.publish(topic, b"0")  # the connection is open before the stall
            proxy.hold()  # Redis stalls: the first PUBLISH waits in the proxy, the second behind it in the queue
            sent = asyncio.create_task(writer.publish(topic, b"1"))
            await until(lambda: writer._held == 1 and not writer._queue)  # in its round trip
            first, second = await asyncio.gather(sent, writer.publish(topic, b"2"), return_exceptions=True)
            assert isinstance(first, OutcomeUnknown)
            assert str(first) == ("outcome unknown: sent, but Redis did not answer within 0.3 s; "
                                  "it may have been published")
            assert str(second) == ("not published within 0.3 s: Redis had not answered the publishes before it; "
                                   "it was not sent")
            proxy.release()  # the first PUBLISH, already sent, reaches Redis now; the second must not
            await writer.publish(topic, b"3")
            assert await received(pubsub, 3) == [0, 1, 3]
        finally:
            await writer.close()
            await client.aclose()


async def test_a_publish_whose_turn_comes_too_late_fails_unsent_and_is_never_published(
        redis_admin: aioredis.Redis) -> None:
    """Before, once a stalled round trip ended (the socket timeout), the writer sent the next queued messages with
    milliseconds of their deadline left: their callers were told Redis did not answer, and Redis, once it resumed,
    published them (``pub_faults.py stop 5000``: 1,146 publishes reached the subscriber after failing)."""
    topic = f"order-{uuid.uuid4()}"
    async with RedisProxy() as proxy, subscribed(redis_admin, topic) as pubsub:
        # the socket timeout equals the deadline, as in RedisBus (10 s each)
        client = aioredis.Redis.from_url(proxy.url, socket_timeout=2)
        writer = OrderedPublisher(client, timeout=2)  # min_left: 0.2 s
        try:
            await writer.publish(topic, b"0")
            proxy.hold()
            sent = asyncio.create_task(writer.publish(topic, b"1"))
            await until(lambda: writer._held == 1 and not writer._queue)  # in its round trip
            # called later, so its deadline falls after that round trip's socket timeout, with < 0.2 s left then
            await asyncio.sleep(0.1)
            first, late = await asyncio.gather(sent, writer.publish(topic, b"2"), return_exceptions=True)
            # before: "not published within 2 s: Redis did not answer", and then Redis published it
            assert str(late).startswith("not published: its turn came with 0.")
            assert str(late).endswith("(Redis had not answered the publishes before it); it was not sent")
            assert not isinstance(late, OutcomeUnknown)
            assert isinstance(first, OutcomeUnknown), first
            proxy.release()  # the first, sent, may reach Redis (its caller was told so); the second must not
            await writer.publish(topic, b"3")
            assert await received(pubsub, 3) == [0, 1, 3]
        finally:
            await writer.close()
            await client.aclose()


async def test_a_publish_that_waited_for_room_says_so_when_its_deadline_passes(redis_admin: aioredis.Redis) -> None:
    """Before, when the queued publishes' deadlines passed, their room let the waiters in just before their own
    deadlines passed: those were told "Redis had not answered the publishes before it", not that they had waited
    for room (``pub_flood.py small 60000`` with Redis stopped)."""
    topic = f"order-{uuid.uuid4()}"
    async with RedisProxy() as proxy:
        client = aioredis.Redis.from_url(proxy.url, socket_timeout=10)  # the stalled round trip outlasts the test
        writer = OrderedPublisher(client, timeout=0.5, max_messages=2)
        try:
            await writer.publish(topic, b"0")
            proxy.hold()
            sent = asyncio.create_task(writer.publish(topic, b"1"))
            await until(lambda: writer._held == 1 and not writer._queue)
            # the second is queued behind the stalled round trip, the third waits for room
            outcomes = await asyncio.gather(sent, writer.publish(topic, b"2"), writer.publish(topic, b"3"),
                                            return_exceptions=True)
            room = "it waited for room in the engine's publish queue (max 2 messages, 67108864 bytes)"
            # before: "not published within 0.5 s: Redis had not answered the publishes before it"
            assert str(outcomes[2]).startswith(f"not published within 0.5 s: {room}")
            assert [str(outcome) for outcome in outcomes] == [
                "outcome unknown: sent, but Redis did not answer within 0.5 s; it may have been published",
                "not published within 0.5 s: Redis had not answered the publishes before it; it was not sent",
                f"not published within 0.5 s: {room}, then behind publishes Redis had not answered; it was not sent",
            ]
        finally:
            await writer.close()
            await client.aclose()


async def test_a_publish_settled_in_the_loop_turn_its_deadline_passes_gets_that_outcome(
        redis_admin: aioredis.Redis) -> None:
    """Before, a caller whose deadline passed in the loop turn its round trip ended got an empty TimeoutError, even
    for a message Redis had taken (``pub_faults.py stop 5000``: 1,097 callers got one)."""
    topic = f"order-{uuid.uuid4()}"
    writer = OrderedPublisher(redis_admin, timeout=0.2)
    send = writer._send

    async def answered_at_the_deadline(batch: list[Any]) -> list[Exception | None]:
        outcomes = await send(batch)
        # blocks the loop (no await): Redis's answer and the caller's deadline are handled in the same loop turn
        time.sleep(0.3)  # noqa: ASYNC251 -- the point: nothing else runs meanwhile
        return outcomes

    writer._send = answered_at_the_deadline  # type: ignore[method-assign]
    try:
        async with subscribed(redis_admin, topic) as pubsub:
            await writer.publish(topic, b"1")  # before: TimeoutError() with no text, though Redis took it
            assert await received(pubsub, 1) == [1]
    finally:
        await writer.close()
    assert writer.published == 1


async def test_a_publish_whose_connection_never_gets_ready_is_not_sent() -> None:
    """Before, a batch counted as sent before its connection was made: against a server that accepts connections
    and never answers (``hole.py``), all 50 publishes were told they may have been published, though it had
    received only a HELLO and no PUBLISH."""
    got = bytearray()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            got.extend(data)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=5, socket_connect_timeout=5)
    writer = OrderedPublisher(client, timeout=0.5)
    try:
        outcomes = await asyncio.gather(*(writer.publish("t", b"1") for _ in range(3)), return_exceptions=True)
    finally:
        await writer.close()
        await client.aclose()
        server.close()
    # before: "outcome unknown: sent, but Redis did not answer within 0.5 s; it may have been published"
    assert [str(outcome) for outcome in outcomes] == [
        "not published within 0.5 s: no connection to Redis was ready (connecting, or waiting for a free one); "
        "it was not sent"] * 3
    assert not any(isinstance(outcome, OutcomeUnknown) for outcome in outcomes)
    assert b"PUBLISH" not in got


async def test_a_publish_whose_connection_breaks_after_it_was_written_may_have_been_published(
        redis_admin: aioredis.Redis) -> None:
    """Before, a batch written to a connection that then broke failed with the bare error ("ConnectionError:
    Connection closed by server."), read as not published: ``pub_truth.py cut`` found 60 of 133 such publishes
    delivered."""
    topic = f"order-{uuid.uuid4()}"
    async with RedisProxy() as proxy:
        client = aioredis.Redis.from_url(proxy.url, socket_timeout=5)
        writer = OrderedPublisher(client, timeout=3)
        try:
            await writer.publish(topic, b"0")  # the connection is open
            proxy.hold()
            sent = asyncio.create_task(writer.publish(topic, b"1"))
            await until(lambda: writer._held == 1 and not writer._queue)  # written, in its round trip
            await asyncio.sleep(0.05)  # lets the write reach the proxy (nothing to await for it)
            proxy.cut()
            outcome = await asyncio.gather(sent, return_exceptions=True)
            assert isinstance(outcome[0], OutcomeUnknown), repr(outcome[0])
            assert str(outcome[0]).startswith("outcome unknown: sent, but the connection broke before Redis "
                                              "answered (ConnectionError: ")
            assert str(outcome[0]).endswith("); it may have been published")
        finally:
            await writer.close()
            await client.aclose()
