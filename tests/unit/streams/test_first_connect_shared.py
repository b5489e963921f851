"""A store without ``create`` makes one connect before its first operations, which all wait for it and share its
outcome; stores sharing one SQLite engine share its lock.

Before: the first connect was made by each caller in turn, so against a server that accepts and never answers
caller k waited k times the driver's connect timeout (8 ``prepare()`` at once, driver 1 s, store bound 3 s: 2 got
the driver's error, 6 the store's timeout at 3 s; with no bound, 30 callers took 60 s). And two stores on one
in-memory engine each locked its one connection with a lock of their own: their transactions nested and one store's
every operation failed with "cannot start a transaction within a transaction".
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from iii.stream import StreamGetInput, StreamSetInput
from iii_streams.errors import StreamUnavailableError
from iii_streams.sql import SQLStream

pytestmark = pytest.mark.timeout(30)


async def test_callers_of_a_server_that_never_answers_share_one_connect_timeout() -> None:
    silent = socket.socket()  # a PostgreSQL port that accepts connections and never answers them
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{silent.getsockname()[1]}/test"
    try:
        async with SQLStream.from_url(url, timeout=10, connect_args={"timeout": 1}) as store:
            loop = asyncio.get_running_loop()
            began = loop.time()
            results = await asyncio.gather(*(store.prepare() for _ in range(8)), return_exceptions=True)
            took = loop.time() - began
    finally:
        silent.close()
    assert Counter(type(r).__name__ for r in results) == {"StreamUnavailableError": 8}, results
    assert took < 5, took  # one driver timeout (1 s), not one per caller (before: 8 s, or the store's bound)


async def test_a_failed_first_connect_is_tried_again_by_the_next_operation() -> None:
    async with SQLStream.from_url("postgresql+asyncpg://postgres@127.0.0.1:1/test", timeout=5) as store:
        for _ in range(2):
            with pytest.raises(StreamUnavailableError, match="Connect call failed"):
                await store.prepare()
        assert store._opening is None


async def test_stores_sharing_an_in_memory_engine_take_turns() -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    stores = [SQLStream(engine) for _ in range(2)]

    async def work(store: SQLStream, name: str) -> None:
        for i in range(50):
            await store.set(StreamSetInput(stream_name="s", group_id=name, item_id=str(i), data=i))
            assert await store.get(StreamGetInput(stream_name="s", group_id=name, item_id=str(i))) == i

    try:
        await asyncio.gather(*(work(store, f"g{n}") for n, store in enumerate(stores)))
    finally:
        for store in stores:
            await store.aclose()
        await engine.dispose()
