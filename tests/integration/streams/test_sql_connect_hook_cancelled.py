"""A connection whose set-up (the store's connect hook) is cut by a cancel is closed, not left open.

SQLAlchemy before 2.0.53 leaves a new connection open when a ``connect`` listener fails: a store's close cutting a
checkout while its hook awaited SQLite's PRAGMAs left that connection, and its aiosqlite thread, running after the
close (the floors run's flake in ``test_reads_a_sqlite_first_connect_lets_through_as_a_close_comes_end_before_it``)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.util import await_only

import iii_streams.sql as sql_module
from iii.stream import StreamGetInput, StreamSetInput
from iii_streams import engine_bounds
from iii_streams.engine_bounds import close_stranded_connects, closing_stranded
from iii_streams.errors import StreamClosedError
from iii_streams.sql import SQLStream
from iii_streams.sqlite_threads import sqlite_threads


def _slow_set_up(started: threading.Event) -> Any:
    """The store's SQLite set-up, then a long wait in the hook (where the test's cancel lands)."""
    set_up = sql_module._set_up_sqlite

    def slow(dbapi_connection: Any, file_backed: bool) -> None:
        set_up(dbapi_connection, file_backed)
        started.set()
        await_only(asyncio.sleep(30))

    return slow


async def _ended(threads: set[threading.Thread]) -> list[threading.Thread]:
    for thread in threads:
        await asyncio.to_thread(thread.join, 5)
    return [thread for thread in threads if thread.is_alive()]


async def test_a_get_cancelled_in_its_connections_set_up_leaves_no_connection_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SQLStream.from_url(f"sqlite+aiosqlite:///{tmp_path / 's.db'}", create=True, timeout=10)
    try:
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
        async with store.engine.connect() as held:  # the pooled connection: the get needs a new one
            await held.execute(text("SELECT 1"))
            started = threading.Event()
            monkeypatch.setattr(sql_module, "_set_up_sqlite", _slow_set_up(started))
            before = sqlite_threads()
            get = asyncio.ensure_future(store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i")))
            assert await asyncio.to_thread(started.wait, 10)
            new_threads = sqlite_threads() - before
            assert len(new_threads) == 1  # the new connection's
            get.cancel()
            with pytest.raises(asyncio.CancelledError):
                await get
            open_entries = [entry for entry in store._connections if entry.dbapi_connection is not None]
            assert len(open_entries) == 1  # the held one only
            assert await _ended(new_threads) == []
    finally:
        await store.aclose()


async def test_the_close_that_cuts_a_connect_returns_once_its_connection_is_closed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A close that cuts a get while its new connection is being set up returns once that connection's close (in a task
    of its own) has ended: before, it returned with the close under way and the aiosqlite thread running, which
    printed "Event loop is closed" when the loop ended right after (attack on 5403ea4a: 19 of 60 runs)."""
    store = SQLStream.from_url(f"sqlite+aiosqlite:///{tmp_path / 's.db'}", create=True, timeout=10)
    await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
    async with store.engine.connect() as held:
        await held.execute(text("SELECT 1"))
        started = threading.Event()
        monkeypatch.setattr(sql_module, "_set_up_sqlite", _slow_set_up(started))
        get = asyncio.ensure_future(store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i")))
        assert await asyncio.to_thread(started.wait, 10)
    await asyncio.wait_for(store.aclose(), 15)
    assert len(engine_bounds._CLOSING) == 0  # (no close of a stranded connection under way)
    with pytest.raises(StreamClosedError):
        await get


async def test_a_get_cancelled_in_a_connect_hook_set_before_the_store_leaves_no_connection_open(
        tmp_path: Path) -> None:
    """The same with a hook that runs before the store's own (as SQLAlchemy's dialect set-up does) on an engine the
    caller made: its connection is closed too."""
    before = sqlite_threads()  # (other tests' stores may hold threads of their own)
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    started = threading.Event()
    slow = _slow_set_up(started)
    event.listen(engine.sync_engine, "connect", lambda dbapi_connection, _entry: slow(dbapi_connection, True))
    store = SQLStream(engine, create=True, timeout=10)
    try:
        first = asyncio.ensure_future(store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i")))
        assert await asyncio.to_thread(started.wait, 10)
        threads = sqlite_threads() - before
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await _ended(threads) == []
    finally:
        await store.aclose()
        await engine.dispose()


async def test_closing_stranded_closes_the_connection_a_failed_listener_left() -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    made: list[Any] = []

    def failing(dbapi_connection: Any, _entry: Any) -> None:
        made.append(dbapi_connection)
        raise RuntimeError("set-up failed")

    event.listen(engine.sync_engine, "connect", failing)
    close_stranded_connects(engine)
    before = sqlite_threads()
    try:
        with pytest.raises(RuntimeError, match="set-up failed"), closing_stranded(engine):
            async with engine.connect():
                pass
        assert len(made) == 1
        assert await _ended(sqlite_threads() - before) == []
    finally:
        await engine.dispose()
