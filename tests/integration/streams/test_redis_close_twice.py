"""``RedisStream.aclose()`` called while a close is under way returns once that close ended, not at once.

Before: the second call saw ``_closed`` set and returned at once, while the first was still waiting (up to its
bounds) for the update batch in flight on a silent server and before the pools were closed: a caller that then
reads ``let_go_count()``, ends its event loop or reuses the connection count saw a store still closing. A second
close from another event loop raises (it waited for good).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import fakeredis
import pytest

from iii.stream import StreamSetInput, StreamUpdateInput, UpdateIncrement
from iii_streams import RedisStream
from iii_streams import redis as redis_module
from tests.integration.streams.held_close import (
    HeldClose,
    a_cancelled_second_aclose_leaves_the_first_running,
    an_aclose_from_another_loop_raises_while_the_first_runs,
)
from tests.integration.streams.private_redis import PrivateRedis
from tests.integration.streams.test_attack_a3_redis_send import stopped
from tests.polling import until

pytestmark = pytest.mark.timeout(30)

BOUND_S = 0.5


async def test_a_second_aclose_returns_once_the_first_ended(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_module, "_STOP_S", BOUND_S)
    with PrivateRedis(tmp_path) as server:
        await server.start()
        store = RedisStream.from_url(server.url, socket_timeout=None)
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data={"n": 0}))
        async with store.watch("s"):  # a watch open too: its reader is stopped by the close
            pass
        async with stopped(server):
            update = asyncio.create_task(store.update(StreamUpdateInput(
                stream_name="s", group_id="g", item_id="i", ops=[UpdateIncrement(path="n", by=1)])))
            batches = store._updates
            await until(lambda: len(batches) == 0 and bool(batches._runners))  # its batch waits for Redis
            first = asyncio.create_task(store.aclose())
            await asyncio.sleep(0)  # the first close is under way (its update batches end awaited)
            second = asyncio.create_task(store.aclose())
            await asyncio.wait({second}, timeout=BOUND_S / 2)  # a wait for something that must NOT happen
            assert not second.done(), "the second aclose returned while the first was still closing"
            await asyncio.wait_for(asyncio.gather(first, second), 10)
            with pytest.raises(Exception):  # noqa: B017 (cut off by the close: whichever error says so)
                await update


async def test_a_cancelled_second_aclose_leaves_the_first_running() -> None:
    store = RedisStream(fakeredis.FakeAsyncRedis())
    await a_cancelled_second_aclose_leaves_the_first_running(store, HeldClose(store._updates))


async def test_an_aclose_from_another_loop_raises_while_the_first_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_module, "_STOP_S", 20.0)  # the held batches' end is not let go during the test
    store = RedisStream(fakeredis.FakeAsyncRedis())
    await an_aclose_from_another_loop_raises_while_the_first_runs(store, HeldClose(store._updates))
