"""A Redis store URL may say where the store's data and events go: ``?key_prefix=…`` and ``?channel=…``.

So an engine configured by URL alone (``store_url``) can share one Redis with another engine without sharing data
or events. Redis's pub/sub channels are global to the server, not per database: two engines on ``/0`` and ``/1``
with the default channel see each other's events. Before: ``?key_prefix=`` reached redis-py's connection as a
keyword and every operation failed (``TypeError: AbstractConnection.__init__() got an unexpected keyword argument
'key_prefix'``); there was no way to set either from a URL.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from iii.stream import StreamGetInput, StreamSetInput
from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.stream.store import open_module_store
from iii_engine.settings import ConfigError
from iii_streams import RedisStream, open_stream
from iii_streams.redis import STATE_LAYOUT, KeyLayout, store_url_options
from tests.integration.engine_streams.helpers import Worker, engine_config
from tests.integration.streams.conftest import delete_redis_keys
from tests.services import require_redis

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]


@pytest.fixture
async def run() -> AsyncIterator[str]:
    """A name of this run's own; its keys are deleted afterwards."""
    name = f"iii-url-{uuid.uuid4().hex[:10]}"
    yield name
    await delete_redis_keys(f"{name}*")


def _item(data: object = None) -> dict[str, object]:
    return {"stream_name": "todos", "group_id": "g", "item_id": "i", **({} if data is None else {"data": data})}


async def test_two_stores_on_one_redis_keep_their_data_and_events_apart(run: str) -> None:
    base = require_redis()
    sep = "&" if "?" in base else "?"
    a = open_stream(f"{base}{sep}key_prefix={run}-a&channel={run}-a::events")
    b = open_stream(f"{base}{sep}key_prefix={run}-b&channel={run}-b::events")
    raw = aioredis.Redis.from_url(base)
    try:
        assert isinstance(a, RedisStream) and isinstance(b, RedisStream)
        assert (a.layout, a.channel) == (KeyLayout(f"{run}-a:stream"), f"{run}-a::events")
        async with a.watch() as a_events, b.watch() as b_events:
            await a.set(StreamSetInput(**_item("from a")))  # type: ignore[arg-type]
            await b.set(StreamSetInput(**_item("from b")))  # type: ignore[arg-type]
            assert (await a.get(StreamGetInput(**_item()))) == "from a"  # type: ignore[arg-type]
            assert (await b.get(StreamGetInput(**_item()))) == "from b"  # type: ignore[arg-type]
            async with asyncio.timeout(5):
                seen_a, seen_b = await anext(a_events), await anext(b_events)
            assert seen_a["event"]["data"] == "from a" and seen_b["event"]["data"] == "from b"
            await a.set(StreamSetInput(**_item("a again")))  # type: ignore[arg-type]
            async with asyncio.timeout(5):  # a's next event is its own, not b's
                assert (await anext(a_events))["event"]["data"] == "a again"
        assert await raw.hget(f"{run}-a:stream:todos:g", "i") == b'"a again"'
        assert await raw.hget(f"{run}-b:stream:todos:g", "i") == b'"from b"'
    finally:
        await a.aclose()
        await b.aclose()
        await raw.aclose()


async def test_an_engine_configured_by_url_alone_keeps_its_keys_under_its_prefix(run: str) -> None:
    # one URL for both modules, as a configuration would have it: the prefix is a namespace before each layout's
    # own, so the state module's scopes and the stream module's groups stay apart (one prefix in place of both
    # layouts' made a state scope "todos:g" read the stream's group)
    base = require_redis()
    sep = "&" if "?" in base else "?"
    stream_url = state_url = f"{base}{sep}key_prefix={run}&channel={run}::events"
    # names of this run's own: unprefixed keys of fixed names ("stream:todos:g", "state:sc") may be another test's,
    # written at the same time on the same Redis, and would say nothing about this engine
    stream, scope = f"{run}-todos", f"{run}-sc"
    item = {"stream_name": stream, "group_id": "g", "item_id": "i"}
    config = engine_config(store_url=stream_url)
    modules = [ModuleSpec(m.class_name, {"store_url": state_url}) if m.class_name == "modules::state::StateModule"
               else m for m in config.modules or []]
    raw = aioredis.Redis.from_url(base)
    try:
        async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=modules)) as engine:
            worker = await Worker.connect(engine.url)
            await worker.result("stream::set", {**item, "data": 1})
            await worker.result("state::set", {"scope": scope, "key": "k", "value": 2})
            assert await worker.result("state::list_groups", {}) == {"groups": [scope]}
            await worker.close()
        assert await raw.hget(f"{run}:stream:{stream}:g", "i") == b"1"
        assert await raw.hget(f"{run}:state:{scope}", "k") == b"2"  # the state layout's shape, under the URL's prefix
        assert await raw.exists(f"stream:{stream}:g", f"state:{scope}") == 0
    finally:
        await raw.delete(f"stream:{stream}:g", f"state:{scope}")  # should the prefix ever be lost
        await raw.aclose()


def test_the_state_layout_keeps_its_shape_under_a_prefix_from_the_url() -> None:
    store = open_module_store("state", {"store_url": "redis://127.0.0.1:1/2?key_prefix=tenant-7"})
    assert isinstance(store, RedisStream)
    assert store.layout == KeyLayout("tenant-7:state", per_stream=STATE_LAYOUT.per_stream)
    assert store.channel == "tenant-7::stream::events"  # no channel in the URL: the prefix's own


@pytest.mark.parametrize(("url", "message"), [
    ("redis://h/0?key_prefix=a&key_prefix=b", "key_prefix is given twice in 'redis://h/0?key_prefix=a&key_prefix=b'"),
    ("redis://:pw@h/0?key_prefix=", "key_prefix is empty in 'redis://:***@h/0?key_prefix=': leave it out for the "
                                     "default"),
    # an empty channel made the store's watches fall back to the shared stream::events
    ("redis://h/0?channel=", "channel is empty in 'redis://h/0?channel=': leave it out for the default"),
])
def test_a_bad_url_option_is_a_config_error_naming_it(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        open_module_store("stream", {"store_url": url})
    assert str(raised.value) == f"store_url: {message}"


def test_a_channel_given_twice_must_agree() -> None:
    with pytest.raises(ValueError, match=r"channel='x' contradicts the channel in 'redis://h/0\?channel=y'"):
        RedisStream.from_url("redis://h/0?channel=y", channel="x")
    assert RedisStream.from_url("redis://h/0?channel=y", channel="y").channel == "y"


def test_a_prefix_without_a_channel_keeps_its_events_apart_too() -> None:
    # before: a store given only ?key_prefix= published on the server-wide stream::events, so another namespace's
    # watchers got its events, data included, for items their own namespace does not hold
    assert RedisStream.from_url("redis://h/0?key_prefix=staging").channel == "staging::stream::events"
    assert RedisStream.from_url("redis://h/0?key_prefix=staging&channel=c").channel == "c"
    assert RedisStream.from_url("redis://h/0?key_prefix=staging", channel="c").channel == "c"
    assert RedisStream.from_url("redis://h/0").channel == "stream::events"  # no prefix: production's channel


def test_a_bad_redis_adapter_url_is_a_config_error_naming_it() -> None:
    # before: a bare ValueError at the module's start ("cannot start ... --allow-degraded"), not a configuration error
    adapter = {"class": "modules::stream::adapters::RedisAdapter",
               "config": {"redis_url": "redis://h/0?key_prefix=a&key_prefix=b"}}
    with pytest.raises(ConfigError) as raised:
        open_module_store("stream", {"adapter": adapter})
    assert str(raised.value) == ("adapter.config.redis_url: key_prefix is given twice in "
                                 "'redis://h/0?key_prefix=a&key_prefix=b'")


def test_other_query_parameters_stay_as_written() -> None:
    assert store_url_options("redis://h/0?socket_timeout=2&key_prefix=a%20b&health_check_interval=5#x") == (
        "redis://h/0?socket_timeout=2&health_check_interval=5#x", {"key_prefix": "a b"})
