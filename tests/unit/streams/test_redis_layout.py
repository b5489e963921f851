"""RedisStream key layouts (fakeredis): the default stream layout and the state layout ``state:<scope>``, and the
engine's state store choosing the state layout for Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import fakeredis
import pytest

from iii.stream import (
    StreamDeleteInput,
    StreamGetInput,
    StreamListGroupsInput,
    StreamListInput,
    StreamSetInput,
    StreamUpdateInput,
    UpdateIncrement,
)
from iii_engine.modules.stream.store import open_module_store
from iii_engine.settings import ConfigError
from iii_streams import RedisStream
from iii_streams.redis import STATE_LAYOUT, STREAM_LAYOUT, KeyLayout


@pytest.fixture
async def raw() -> AsyncIterator[fakeredis.FakeAsyncRedis]:
    client = fakeredis.FakeAsyncRedis()
    yield client
    await client.aclose()


def test_layout_keys_and_split() -> None:
    assert STREAM_LAYOUT.key("s", "g:1") == "stream:s:g:1"
    assert STATE_LAYOUT.key("anything", "g:1") == "state:g:1"
    assert KeyLayout("app", per_stream=True).split("app:s:g") == ("s", "g")
    assert STREAM_LAYOUT.split("stream:nogroup") is None
    assert STATE_LAYOUT.split("stream:s:g") is None
    with pytest.raises(ValueError, match="prefix must be a non-empty string"):
        KeyLayout("")


async def test_state_layout_reads_and_writes_state_hashes(raw: fakeredis.FakeAsyncRedis) -> None:
    store = RedisStream(raw, layout=STATE_LAYOUT, publish_events=False)
    pubsub = raw.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe("stream::events")
    item = {"stream_name": "ignored", "group_id": "sc:1", "item_id": "k"}
    await store.set(StreamSetInput(**item, data={"z": [], "a": 2**70}))
    assert await raw.hgetall("state:sc:1") == {b"k": b'{"z":[],"a":1180591620717411303424}'}
    await raw.hset("state:other*", "k2", "[1]")  # written by something else (e.g. a production engine)
    assert await store.get(StreamGetInput(stream_name="x", group_id="other*", item_id="k2")) == [1]
    result = await store.update(StreamUpdateInput(**item, ops=[UpdateIncrement(path="n", by=2)]))
    assert result.new_value == {"z": [], "a": 2**70, "n": 2}
    assert await store.list(StreamListInput(stream_name="y", group_id="sc:1")) == [result.new_value]
    await raw.hset("stream:s:decoy", "i", "1")  # stream hashes are not state scopes
    groups = await store.list_groups(StreamListGroupsInput(stream_name="any"))
    assert sorted(groups) == ["other*", "sc:1"]  # exact: scopes with ':' and '*' come back whole
    assert await store.list_all() == [("state", ["other*", "sc:1"])]
    assert (await store.delete(StreamDeleteInput(**item))).old_value == result.new_value
    assert await raw.exists("state:sc:1") == 0
    assert await pubsub.get_message(timeout=0.05) is None  # publish_events=False: no state events
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_default_layout_is_unchanged(raw: fakeredis.FakeAsyncRedis) -> None:
    store = RedisStream(raw)
    await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
    assert await raw.hget("stream:s:g", "i") == b"1"
    assert await store.list_all() == [("s", ["g"])]


def test_module_store_layouts(tmp_path: Path) -> None:
    redis_adapter = {"class": "modules::state::adapters::RedisAdapter", "config": {"redis_url": "redis://127.0.0.1:1"}}
    state = open_module_store("state", {"adapter": redis_adapter})
    assert isinstance(state, RedisStream) and state.layout == STATE_LAYOUT and not state.publish_events
    by_url = open_module_store("state", {"store_url": "redis://127.0.0.1:1/2"})
    assert isinstance(by_url, RedisStream) and by_url.layout == STATE_LAYOUT
    stream = open_module_store("stream", {"store_url": "redis://127.0.0.1:1/2"}, publish_events=True)
    assert isinstance(stream, RedisStream) and stream.layout == STREAM_LAYOUT and stream.publish_events
    with pytest.raises(ConfigError, match=r"^adapter.config.redis_url: must be a redis://"):
        open_module_store("state", {"adapter": {**redis_adapter, "config": {"redis_url": "memory://"}}})
