"""A SQL store whose pool has run out makes its callers wait, never fail: a caller waits for a connection, in arrival
order, for as long as its own time limit allows (not the pool's ``pool_timeout``), then gets the store's usual
timeout (a write so refused was not applied); a batch of writes waits only while one of its callers still waits,
and is dropped unrun once none does; writes whose callers left stay counted against ``max_pending`` until their
batch is done with them.

Before (default pool 5 + 10, 8,000 mixed operations, 60 s limit): 1,922-2,041 failed with PoolExhaustedError after
the pool's 30 s wait. Here a pool of one whose only connection is held, its own wait 0.2 s (the operations failed at
0.2 s), or 20 s where a batch's wait is watched (a batch whose callers all left waited on those 20 s).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from iii.stream import StreamGetInput, StreamListInput, StreamSetInput, StreamUpdateInput
from iii_streams import PoolExhaustedError, SQLStream, StreamBackendError, StreamTimeoutError
from tests.polling import until

pytestmark = pytest.mark.timeout(30)

POOL_TIMEOUT = 0.2
ITEM = {"stream_name": "s", "group_id": "g", "item_id": "i"}


@contextlib.asynccontextmanager
async def opened(url: str, pool_timeout: float = POOL_TIMEOUT, **options: Any) -> AsyncIterator[SQLStream]:
    """A store on a pool of one connection whose own wait is ``pool_timeout``, its item ITEM written as n=0."""
    async with SQLStream.from_url(url, create=True, pool_size=1, max_overflow=0, pool_timeout=pool_timeout,
                                  **options) as store:
        await store.set(StreamSetInput(**ITEM, data={"n": 0}))
        yield store


@contextlib.asynccontextmanager
async def held(store: SQLStream, where: str) -> AsyncIterator[None]:
    """The pool's only connection held: by the store itself (an operation of its own holding it) or outside it."""
    if where == "store":
        async with store._read():
            yield
    else:
        conn = await store.engine.connect()
        try:
            yield
        finally:
            await conn.close()


Call = Callable[[SQLStream, float | None], Awaitable[Any]]

CALLS: dict[str, Call] = {
    "get": lambda s, t: s.get(StreamGetInput(**ITEM), timeout=t),
    "list": lambda s, t: s.list(StreamListInput(stream_name="s", group_id="g"), timeout=t),
    "set": lambda s, t: s.set(StreamSetInput(**ITEM, data={"n": 1}), timeout=t),
    "update": lambda s, t: s.update(StreamUpdateInput(**ITEM, ops=[{"type": "increment", "path": "n", "by": 1}]),
                                    timeout=t),
}


@pytest.mark.parametrize("where", ["store", "outside"])
@pytest.mark.parametrize("operation", list(CALLS))
async def test_a_caller_waits_past_pool_timeout_and_runs_once_a_connection_is_free(
        pool_wait_url: str, operation: str, where: str) -> None:
    async with opened(pool_wait_url) as store:
        async with held(store, where):
            call = asyncio.ensure_future(CALLS[operation](store, 10))
            # three of the pool's own waits: it failed at the first before
            done, _ = await asyncio.wait((call,), timeout=POOL_TIMEOUT * 3)
            assert not done, call.exception()
        await asyncio.wait_for(call, 5)  # ran once the connection was given back
        assert await store.get(StreamGetInput(**ITEM)) == {"n": 1 if operation in ("set", "update") else 0}


@pytest.mark.parametrize("operation", list(CALLS))
async def test_past_its_own_limit_it_gets_the_usual_timeout_and_a_write_was_not_applied(
        pool_wait_url: str, operation: str) -> None:
    limit = POOL_TIMEOUT * 3
    async with opened(pool_wait_url) as store:
        loop = asyncio.get_running_loop()
        async with held(store, "store"):
            started = loop.time()
            with pytest.raises(StreamTimeoutError) as failure:
                await CALLS[operation](store, limit)
            took = loop.time() - started
        assert took >= limit * 0.9, took  # not at the pool's own wait
        error = failure.value
        assert not isinstance(error, PoolExhaustedError), repr(error)
        assert f"did not finish within {limit:g} s" in str(error), error
        if operation in ("set", "update"):
            assert error.applied is False and "withdrawn and not applied" in str(error), error
        assert await store.get(StreamGetInput(**ITEM)) == {"n": 0}  # nothing of a refused write was applied


async def test_callers_are_served_in_arrival_order(pool_wait_url: str) -> None:
    """A caller that waited past pool_timeout is not passed by one of its kind that came later."""
    async with opened(pool_wait_url) as store:
        ended: list[str] = []

        async def one(name: str, call: Call) -> None:
            await call(store, 10)
            ended.append(name)

        async with held(store, "store"):
            first = asyncio.ensure_future(one("first", CALLS["list"]))
            await asyncio.sleep(POOL_TIMEOUT * 2)  # (a time, not a synchronisation: the first outlasts pool_timeout)
            assert not first.done()
            second = asyncio.ensure_future(one("second", CALLS["list"]))
            await asyncio.sleep(0.05)
        await asyncio.wait_for(asyncio.gather(first, second), 5)
        assert ended == ["first", "second"]


async def test_writes_take_their_turn_between_reads_queued_before_them(pool_wait_url: str) -> None:
    """Reads and writes both make progress: a write waiting behind lists gets a connection in its turn, not after
    every list queued before it (before: the pool's one FIFO served the three lists first)."""
    async with opened(pool_wait_url, pool_timeout=20) as store:
        ended: list[str] = []

        async def one(name: str, call: Call) -> None:
            await call(store, 10)
            ended.append(name)

        async with held(store, "store"):
            calls = [asyncio.ensure_future(one(f"list{n}", CALLS["list"])) for n in range(3)]
            await asyncio.sleep(0.05)  # (a time, not a synchronisation: the lists queue first)
            calls.append(asyncio.ensure_future(one("set", CALLS["set"])))
            await asyncio.sleep(0.05)
        await asyncio.wait_for(asyncio.gather(*calls), 10)
        assert ended.index("set") < 2, ended  # the pool of one hands its connection out in this order


@pytest.mark.parametrize("where", ["store", "outside"])
async def test_a_batch_whose_callers_all_left_is_dropped_unrun(pool_wait_url: str, where: str) -> None:
    async with opened(pool_wait_url, pool_timeout=20) as store:
        async with held(store, where):
            with pytest.raises(StreamTimeoutError) as failure:
                await CALLS["set"](store, 0.3)
            assert failure.value.applied is False
            # the batch stopped waiting for a connection at once (it waited out pool_timeout, 20 s, before)
            await until(store._writes.idle, within=3)
        # nothing of it ran once the connection was free
        assert await store.get(StreamGetInput(**ITEM)) == {"n": 0}
        await CALLS["update"](store, 5)  # and the store writes at once
        assert await store.get(StreamGetInput(**ITEM)) == {"n": 1}


async def test_a_batch_waits_while_one_of_its_callers_still_waits(pool_wait_url: str) -> None:
    async with opened(pool_wait_url, pool_timeout=20) as store:
        async with held(store, "store"):
            patient = asyncio.ensure_future(CALLS["update"](store, 10))
            with pytest.raises(StreamTimeoutError):
                await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="j", data={"n": 9}),
                                timeout=0.3)
            await asyncio.sleep(0.1)
            assert not patient.done()
        await asyncio.wait_for(patient, 5)
        assert await store.get(StreamGetInput(**ITEM)) == {"n": 1}
        assert await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="j")) is None


async def test_max_pending_counts_a_write_whose_caller_left_while_its_batch_holds_it(tmp_path: Path) -> None:
    """SQLite (one queue: both writes in one batch): the batch still holds the write of the caller that left, so a
    third write is refused at max_pending=2 (before: taken, the bound counting callers only)."""
    async with opened(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}", pool_timeout=20, max_pending=2) as store:
        async with held(store, "store"):
            patient = asyncio.ensure_future(CALLS["update"](store, 10))
            hurried = asyncio.ensure_future(
                store.set(StreamSetInput(stream_name="s", group_id="g", item_id="j", data={"n": 9}), timeout=0.3))
            with pytest.raises(StreamTimeoutError):
                await hurried
            with pytest.raises(StreamBackendError) as refused:
                await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="k", data={"n": 1}), timeout=5)
            assert refused.value.applied is False and "max_pending=2" in str(refused.value), refused.value
        await asyncio.wait_for(patient, 5)
        # the batch is done with both: the store takes writes again, and the one withdrawn was not applied
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="k", data={"n": 1}), timeout=5)
        assert await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="j")) is None
        assert await store.get(StreamGetInput(**ITEM)) == {"n": 1}
