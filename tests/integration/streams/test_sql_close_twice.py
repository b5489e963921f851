"""``SQLStream.aclose()`` called while a close is under way returns once that close ended, not at once (as
``RedisStream``'s, test_redis_close_twice.py). Before: the second call saw the store closed and returned while the
first still flushed its write batches and disposed of its pool; a caller that then removed the SQLite file or dropped
the database did it under them. A second close from another event loop raises (it waited for good)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from iii.stream import StreamGetInput, StreamSetInput
from iii_streams import SQLStream
from tests.integration.streams.held_close import (
    HeldClose,
    a_cancelled_second_aclose_leaves_the_first_running,
    an_aclose_from_another_loop_raises_while_the_first_runs,
)

pytestmark = pytest.mark.timeout(30)


async def test_a_second_aclose_returns_once_the_first_ended(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    store = SQLStream.from_url(url)
    await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
    held = HeldClose(store._writes)
    first = await held.first_close(store)
    second = asyncio.create_task(store.aclose())
    await asyncio.wait({second}, timeout=0.3)  # a wait for something that must NOT happen
    assert not second.done(), "the second aclose returned while the first was still closing"
    held.may_end.set()
    await asyncio.wait_for(asyncio.gather(first, second), 10)
    again = SQLStream.from_url(url)
    try:
        assert await again.get(StreamGetInput(stream_name="s", group_id="g", item_id="i")) == 1
    finally:
        await again.aclose()


async def test_a_cancelled_second_aclose_leaves_the_first_running() -> None:
    store = SQLStream.from_url("sqlite+aiosqlite://")
    await a_cancelled_second_aclose_leaves_the_first_running(store, HeldClose(store._writes))


async def test_an_aclose_from_another_loop_raises_while_the_first_runs() -> None:
    store = SQLStream.from_url("sqlite+aiosqlite://")
    await an_aclose_from_another_loop_raises_while_the_first_runs(store, HeldClose(store._writes))


async def test_on_postgresql_a_second_aclose_from_another_loop_raises_and_the_first_ends_the_watches(
        pg_url: str) -> None:
    store = SQLStream.from_url(pg_url)
    await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
    events = await store.watch("s").open()  # its LISTEN connection is closed by the first close

    async def rest() -> list[Any]:
        return [event async for event in events]

    await an_aclose_from_another_loop_raises_while_the_first_runs(store, HeldClose(store._writes))
    assert await asyncio.wait_for(rest(), 5) == []
