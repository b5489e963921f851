"""Issue #8 for ``RedisStream`` against a real Redis: no two (stream, group) pairs share a hash, listing one
group or stream never returns another's items, and more callers than pool connections wait instead of failing."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from iii.stream import StreamGetInput, StreamListGroupsInput, StreamListInput, StreamSetInput
from iii_streams import RedisStream
from iii_streams.redis import STREAM_LAYOUT, KeyLayout, PoolExhaustedError
from tests.services import require_redis

pytestmark = pytest.mark.redis

# Pieces that break naive joining (':'), a percent-encoding (the escape character and ready-made escapes) or
# SCAN globs; names are the pieces and pairs of them, so "a:b"+"c" meets "a"+"b:c" and "%3A" meets ":".
PIECES = ["a", ":", "%", "%3A", "%25", "*", "?", "[a]", "\\", "b:c"]
NAMES = sorted({*PIECES, *("".join(p) for p in itertools.product(PIECES, repeat=2)), ""})


@pytest.fixture
async def layout_store() -> AsyncIterator[tuple[RedisStream, aioredis.Redis, KeyLayout]]:
    url = require_redis()
    layout = KeyLayout(f"trust{uuid.uuid4().hex[:10]}")  # a private namespace on the shared Redis
    raw = aioredis.Redis.from_url(url)
    async with RedisStream.from_url(url, layout=layout, publish_events=False) as store:
        yield store, raw, layout
    keys = [key async for key in raw.scan_iter(match=f"{layout.prefix}:*", count=1000)]
    if keys:
        await raw.delete(*keys)
    await raw.aclose()


def test_keys_are_distinct_and_split_back() -> None:
    pairs = list(itertools.product(NAMES, repeat=2))
    keys = {STREAM_LAYOUT.key(s, g): (s, g) for s, g in pairs}
    assert len(keys) == len(pairs), "two (stream, group) pairs share a Redis hash"
    for key, pair in keys.items():
        assert STREAM_LAYOUT.split(key) == pair
        assert key.startswith(STREAM_LAYOUT.group_prefix(pair[0]))
        for other in PIECES:  # the SCAN prefix of list_groups(other) never matches another stream's hash
            assert key.startswith(STREAM_LAYOUT.group_prefix(other)) == (other == pair[0]), (key, other)


def test_production_layout_kept_for_plain_names() -> None:
    assert STREAM_LAYOUT.key("todos", "user:1") == "stream:todos:user:1"  # group ids keep every character
    assert STREAM_LAYOUT.key("my-stream_1.x", "g*?") == "stream:my-stream_1.x:g*?"
    assert STREAM_LAYOUT.key("a:b", "c") == "stream:a%3Ab:c"
    assert STREAM_LAYOUT.key("50%", "c") == "stream:50%25:c"
    assert STREAM_LAYOUT.split("stream:a%3Ab:c:d") == ("a:b", "c:d")
    assert STREAM_LAYOUT.split("stream:a%zz:c") == ("a%zz", "c")  # not our escape: taken literally


async def test_tricky_triples_round_trip(layout_store: tuple[RedisStream, aioredis.Redis, KeyLayout]) -> None:
    store, raw, layout = layout_store
    triples = [(s, g, i) for s in NAMES[::3] for g in NAMES[1::4] for i in ("x", "x:y")]
    await asyncio.gather(*(store.set(StreamSetInput(stream_name=s, group_id=g, item_id=i, data=[s, g, i]))
                           for s, g, i in triples))
    got = await asyncio.gather(*(store.get(StreamGetInput(stream_name=s, group_id=g, item_id=i))
                                 for s, g, i in triples))
    assert got == [list(t) for t in triples]
    by_group: dict[tuple[str, str], list[list[str]]] = {}
    for s, g, i in triples:
        by_group.setdefault((s, g), []).append([s, g, i])
    for (s, g), expected in by_group.items():
        listed = await store.list(StreamListInput(stream_name=s, group_id=g))
        assert sorted(listed) == sorted(expected), (s, g)
    streams = sorted({s for s, _, _ in triples})
    for s in streams:
        groups = await store.list_groups(StreamListGroupsInput(stream_name=s))
        assert sorted(groups) == sorted({g for s2, g, _ in triples if s2 == s}), s
    assert await store.list_all() == [(s, sorted({g for s2, g, _ in triples if s2 == s})) for s in streams]
    assert len([k async for k in raw.scan_iter(match=f"{layout.prefix}:*", count=1000)]) == len(by_group)


async def test_small_pool_many_callers_all_succeed() -> None:
    url = require_redis()
    layout = KeyLayout(f"trust{uuid.uuid4().hex[:10]}")
    async with RedisStream.from_url(url, layout=layout, max_connections=2, publish_events=False) as store:
        try:
            results = await asyncio.gather(
                *(store.set(StreamSetInput(stream_name="s", group_id="g", item_id=str(n), data=n))
                  for n in range(250)),
                *(store.get(StreamGetInput(stream_name="s", group_id="g", item_id=str(n))) for n in range(250)),
                return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            assert not errors, f"{len(errors)} of 500 failed, first: {errors[0]!r}"
            assert len(await store.list(StreamListInput(stream_name="s", group_id="g"))) == 250
            pool = store.client.connection_pool
            assert len(pool._in_use_connections) + len(pool._available_connections) <= 2
        finally:
            await store.client.delete(layout.key("s", "g"))


async def test_exhausted_pool_fails_clearly_after_the_wait() -> None:
    url = require_redis()
    async with RedisStream.from_url(url, max_connections=2, pool_timeout=0.3, publish_events=False) as store:
        pool = store.client.connection_pool
        held = [await pool.get_connection() for _ in range(2)]  # type: ignore[no-untyped-call]  # both busy
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            # (a stream of its own: the shared server may hold another run's or program's "s")
            item = StreamGetInput(stream_name=f"pool{uuid.uuid4().hex[:10]}", group_id="g", item_id="i")
            with pytest.raises(PoolExhaustedError, match=r"all 2 connections stayed busy for 0\.3 s"):
                await store.get(item)
            assert loop.time() - started >= 0.29  # it waited for the whole pool_timeout first
            await pool.release(held.pop())
            assert await store.get(item) is None
        finally:
            for connection in held:
                await pool.release(connection)


def test_pool_options_are_checked() -> None:
    with pytest.raises(ValueError, match="max_connections must be a positive integer"):
        RedisStream.from_url("redis://127.0.0.1:1/0", max_connections=0)
    with pytest.raises(ValueError, match="pool_timeout must be a positive number"):
        RedisStream.from_url("redis://127.0.0.1:1/0", pool_timeout=-1)


async def test_state_layout_scopes_and_keys_never_meet() -> None:
    """Guard (already true before issue #8): ``state:<scope>`` with the key as field is injective as it is."""
    url = require_redis()
    layout = KeyLayout(f"trust{uuid.uuid4().hex[:10]}", per_stream=False)  # the state layout, private prefix
    pairs = [(scope, key) for scope in NAMES[::5] for key in NAMES[1::5]]
    async with RedisStream.from_url(url, layout=layout, publish_events=False) as store:
        try:
            await asyncio.gather(*(store.set(StreamSetInput(stream_name="x", group_id=scope, item_id=key,
                                                            data=[scope, key])) for scope, key in pairs))
            got = await asyncio.gather(*(store.get(StreamGetInput(stream_name="y", group_id=scope, item_id=key))
                                         for scope, key in pairs))
            assert got == [[scope, key] for scope, key in pairs]
            groups = await store.list_groups(StreamListGroupsInput(stream_name="z"))
            assert sorted(groups) == sorted({scope for scope, _ in pairs})
        finally:
            keys = [k async for k in store.client.scan_iter(match=f"{layout.prefix}:*", count=1000)]
            if keys:
                await store.client.delete(*keys)
