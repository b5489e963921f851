"""RedisStream change events over ``max_event_bytes`` (fakeredis, a small bound): published without their value
(``"data": null``, ``"truncated": true``), which the store's watchers read from the item; an update batch's events
bounded together; a ``send`` over the bound refused. Redis cuts a subscriber once more than 32 MiB waits for it,
so one big value cost every watcher on that server its events (see the real-Redis test of the same name)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest

from iii.stream import StreamDeleteInput, StreamSetInput, StreamUpdateInput, UpdateSet
from iii.wire import loads
from iii_streams import RedisStream, StreamBackendError, StreamGapError, StreamUnavailableError
from iii_streams.redis import EVENTS_CHANNEL, MAX_EVENT_BYTES

pytestmark = pytest.mark.timeout(10)

BOUND = 300
BIG = "x" * 1000  # its event is over BOUND
GROUP = "g"


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
async def store(server: fakeredis.FakeServer) -> AsyncIterator[RedisStream]:
    async with RedisStream(fakeredis.FakeAsyncRedis(server=server), max_event_bytes=BOUND) as s:
        yield s


@pytest.fixture
async def published(server: fakeredis.FakeServer) -> AsyncIterator[asyncio.Queue[bytes]]:
    """The raw messages on the events channel, as any other reader of it (a production engine) gets them."""
    raw = fakeredis.FakeAsyncRedis(server=server)
    pubsub = raw.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(EVENTS_CHANNEL)
    messages: asyncio.Queue[bytes] = asyncio.Queue()

    async def read() -> None:
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is not None:
                messages.put_nowait(message["data"])

    reader = asyncio.create_task(read())
    yield messages
    reader.cancel()
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    await raw.aclose()


def put(item_id: str, data: Any, stream: str = "s") -> StreamSetInput:
    return StreamSetInput(stream_name=stream, group_id=GROUP, item_id=item_id, data=data)


async def next_event(events: Any) -> dict[str, Any]:
    async with asyncio.timeout(5):
        event: dict[str, Any] = await anext(events)
    return event


async def take(messages: asyncio.Queue[bytes], count: int) -> list[bytes]:
    async with asyncio.timeout(5):
        return [await messages.get() for _ in range(count)]


async def test_a_big_set_is_published_without_its_value_and_watchers_read_it(
    store: RedisStream, published: asyncio.Queue[bytes]
) -> None:
    async with store.watch("s") as events:
        result = await store.set(put("big", BIG))
        await store.set(put("small", 1))
        first, second = await next_event(events), await next_event(events)
    assert result.new_value == BIG
    assert first["id"] == "big" and first["event"] == {"type": "create", "data": BIG} and "truncated" not in first
    assert second["id"] == "small" and second["event"] == {"type": "create", "data": 1}
    raw = await take(published, 2)
    slim, small = loads(raw[0]), loads(raw[1])
    assert len(raw[0]) <= BOUND and slim["truncated"] is True
    assert slim["event"] == {"type": "create", "data": None} and slim["streamName"] == "s" and slim["id"] == "big"
    assert "truncated" not in small and small["event"]["data"] == 1


async def test_the_value_read_is_the_items_then(store: RedisStream) -> None:
    """As new as the change or newer: both events of an item written twice before the watcher read carry the last
    value (documented)."""
    async with store.watch("s") as events:
        await store.set(put("big", BIG))
        await store.set(put("big", BIG + "y"))
        first, second = await next_event(events), await next_event(events)
    assert first["event"] == {"type": "create", "data": BIG + "y"}
    assert second["event"] == {"type": "update", "data": BIG + "y"}


async def test_an_item_deleted_before_the_read_skips_its_event(store: RedisStream) -> None:
    async with store.watch("s") as events:
        await store.set(put("big", BIG))
        deleted = await store.delete(StreamDeleteInput(stream_name="s", group_id=GROUP, item_id="big"))
        await store.set(put("small", 2))
        first, second = await next_event(events), await next_event(events)
    assert deleted.old_value == BIG  # the caller still gets the old value; the event cannot carry it
    assert first["id"] == "big" and first["event"] == {"type": "delete", "data": None} and first["truncated"] is True
    assert second["id"] == "small" and second["event"]["data"] == 2


async def test_a_small_delete_still_carries_its_old_value(store: RedisStream) -> None:
    async with store.watch("s") as events:
        await store.set(put("a", [1, 2]))
        await store.delete(StreamDeleteInput(stream_name="s", group_id=GROUP, item_id="a"))
        await next_event(events)
        event = await next_event(events)
    assert event["event"] == {"type": "delete", "data": [1, 2]} and "truncated" not in event


async def test_an_update_batch_bounds_its_events_together(
    store: RedisStream, published: asyncio.Queue[bytes]
) -> None:
    values = {f"i{n}": "v" * 100 for n in range(6)}  # each event fits; six of them do not
    async with store.watch("s") as events:
        await asyncio.gather(*(store.update(StreamUpdateInput(stream_name="s", group_id=GROUP, item_id=item_id,
                                                              ops=[UpdateSet(path="", value=value)]))
                               for item_id, value in values.items()))
        got = {(e := await next_event(events))["id"]: e["event"]["data"] for _ in values}
    assert got == values
    raw = await take(published, len(values))
    slim = [m for m in raw if loads(m).get("truncated")]
    assert slim, "six events of ~190 bytes in one batch all carried their values past the 300-byte bound"
    assert all(len(m) <= BOUND for m in raw)


async def test_a_send_over_the_bound_is_refused(store: RedisStream) -> None:
    async with store.watch("s") as events:
        with pytest.raises(StreamBackendError) as refused:
            await store.send("s", GROUP, None, "big", BIG)
        await store.send("s", GROUP, None, "small", 1)
        event = await next_event(events)
    assert event["event"] == {"type": "event", "event": {"type": "small", "data": 1}}  # nothing else was sent
    message = str(refused.value)
    assert f"max_event_bytes ({BOUND})" in message and "?max_event_bytes=N" in message, message
    assert "the event is 1" in message and "bytes" in message, message


async def test_a_failed_read_is_a_gap_for_that_event_alone(store: RedisStream, monkeypatch: Any) -> None:
    async def unreachable(key: str, field: str) -> None:
        raise StreamUnavailableError("Redis unreachable (test)")

    async with store.watch("s") as events:
        monkeypatch.setattr(store, "_read_back", unreachable)
        await store.set(put("big", BIG))
        await store.set(put("small", 3))
        with pytest.raises(StreamGapError, match="published without its value"):
            await next_event(events)
        event = await next_event(events)  # the watch reads on
    assert event["id"] == "small"


async def test_a_watcher_of_another_stream_reads_nothing_back(store: RedisStream, monkeypatch: Any) -> None:
    reads: list[str] = []
    read_back = store._read_back

    async def counted(key: str, field: str) -> Any:
        reads.append(field)
        return await read_back(key, field)

    monkeypatch.setattr(store, "_read_back", counted)
    async with store.watch("other") as events:
        await store.set(put("big", BIG))
        await store.set(put("small", 4, stream="other"))
        event = await next_event(events)
    assert event["id"] == "small" and reads == []


def test_the_bound_as_option_and_url_option() -> None:
    assert RedisStream(fakeredis.FakeAsyncRedis()).max_event_bytes == MAX_EVENT_BYTES == 1024 * 1024
    assert RedisStream.from_url("redis://localhost:6379/0?max_event_bytes=5000").max_event_bytes == 5000
    assert RedisStream.from_url("redis://localhost:6379/0", max_event_bytes=7).max_event_bytes == 7
    for url, options in [("redis://localhost:6379/0?max_event_bytes=5MB", {}),
                         ("redis://localhost:6379/0?max_event_bytes=0", {}),
                         ("redis://localhost:6379/0?max_event_bytes=10", {"max_event_bytes": 11}),
                         ("redis://localhost:6379/0", {"max_event_bytes": True})]:
        with pytest.raises(ValueError, match="max_event_bytes"):
            RedisStream.from_url(url, **options)
