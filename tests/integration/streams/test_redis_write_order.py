"""RedisStream: the writes of one item issued together go out in the order they were made, as on the other stores
(README, group commit: "the writes of one item keep their order"), and ``publish`` calls made in order reach Redis
in order.

Before: ``set`` and ``delete`` ran as scripts of their own on any pooled connection while updates queued per hash,
so ``gather(inc, set {"n": 100}, inc, delete, inc)`` ended ``{'n': 103}`` (``{'n': 1}`` on memory, SQLite and
PostgreSQL), 200 concurrent sets of one item answered 47-65 of 4,000 old values out of order, and publishes on
pooled connections reached Redis in another order (a subscriber ended on a stale value).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis

from iii.stream import (
    StreamDeleteInput,
    StreamGetInput,
    StreamListGroupsInput,
    StreamSetInput,
    StreamUpdateInput,
    UpdateIncrement,
)
from iii.wire import loads
from iii_streams import RedisStream
from iii_streams.errors import StreamBackendError, StreamTimeoutError
from iii_streams.events import make_event
from iii_streams.redis import KeyLayout
from tests.integration.streams.conftest import delete_redis_keys
from tests.integration.streams.sent_commands import record_script_calls
from tests.services import require_redis

pytestmark = pytest.mark.redis


@pytest.fixture
async def store() -> AsyncIterator[RedisStream]:
    tag = f"order-{uuid.uuid4().hex[:8]}"
    async with RedisStream.from_url(require_redis(), layout=KeyLayout(prefix=f"{tag}:stream"),
                                    channel=f"{tag}::events") as opened:
        try:
            yield opened
        finally:
            await delete_redis_keys(f"{tag}:*")


def _item(item_id: str = "i", group_id: str = "g") -> dict[str, str]:
    return {"stream_name": "s", "group_id": group_id, "item_id": item_id}


async def test_a_set_and_a_delete_between_updates_keep_their_order(store: RedisStream) -> None:
    for round_ in range(10):
        item = _item(f"i{round_}")

        def inc(item: dict[str, str] = item) -> Any:
            return store.update(StreamUpdateInput(**item, ops=[UpdateIncrement(path="n", by=1)]))

        results = await asyncio.gather(inc(), store.set(StreamSetInput(**item, data={"n": 100})), inc(),
                                       store.delete(StreamDeleteInput(**item)), inc())
        assert [r.old_value for r in results] == [None, {"n": 1}, {"n": 100}, {"n": 101}, None], round_
        assert [results[i].new_value for i in (0, 1, 2, 4)] == [{"n": 1}, {"n": 100}, {"n": 101}, {"n": 1}]
        assert await store.get(StreamGetInput(**item)) == {"n": 1}


async def test_concurrent_sets_of_one_item_answer_and_publish_in_order(store: RedisStream) -> None:
    async with store.watch("s") as events:
        for round_ in range(5):
            item = _item(f"i{round_}")
            results = await asyncio.gather(*(store.set(StreamSetInput(**item, data=j)) for j in range(200)))
            assert [r.old_value for r in results] == [None, *range(199)], round_
            assert await store.get(StreamGetInput(**item)) == 199
            seen = [await asyncio.wait_for(anext(events), 10) for _ in range(200)]
            assert [e["event"]["data"] for e in seen] == list(range(200)), round_
            assert [e["event"]["type"] for e in seen] == ["create"] + ["update"] * 199


async def test_sets_and_deletes_of_one_group_go_out_together(store: RedisStream,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Distinct items of one group stay pipelined: writes waiting together share one script."""
    sent = record_script_calls(monkeypatch)
    results = await asyncio.gather(*(store.set(StreamSetInput(**_item(f"i{n}"), data=n)) for n in range(64)))
    assert [r.old_value for r in results] == [None] * 64
    deleted = await asyncio.gather(*(store.delete(StreamDeleteInput(**_item(f"i{n}"))) for n in range(64)))
    assert [d.old_value for d in deleted] == list(range(64))
    assert len(sent) < 2 * 64 // 4, sent  # 2 x 64 writes: a script each before


async def test_a_set_withdrawn_before_it_was_sent_is_not_applied(store: RedisStream,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    real_run_once = RedisStream._run_once
    held, release = asyncio.Event(), asyncio.Event()

    async def held_first(self: RedisStream, *args: Any, **kwargs: Any) -> Any:
        if not held.is_set():
            held.set()
            await release.wait()
        return await real_run_once(self, *args, **kwargs)

    monkeypatch.setattr(RedisStream, "_run_once", held_first)
    first = asyncio.ensure_future(store.set(StreamSetInput(**_item(), data=1)))
    await held.wait()  # the first set is in flight: the next one waits behind it
    with pytest.raises(StreamTimeoutError) as info:
        await store.set(StreamSetInput(**_item(), data=2), timeout=0.05)
    assert info.value.applied is False, info.value
    release.set()
    assert (await first).old_value is None
    assert await store.get(StreamGetInput(**_item())) == 1


async def test_publishes_made_in_order_reach_redis_in_order(store: RedisStream) -> None:
    direct = aioredis.Redis.from_url(require_redis())
    pubsub = direct.pubsub()
    try:
        await pubsub.subscribe(store.channel)
        while (await pubsub.get_message(timeout=1.0) or {}).get("type") != "subscribe":
            pass
        for round_ in range(5):
            await asyncio.gather(*(store.publish(make_event("s", "g", "i", "update", {"v": v})) for v in range(200)))
            got: list[Any] = []
            while len(got) < 200:
                message = await pubsub.get_message(timeout=5.0)
                assert message is not None, f"only {len(got)} of 200 events came"
                if message["type"] == "message":
                    got.append(loads(message["data"])["event"]["data"]["v"])
            assert got == list(range(200)), round_
    finally:
        await pubsub.aclose()
        await direct.aclose()


async def test_a_write_refused_for_the_keys_type_is_not_applied(store: RedisStream) -> None:
    """Another program's string where a group's hash would be: Redis refuses the script at its first read, so
    nothing was applied (it said "may have been applied")."""
    await store.client.set(store.layout.key("s", "str"), "hello")
    item = _item(group_id="str")
    writes: Sequence[Callable[[], Awaitable[Any]]] = (
        lambda: store.set(StreamSetInput(**item, data=1)), lambda: store.delete(StreamDeleteInput(**item)),
        lambda: store.update(StreamUpdateInput(**item, ops=[UpdateIncrement(path="n", by=1)])))
    for write in writes:
        with pytest.raises(StreamBackendError, match="WRONGTYPE") as info:
            await write()
        assert info.value.applied is False, info.value
        assert "refused the command before it changed anything" in str(info.value)
    assert await store.client.get(store.layout.key("s", "str")) == b"hello"


async def test_keys_of_other_types_are_no_groups(store: RedisStream) -> None:
    await store.client.set(store.layout.key("s", "str"), "hello")
    await store.client.rpush(store.layout.key("s", "list"), "x")
    await store.set(StreamSetInput(**_item(group_id="real"), data=1))
    assert await store.list_groups(StreamListGroupsInput(stream_name="s")) == ["real"]
    assert await store.list_all() == [("s", ["real"])]
