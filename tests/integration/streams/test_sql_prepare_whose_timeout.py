"""``SQLStream.prepare()`` says "no answer within N s" only when its own bound ran out. A ``TimeoutError`` from
inside (asyncpg's connect timeout, this process's wait for another migration) is named as what it is.

Before: every ``TimeoutError`` was relabelled with the prepare's bound: after asyncpg's 0.5 s connect timeout it
said "no answer within 10 s"; with no bound at all (``timeout=None``) it raised ``TypeError: unsupported format
string passed to NoneType.__format__``.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from iii.stream import StreamGetInput, StreamSetInput
from iii_streams import migrate
from iii_streams.errors import StreamClosedError, StreamTimeoutError, StreamUnavailableError
from iii_streams.sql import SQLStream

pytestmark = pytest.mark.timeout(30)


def _store(port: int, store_timeout: float | None, connect_timeout: float, *, create: bool = False) -> SQLStream:
    return SQLStream.from_url(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/test", timeout=store_timeout,
                              connect_args={"timeout": connect_timeout}, create=create)


@pytest.mark.parametrize("store_timeout", [None, 10.0])
async def test_the_drivers_connect_timeout_is_named_as_the_drivers(silent_port: int,
                                                                   store_timeout: float | None) -> None:
    store = _store(silent_port, store_timeout, connect_timeout=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(StreamUnavailableError) as caught:
            await store.prepare()
    finally:
        await store.aclose()
    assert time.monotonic() - started < 5
    assert "no answer within the driver's own timeout" in str(caught.value)
    assert "10 s" not in str(caught.value)
    assert isinstance(caught.value.__cause__, TimeoutError)


async def test_the_prepares_own_bound_still_says_its_seconds(silent_port: int) -> None:
    store = _store(silent_port, None, connect_timeout=20)
    try:
        with pytest.raises(StreamTimeoutError, match=r"no answer within 0\.5 s$"):
            await store.prepare(timeout=0.5)
    finally:
        await store.aclose()


async def test_a_wait_for_another_migration_of_this_process_names_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(migrate, "_ALEMBIC_WAIT_S", 1.0)
    store = SQLStream.from_url("sqlite+aiosqlite://")
    assert migrate._ALEMBIC_TURN.acquire(timeout=5)  # another migration of this process, running
    try:
        with pytest.raises(StreamUnavailableError) as caught:
            await asyncio.wait_for(store.prepare(timeout=10), 8)
    finally:
        migrate._ALEMBIC_TURN.release()
        await store.aclose()
    assert "another migration of this process ran for more than 1 s" in str(caught.value)
    assert "10 s" not in str(caught.value)


async def test_an_operations_driver_timeout_gives_a_reason(silent_port: int) -> None:
    """An operation of a store without ``create`` whose first connect meets the driver's own timeout (asyncpg's,
    a ``TimeoutError`` with no text) says so. Before: ``SQLStream.get: timed out: `` and nothing after it."""
    store = _store(silent_port, 10.0, connect_timeout=0.5)
    try:
        with pytest.raises(StreamTimeoutError) as caught:
            await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i"))
    finally:
        await store.aclose()
    assert str(caught.value) == "SQLStream.get: timed out: no answer within the driver's own timeout (TimeoutError)"
    assert isinstance(caught.value.__cause__, TimeoutError)


async def test_a_close_ends_a_first_connect_and_its_callers(silent_port: int) -> None:
    """A store without ``create`` whose first connect waits on a server that never answers: its close stops that
    connect, and the operations waiting for it fail at once with StreamClosedError. Before: they waited their own
    bound (here 10 s) and got StreamTimeoutError, and the connect went on past the close."""
    store = _store(silent_port, 10.0, connect_timeout=20)
    gets = [asyncio.ensure_future(store.get(StreamGetInput(stream_name="s", group_id="g", item_id=str(i))))
            for i in range(3)]
    for _ in range(100):  # loop turns until the gets reach their shared connect
        if store._connecting is not None:
            break
        await asyncio.sleep(0)
    assert store._connecting is not None
    started = time.monotonic()
    await asyncio.wait_for(store.aclose(), 5)
    results = await asyncio.wait_for(asyncio.gather(*gets, return_exceptions=True), 5)
    assert time.monotonic() - started < 3
    assert [type(result) for result in results] == [StreamClosedError] * 3, results
    assert store._connecting is None


async def test_a_cancelled_close_is_cancelled(silent_port: int) -> None:
    """The close's own caller cancelled while the close stops a first connect: the cancel reaches it (an attack:
    the close swallowed it, so a deadline around a store's close was lost)."""
    store = _store(silent_port, 10.0, connect_timeout=20)
    get = asyncio.ensure_future(store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i")))
    for _ in range(100):
        if store._connecting is not None:
            break
        await asyncio.sleep(0)
    closing = asyncio.ensure_future(store.aclose())
    await asyncio.sleep(0)  # (the close is waiting for the cancelled connect)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    await asyncio.wait_for(store.aclose(), 5)  # a later close finishes it
    assert isinstance((await asyncio.gather(get, return_exceptions=True))[0], StreamClosedError)


async def _migration_running(store: SQLStream) -> None:
    """Loop turns until a first operation of a store with ``create`` holds the migration's lock: from the lock's
    acquiring to the migration's connect nothing yields, so the migration is under way then."""
    for _ in range(100):
        if store._ready_lock.locked():
            return
        await asyncio.sleep(0)
    raise AssertionError("no operation reached the migration")


async def test_a_close_ends_a_migration_and_its_callers(silent_port: int) -> None:
    """A store with ``create`` whose migration waits on a server that never answers: its close stops the migration,
    and the operations waiting for it (the one running it and those queued behind it) fail at once with
    StreamClosedError; no task of the migration outlives the close. Before: they waited their own bound (here 10 s)
    and got StreamTimeoutError, and the migration went on past the close."""
    store = _store(silent_port, 10.0, connect_timeout=20, create=True)
    before = asyncio.all_tasks()
    gets = [asyncio.ensure_future(store.get(StreamGetInput(stream_name="s", group_id="g", item_id=str(i))))
            for i in range(3)]
    await _migration_running(store)
    started = time.monotonic()
    await asyncio.wait_for(store.aclose(), 5)
    left = {task for task in asyncio.all_tasks() - before - set(gets) if not task.done()}
    results = await asyncio.wait_for(asyncio.gather(*gets, return_exceptions=True), 5)
    assert time.monotonic() - started < 3
    assert [type(result) for result in results] == [StreamClosedError] * 3, results
    assert all("SQLStream is closed" in str(result) for result in results), results
    assert left == set(), left  # the migration's task ended with the close
    assert store._migrating is None


async def test_a_cancelled_close_of_a_migration_is_cancelled(silent_port: int) -> None:
    """The close's own caller cancelled while the close stops a migration: the cancel reaches it, and a later close
    finishes the store (its waiting operation fails with StreamClosedError, not after its own 10 s)."""
    store = _store(silent_port, 10.0, connect_timeout=20, create=True)
    get = asyncio.ensure_future(store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i")))
    await _migration_running(store)
    closing = asyncio.ensure_future(store.aclose())
    await asyncio.sleep(0)  # (the close is waiting for the cancelled migration)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    await asyncio.wait_for(store.aclose(), 5)  # a later close finishes it
    result = (await asyncio.wait_for(asyncio.gather(get, return_exceptions=True), 5))[0]
    assert isinstance(result, StreamClosedError), result


async def test_a_close_after_the_migration_leaves_it_be() -> None:
    """A migration that already finished when the close came (its caller not yet resumed) is not the close's to
    stop: it stays done, not cancelled, and the store counts as migrated; two closes at once end the store, and an
    operation after them is refused as closed."""
    store = SQLStream.from_url("sqlite+aiosqlite://")
    get = asyncio.ensure_future(store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i")))
    for _ in range(10_000):  # loop turns until the migration's task ended (its caller resumes at a later turn)
        migrating = store._migrating
        if migrating is not None and migrating.done():
            break
        await asyncio.sleep(0)
    else:
        raise AssertionError("the migration never ended")
    await asyncio.wait_for(asyncio.gather(store.aclose(), store.aclose()), 5)
    await asyncio.wait_for(asyncio.gather(get, return_exceptions=True), 5)  # (a read racing the close: either way)
    assert not migrating.cancelled() and migrating.exception() is None
    assert store._ready and store._migrating is None
    with pytest.raises(StreamClosedError):
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=2))
