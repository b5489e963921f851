"""Attack A-St on text no store can encode: an unpaired surrogate (``"\\ud800"``, which JSON can carry as an escape)
in a name or a value, and NUL in a PostgreSQL name. Before, such a write reached the driver inside a shared batch:
on SQLite (one queue per database) it failed every other caller's write of the batch with a raw
UnicodeEncodeError; on PostgreSQL and Redis it failed the other writes of the same item or hash. Now it is a
ValueError naming the field, raised for its own caller alone, and the other writes land. Real SQLite, PostgreSQL
and Redis (keys under a prefix of the test's own)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

from iii.stream import (
    StreamGetInput,
    StreamListGroupsInput,
    StreamListInput,
    StreamSetInput,
    StreamUpdateInput,
    UpdateIncrement,
    UpdateSet,
)
from iii_streams import RedisStream, SQLStream
from iii_streams.base import Backend
from iii_streams.redis import KeyLayout
from tests.json_values import nested
from tests.services import require_redis

SURROGATE = "\ud800"


async def _outcome(call: Any) -> str:
    try:
        await call
    except ValueError as exc:
        return str(exc)
    return "ok"


async def test_a_bad_name_or_value_fails_its_own_write_alone(store: Backend) -> None:
    stream = f"s{uuid.uuid4().hex[:8]}"

    def put(group: str, item: str, data: Any) -> Any:
        return store.set(StreamSetInput(stream_name=stream, group_id=group, item_id=item, data=data))

    outcomes = await asyncio.gather(
        _outcome(put("good", "1", 1)),
        _outcome(put("bad" + SURROGATE, "2", 2)),
        _outcome(put("good", "3", {"t": "a" + SURROGATE})),
        _outcome(put("good", "4" + SURROGATE, 4)),
        _outcome(put("good", "5", "héllo")),
    )
    assert outcomes[0] == outcomes[4] == "ok"
    assert outcomes[1].startswith("group_id holds an unpaired surrogate '\\ud800' (character 3)")
    assert outcomes[2].startswith("data holds an unpaired surrogate '\\ud800'")
    assert outcomes[3].startswith("item_id holds an unpaired surrogate '\\ud800' (character 1)")
    # concurrent writes of different items commit in any order on PostgreSQL (one queue per item)
    assert sorted(await store.list(StreamListInput(stream_name=stream, group_id="good")), key=repr) == ["héllo", 1]
    assert await store.list_groups(StreamListGroupsInput(stream_name=stream)) == ["good"]
    with pytest.raises(ValueError, match="group_id holds an unpaired surrogate"):
        await store.get(StreamGetInput(stream_name=stream, group_id="bad" + SURROGATE, item_id="2"))


async def test_an_update_to_an_unencodable_value_fails_alone_in_its_batch(store: Backend) -> None:
    item = {"stream_name": f"s{uuid.uuid4().hex[:8]}", "group_id": "g", "item_id": "i"}
    increment = StreamUpdateInput(**item, ops=[UpdateIncrement(path="n", by=1)])
    poisoned = StreamUpdateInput(**item, ops=[UpdateSet(path="t", value=SURROGATE)])
    outcomes = await asyncio.gather(*(_outcome(store.update(increment)) for _ in range(5)),
                                    _outcome(store.update(poisoned)),
                                    *(_outcome(store.update(increment)) for _ in range(5)))
    assert outcomes[5].startswith("the updated value holds an unpaired surrogate")
    assert outcomes[:5] + outcomes[6:] == ["ok"] * 10
    assert await store.get(StreamGetInput(**item)) == {"n": 10}


async def test_keys_that_are_one_json_key_fail_their_own_write_and_nothing_is_stored(store: Backend) -> None:
    # Through the Python API a dict may hold 1 and "1": before, the store kept one of the two values and set
    # returned the dict it was given, so the caller never knew the other was gone
    item = {"stream_name": f"s{uuid.uuid4().hex[:8]}", "group_id": "g", "item_id": "i"}
    increment = StreamUpdateInput(**item, ops=[UpdateIncrement(path="n", by=1)])
    poisoned = StreamUpdateInput(**item, ops=[UpdateSet(path="t", value={1: "a", "1": "b"})])
    outcomes = await asyncio.gather(
        _outcome(store.set(StreamSetInput(**{**item, "item_id": "j"}, data={"k": {1: "a", "1": "b"}}))),
        *(_outcome(store.update(increment)) for _ in range(3)), _outcome(store.update(poisoned)),
        *(_outcome(store.update(increment)) for _ in range(3)))
    assert outcomes[0] == outcomes[4] == "object keys 1 and '1' are both the JSON key '1': one value would be lost"
    assert outcomes[1:4] + outcomes[5:] == ["ok"] * 6
    assert await store.get(StreamGetInput(**item)) == {"n": 6}
    assert await store.get(StreamGetInput(**{**item, "item_id": "j"})) is None


async def test_a_nul_in_a_postgresql_name_is_refused_naming_it(pg_url: str) -> None:
    async with SQLStream.from_url(pg_url) as store:
        ok = StreamSetInput(stream_name="s", group_id="g", item_id="ok", data=1)
        nul = StreamSetInput(stream_name="s", group_id="g", item_id="a\x00b", data=2)
        outcomes = await asyncio.gather(_outcome(store.set(ok)), _outcome(store.set(nul)))
        assert list(outcomes) == ["ok", "item_id 'a\\x00b' holds a NUL character, which PostgreSQL text cannot store"]
        with pytest.raises(ValueError, match="stream_name 's\\\\x00' holds a NUL"):
            await store.list(StreamListInput(stream_name="s\x00", group_id="g"))



async def test_a_value_too_deep_for_its_change_event_is_refused_alone_and_the_deepest_kept_is_watched(
        store: Backend) -> None:
    """A value nested 127 or 128 levels was kept, but its change event (2 levels more) was past the 128 levels JSON
    is read with: a Redis or PostgreSQL watcher dropped it ("a non-JSON message"); at 126 a stream trigger's call (1
    more) could not be written. It is refused, naming the limit; the deepest value kept (125) reaches a watcher
    whole."""
    stream = f"s{uuid.uuid4().hex[:8]}"

    def put(item: str, data: Any) -> Any:
        return store.set(StreamSetInput(stream_name=stream, group_id="g", item_id=item, data=data))

    async with store.watch(stream) as events:
        outcomes = await asyncio.gather(*(_outcome(put(str(levels), nested(levels))) for levels in (126, 127, 128)),
                                        _outcome(put("125", nested(125))))
        assert outcomes[3] == "ok"
        for outcome in outcomes[:3]:
            assert outcome == ("data nests deeper than 125 levels: the events it goes into and the trigger calls they "
                               "make add 3, and JSON is read 128 deep at most")
        event = await asyncio.wait_for(anext(events), 10)
        assert (event["id"], event["event"]["data"]) == ("125", nested(125))
    assert await store.list(StreamListInput(stream_name=stream, group_id="g")) == [nested(125)]
    item = {"stream_name": stream, "group_id": "g", "item_id": "u"}
    await store.set(StreamSetInput(**item, data={"a": 1}))
    deeper = StreamUpdateInput(**item, ops=[UpdateSet(path="b", value=nested(125))])  # the object adds one level
    assert (await _outcome(store.update(deeper))).startswith("the updated value nests deeper than 125 levels")
    assert await store.get(StreamGetInput(**item)) == {"a": 1}


async def test_a_send_whose_event_would_be_too_deep_for_a_trigger_call_is_refused(store: Backend) -> None:
    """A send's custom event wraps its data 3 deep, one more than a change event: data 125 deep went out, and its
    stream triggers' calls could not be written."""
    stream = f"s{uuid.uuid4().hex[:8]}"
    async with store.watch(stream) as events:
        refused = ("data nests deeper than 124 levels: the events it goes into and the trigger calls they make add 4, "
                   "and JSON is read 128 deep at most")
        for levels in (125, 129):
            assert await _outcome(store.send(stream, "g", None, "t", nested(levels))) == refused
        await store.send(stream, "g", None, "t", nested(124))
        assert (await asyncio.wait_for(anext(events), 10))["event"]["event"]["data"] == nested(124)


async def test_a_redis_watcher_says_why_it_ignores_a_message_and_reads_on(caplog: pytest.LogCaptureFixture) -> None:
    channel = f"ast{uuid.uuid4().hex[:10]}"
    client = aioredis.Redis.from_url(require_redis())
    async with RedisStream(client, layout=KeyLayout(channel), channel=channel, owns_client=True) as store:
        async with store.watch() as events:
            await client.publish(channel, '{"a":' + "[" * 128 + "]" * 128 + "}")  # another program's, too deep
            await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="after", data=1))
            assert (await asyncio.wait_for(anext(events), 10))["id"] == "after"
    assert (f"ignoring a message on {channel} that is not readable JSON (JSON nested deeper than 128 levels"
            in caplog.text)
