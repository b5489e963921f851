"""``RedisStream``'s watch pool is made by the first watch, not by the constructor, and closed by ``aclose``; a store
that never watched makes none, its close included.

Before: ``RedisStream(client)`` made the pool at once (about 12 times the construction's time and memory without it),
for every store, most of which never watch. The pool's guarantees themselves (bounded, waiting, PoolExhaustedError,
none of the caller's connections) are tested in test_redis_given_client_watch_pool_fake.py and the integration tests.
"""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest

from iii.stream import StreamSetInput
from iii_streams import redis as redis_module
from iii_streams.errors import StreamClosedError
from iii_streams.redis import RedisStream, _WatchPool

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[_WatchPool]:
    """Every watch pool made, and each one's disconnects counted on it (``disconnects``)."""
    pools: list[_WatchPool] = []
    real_like = _WatchPool.like.__func__  # type: ignore[attr-defined]
    real_disconnect = _WatchPool.disconnect

    def like(cls: type[_WatchPool], client: Any) -> _WatchPool | None:
        pool: _WatchPool | None = real_like(cls, client)
        if pool is not None:
            pool.disconnects = 0  # type: ignore[attr-defined]
            pools.append(pool)
        return pool

    async def disconnect(self: _WatchPool, *args: Any, **kwargs: Any) -> None:
        self.disconnects += 1  # type: ignore[attr-defined]
        await real_disconnect(self, *args, **kwargs)

    monkeypatch.setattr(redis_module._WatchPool, "like", classmethod(like))
    monkeypatch.setattr(redis_module._WatchPool, "disconnect", disconnect)
    return pools


async def test_the_watch_pool_is_made_by_the_first_watch_and_closed_by_aclose(made: list[_WatchPool]) -> None:
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    store = RedisStream(client)
    assert made == []  # before: one pool, made by the constructor
    await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="before", data=1))
    assert made == []  # commands take the caller's pool
    async with store.watch("s") as first, store.watch("s") as second:
        assert len(made) == 1
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="seen", data=1))
        assert (await anext(first))["id"] == (await anext(second))["id"] == "seen"
    async with store.watch("s"):  # after the last watch closed: the same pool
        assert len(made) == 1
    assert made[0].disconnects == 0
    await store.aclose()
    assert len(made) == 1 and made[0].disconnects >= 1
    assert await client.ping()  # the caller's client stays open


async def test_a_store_that_never_watched_makes_no_pool_and_closes(made: list[_WatchPool]) -> None:
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    store = RedisStream(client)
    await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
    await store.aclose()
    assert made == []
    with pytest.raises(StreamClosedError):
        async with store.watch("s"):
            pass
    assert made == []  # a watch after the close is refused before any pool is made


async def test_a_store_from_url_makes_its_watch_pool_at_the_first_watch(made: list[_WatchPool]) -> None:
    store = RedisStream.from_url("redis://127.0.0.1:1/0")  # no server there: nothing connects here
    assert made == []
    await store.aclose()
    assert made == []
