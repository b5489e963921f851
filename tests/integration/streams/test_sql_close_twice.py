"""``SQLStream.aclose()`` called while a close is under way returns once that close ended, not at once (as
``RedisStream``'s, test_redis_close_twice.py). Before: the second call saw the store closed and returned while the
first still flushed its write batches and disposed of its pool; a caller that then removed the SQLite file or dropped
the database did it under them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from iii.stream import StreamGetInput, StreamSetInput
from iii_streams import SQLStream

pytestmark = pytest.mark.timeout(30)


def held_close(store: SQLStream) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold the end of ``store``'s write batches in its close: set ``flushing`` once there, go on once ``may_end``."""
    flushing, may_end = asyncio.Event(), asyncio.Event()
    real_close = store._writes.aclose

    async def held() -> None:
        flushing.set()
        await may_end.wait()
        await real_close()

    store._writes.aclose = held  # type: ignore[method-assign]
    return flushing, may_end


async def test_a_second_aclose_returns_once_the_first_ended(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    store = SQLStream.from_url(url)
    await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
    flushing, may_end = held_close(store)
    first = asyncio.create_task(store.aclose())
    await asyncio.wait_for(flushing.wait(), 5)
    second = asyncio.create_task(store.aclose())
    await asyncio.wait({second}, timeout=0.3)  # a wait for something that must NOT happen
    assert not second.done(), "the second aclose returned while the first was still closing"
    may_end.set()
    await asyncio.wait_for(asyncio.gather(first, second), 10)
    again = SQLStream.from_url(url)
    try:
        assert await again.get(StreamGetInput(stream_name="s", group_id="g", item_id="i")) == 1
    finally:
        await again.aclose()


async def test_a_cancelled_second_aclose_leaves_the_first_running() -> None:
    store = SQLStream.from_url("sqlite+aiosqlite://")
    flushing, may_end = held_close(store)
    first = asyncio.create_task(store.aclose())
    await asyncio.wait_for(flushing.wait(), 5)
    second = asyncio.create_task(store.aclose())
    await asyncio.sleep(0)
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    assert not first.done()
    may_end.set()
    await asyncio.wait_for(first, 10)
