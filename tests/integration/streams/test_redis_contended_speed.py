"""Contended updates of one Redis item (issue #10): what a group-committed batch costs per update, and that the
cheaper path still publishes every event exactly, in order, with its own data."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.asyncio.client as aioredis_client

import iii_streams.redis as redis_store
from iii.stream import StreamSetInput, StreamUpdateInput, UpdateIncrement, UpdateSet
from iii.wire import dumps, loads
from iii_streams import RedisStream
from tests.integration.streams.sent_commands import record_script_calls
from tests.services import require_redis


async def test_one_batch_builds_one_event_head_per_item_and_publishes_every_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = require_redis()
    heads: list[tuple[Any, ...]] = []
    batches: list[int] = []
    real_parts = redis_store.event_json_parts
    real_batch = RedisStream._update_batch

    def counted_parts(*item: Any) -> tuple[str, str]:
        heads.append(item)
        return real_parts(*item)

    async def counted_batch(self: RedisStream, key: str, batch: Sequence[Any]) -> Any:
        batches.append(len(batch))
        return await real_batch(self, key, batch)

    monkeypatch.setattr(redis_store, "event_json_parts", counted_parts)
    monkeypatch.setattr(RedisStream, "_update_batch", counted_batch)
    stream = f"contended-{uuid.uuid4().hex[:8]}"
    channel = f"test-events-{uuid.uuid4().hex[:8]}"  # nobody else's events
    count = 60
    async with RedisStream.from_url(url, channel=channel) as store:
        try:
            async with store.watch(stream_name=stream) as events:
                results = await asyncio.gather(
                    *(
                        store.update(
                            StreamUpdateInput(
                                stream_name=stream, group_id="g", item_id=item, ops=[UpdateIncrement(path="n", by=1)]
                            )
                        )
                        for _ in range(count)
                        for item in ("a", "b")
                    )
                )
                seen = [await asyncio.wait_for(anext(events), 10) for _ in range(2 * count)]
        finally:
            await store.client.delete(f"stream:{stream}:g")
    assert sorted(r.new_value["n"] for r in results) == sorted([*range(1, count + 1)] * 2)
    # each batch encoded at most one event head per item, instead of one per update
    assert sum(batches) == 2 * count
    assert len(heads) <= 2 * len(batches) < 2 * count, (heads, batches)
    for item in ("a", "b"):
        mine = [e for e in seen if e["id"] == item]
        assert [e["event"]["data"] for e in mine] == [{"n": n} for n in range(1, count + 1)]
        assert [e["event"]["type"] for e in mine] == ["create"] + ["update"] * (count - 1)
        assert all(e["streamName"] == stream and e["groupId"] == "g" and e["type"] == "stream" for e in mine)
        assert all(isinstance(e["timestamp"], int) and e["timestamp"] > 0 for e in mine)


async def test_a_batch_sends_its_events_as_one_argument_and_each_arrives_exactly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """redis-py packs small arguments at a cost per argument (2.8 µs each for 256): a batch's events travel joined
    by newlines and the script splits them; values holding newlines, CRs, non-ASCII text and big integers must
    still arrive byte for byte, one event per update, in order."""
    url = require_redis()
    # the argument count of every script call, queued in a pipeline or sent on a connection (packed by the store)
    evals = record_script_calls(monkeypatch)
    real_queue = aioredis_client.Pipeline.pipeline_execute_command

    def queued(self: aioredis_client.Pipeline, *args: Any, **options: Any) -> Any:
        if args and args[0] in ("EVAL", "EVALSHA"):
            evals.append(len(args))
        return real_queue(self, *args, **options)

    monkeypatch.setattr(aioredis_client.Pipeline, "pipeline_execute_command", queued)
    stream = f"contended-{uuid.uuid4().hex[:8]}"
    channel = f"test-events-{uuid.uuid4().hex[:8]}"
    values: list[Any] = [
        "line\nbreak",
        "cr\r\nlf",
        "\n",
        "",
        "ünïcödé ☃ \u2028 \U0001f600",
        2**70,
        {"nested": ["a\nb", {"k\n": -(2**65)}]},
        None,
        "tail\\n",
    ]
    count = 3 * len(values)
    async with RedisStream.from_url(url, channel=channel) as store:
        try:
            async with store.watch(stream_name=stream) as events:
                results = await asyncio.gather(
                    *(
                        store.update(
                            StreamUpdateInput(
                                stream_name=stream,
                                group_id="g",
                                item_id="i",
                                ops=[
                                    UpdateSet(path="v", value=values[n % len(values)]),
                                    UpdateIncrement(path="n", by=1),
                                ],
                            )
                        )
                        for n in range(count)
                    )
                )
                seen = [await asyncio.wait_for(anext(events), 10) for _ in range(count)]
        finally:
            await store.client.delete(f"stream:{stream}:g")
    # command, script, key count, key, channel, field count, absent flags, field, text read, new text, events
    assert evals and max(evals) <= 11, evals
    assert sorted(r.new_value["n"] for r in results) == list(range(1, count + 1))
    by_n = {r.new_value["n"]: r.new_value for r in results}
    assert [e["event"]["data"] for e in seen] == [by_n[n] for n in range(1, count + 1)]
    assert [e["event"]["data"]["v"] for e in seen] == [values[n % len(values)] for n in range(count)]


@pytest.mark.parametrize("first", [None, {"n": 5}], ids=["absent", "present"])
async def test_an_item_written_by_another_process_between_read_and_write_is_read_again(first: Any) -> None:
    """The batch's script writes only if every item still holds what was read (absent included); a foreign write
    in between costs one conflict and a fresh read, and a foreign write to another item of the hash costs none."""
    url = require_redis()
    stream = f"contended-{uuid.uuid4().hex[:8]}"
    key = f"stream:{stream}:g"
    foreign = aioredis.Redis.from_url(url)
    async with RedisStream.from_url(url, channel=f"test-events-{uuid.uuid4().hex[:8]}") as store:
        try:
            if first is not None:
                await foreign.hset(key, "i", dumps(first))
            real_execute = store.client.execute_command
            reads = 0

            async def racing_hmget(*args: Any, **kwargs: Any) -> Any:
                nonlocal reads
                if args[0] != "HMGET":
                    return await real_execute(*args, **kwargs)
                reads += 1
                got = await real_execute(*args, **kwargs)
                if reads == 1:  # another process writes the item after our read
                    await foreign.hset(key, "i", dumps({"n": 100}))
                elif reads == 2:  # and then an item we do not touch, which must not count as a race
                    await foreign.hset(key, "other", dumps({"x": 1}))
                return got

            store.client.execute_command = racing_hmget  # type: ignore[method-assign]
            request = StreamUpdateInput(
                stream_name=stream, group_id="g", item_id="i", ops=[UpdateIncrement(path="n", by=1)]
            )
            result = await store.update(request)
            assert (result.old_value, result.new_value) == ({"n": 100}, {"n": 101})
            assert (reads, store.update_conflicts) == (2, 1)
            assert loads(await foreign.hget(key, "i")) == {"n": 101}
            assert loads(await foreign.hget(key, "other")) == {"x": 1}
        finally:
            await foreign.delete(key)
            await foreign.aclose()


async def test_an_item_this_process_wrote_last_is_updated_without_a_read() -> None:
    """The text this process wrote is checked by the write script itself (one round trip per batch); a foreign
    write makes the script refuse, and the item is read again; the store's own set and delete forget it; at most
    1024 items and texts up to 8192 characters are remembered."""
    url = require_redis()
    stream = f"contended-{uuid.uuid4().hex[:8]}"
    key = f"stream:{stream}:g"
    foreign = aioredis.Redis.from_url(url)
    async with RedisStream.from_url(url, channel=f"test-events-{uuid.uuid4().hex[:8]}") as store:
        real_execute = store.client.execute_command
        reads = 0

        async def counted_hmget(*args: Any, **kwargs: Any) -> Any:
            nonlocal reads
            reads += args[0] == "HMGET"
            return await real_execute(*args, **kwargs)

        store.client.execute_command = counted_hmget  # type: ignore[method-assign]

        def increment(item: str = "i") -> StreamUpdateInput:
            return StreamUpdateInput(
                stream_name=stream, group_id="g", item_id=item, ops=[UpdateIncrement(path="n", by=1)]
            )

        try:
            for n in range(1, 6):
                assert (await store.update(increment())).new_value == {"n": n}
            assert reads == 1  # only the first batch read the item
            await foreign.hset(key, "i", dumps({"n": 100}))  # another process writes it
            result = await store.update(increment())
            assert (result.old_value, result.new_value) == ({"n": 100}, {"n": 101})
            assert (reads, store.known_misses, store.update_conflicts) == (2, 1, 0)
            await store.update(increment())
            assert reads == 3  # an item another process wrote is read first for a while
            await store.set(StreamSetInput(stream_name=stream, group_id="g", item_id="j", data={"n": 7}))
            await store.update(increment("j"))
            await store.update(increment("j"))
            assert reads == 4  # "j" was read once, after the store's own set
            await store.set(StreamSetInput(stream_name=stream, group_id="g", item_id="j", data={"n": 50}))
            assert (await store.update(increment("j"))).new_value == {"n": 51}  # forgotten at the set: read again
            assert (reads, store.known_misses) == (5, 1)
            big = StreamUpdateInput(
                stream_name=stream, group_id="g", item_id="big", ops=[UpdateSet(path="s", value="x" * 9000)]
            )
            await store.update(big)
            await store.update(big)
            assert reads == 7  # a text over 8192 characters is not remembered
            await asyncio.gather(*(store.update(increment(f"many-{i}")) for i in range(1100)))
            assert len(store._known) <= 1024
        finally:
            await foreign.delete(key)
            await foreign.aclose()
