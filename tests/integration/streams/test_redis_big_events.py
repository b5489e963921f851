"""One value over Redis's pub/sub output limit (``client-output-buffer-limit pubsub 32mb`` by default) must not
cut other watchers' connections. Before, its ``set`` published the whole value in its change event; Redis then
closed the connection of every subscriber of the channel, so a watcher of an unrelated stream lost the events
written until it subscribed again (an attack: 1 of 300 small events lost per 40 MiB set; on an engine every joined
stream-socket client closed with 1013), and the big item's own watchers never got its event. Now the event goes
without its value and the store's watchers read the value from the item."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from iii.stream import StreamDeleteInput, StreamSetInput, StreamUpdateInput, UpdateSet
from iii_streams import RedisStream
from tests.integration.streams.conftest import delete_redis_keys
from tests.services import require_redis

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]

HUGE = "x" * (34 * 1024 * 1024)  # over the default 32 MiB limit by itself


@pytest.fixture
async def url() -> AsyncIterator[str]:
    """The test Redis with a key prefix (and so an events channel) of this run's own; its keys deleted after."""
    prefix = f"iii-big-{uuid.uuid4().hex[:10]}"
    base = require_redis()
    yield f"{base}{'&' if '?' in base else '?'}key_prefix={prefix}"
    await delete_redis_keys(f"{prefix}:*")


async def next_event(events: Any) -> dict[str, Any]:
    async with asyncio.timeout(8):
        event: dict[str, Any] = await anext(events)
    return event


async def test_a_value_over_the_pubsub_limit_cuts_no_watcher(url: str, caplog: pytest.LogCaptureFixture) -> None:
    # report_watch_gaps: a watcher whose connection was cut raises StreamGapError instead of only logging it
    async with RedisStream.from_url(url, report_watch_gaps=True) as watching, RedisStream.from_url(url) as writer:
        async with watching.watch("victim") as victim, watching.watch("big") as big:
            await writer.set(StreamSetInput(stream_name="big", group_id="g", item_id="huge", data=HUGE))
            await writer.set(StreamSetInput(stream_name="victim", group_id="g", item_id="1", data=1))
            created = await next_event(big)
            removed = await writer.delete(StreamDeleteInput(stream_name="big", group_id="g", item_id="huge"))
            await writer.set(StreamSetInput(stream_name="victim", group_id="g", item_id="2", data=2))
            deleted = await next_event(big)
            got = [(await next_event(victim))["event"]["data"] for _ in range(2)]
    assert got == [1, 2], got
    assert created["event"] == {"type": "create", "data": HUGE} and "truncated" not in created
    assert removed.old_value == HUGE
    assert deleted["event"] == {"type": "delete", "data": None} and deleted["truncated"] is True
    lost = [r.getMessage() for r in caplog.records if "connection lost" in r.getMessage()]
    assert lost == [], lost


async def test_an_update_batch_of_big_values_cuts_no_watcher(url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Ten concurrent updates of 4 MiB each (40 MiB of events, batched into one or two scripts whose events Redis
    queues together): every watcher gets every event, with the value written."""
    values = {f"i{n}": f"{n}" * (4 * 1024 * 1024) for n in range(10)}
    async with RedisStream.from_url(url, report_watch_gaps=True) as watching, RedisStream.from_url(url) as writer:
        async with watching.watch("victim") as victim, watching.watch("big") as big:
            await asyncio.gather(*(writer.update(StreamUpdateInput(
                stream_name="big", group_id="g", item_id=item_id, ops=[UpdateSet(path="", value=value)]))
                for item_id, value in values.items()))
            await writer.set(StreamSetInput(stream_name="victim", group_id="g", item_id="1", data=1))
            victim_event = await next_event(victim)
            got = {(e := await next_event(big))["id"]: e["event"]["data"] for _ in values}
    assert victim_event["event"] == {"type": "create", "data": 1}
    assert got == values
    lost = [r.getMessage() for r in caplog.records if "connection lost" in r.getMessage()]
    assert lost == [], lost
