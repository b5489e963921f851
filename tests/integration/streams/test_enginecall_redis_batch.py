"""A Redis update batch sends a handful of commands, not one ``PUBLISH`` per update (issue 10: redis-py reads and
parses a reply for every command queued in a transaction), and every update still publishes its own event, in
order, with the write."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import redis.asyncio as aioredis

from iii.stream import StreamUpdateInput, UpdateIncrement
from iii.wire import loads
from iii_streams import RedisStream
from tests.integration.streams.sent_commands import commands
from tests.services import require_redis

UPDATES = 100


class CountingConnection(aioredis.Connection):
    """Counts the commands this client writes (redis-py's extension point: a pool's ``connection_class``), those
    the store packs itself included."""

    sent = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += len(commands(command))
        await super().send_packed_command(command, check_health)


async def test_batch_publishes_every_event_in_few_commands() -> None:
    url = require_redis()
    channel = f"test-events-{uuid.uuid4().hex}"  # ours alone: other tests share this Redis
    stream_name = f"batch-{uuid.uuid4().hex[:8]}"
    listener = aioredis.Redis.from_url(url)
    pubsub = listener.pubsub()
    await pubsub.subscribe(channel)
    pool = aioredis.ConnectionPool.from_url(url, connection_class=CountingConnection)
    store = RedisStream(aioredis.Redis(connection_pool=pool), channel=channel, owns_client=True)
    try:
        request = StreamUpdateInput(stream_name=stream_name, group_id="g", item_id="i",
                                    ops=[UpdateIncrement(path="n", by=1)])
        await store.update(request)  # connected: the count below is the batch's alone
        CountingConnection.sent = 0
        results = await asyncio.gather(*(store.update(request) for _ in range(UPDATES)))
        sent = CountingConnection.sent
        assert sorted(r.new_value["n"] for r in results) == list(range(2, UPDATES + 2))
        seen: list[int] = []
        while len(seen) < UPDATES + 1:
            message = await asyncio.wait_for(pubsub.get_message(ignore_subscribe_messages=True, timeout=5), 10)
            if message is not None:
                seen.append(loads(message["data"])["event"]["data"]["n"])
        assert seen == list(range(1, UPDATES + 2))  # one event per update, in the order applied
        # WATCH, HMGET, MULTI, one EVAL (writes + events), EXEC per transaction; before: also 100 PUBLISHes
        assert sent < UPDATES // 4, sent
    finally:
        await store.aclose()
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await listener.delete(f"stream:{stream_name}:g")
        await listener.aclose()
