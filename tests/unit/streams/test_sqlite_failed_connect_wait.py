"""Every connect to SQLite that fails waits for aiosqlite's thread of that connection to end, whatever made it: one
``do_connect`` listener on each engine (``iii_streams.sqlite_threads.wait_for_failed_connects``), not a snapshot
around each path that may connect.

Before: the first operation of a store opened with ``create=False`` (no migration, so none of the waits around
``prepare`` and the migration) on a file it cannot open raised ``StreamUnavailableError`` and left the thread to answer
on the loop ``asyncio.run`` had closed: "RuntimeError: Event loop is closed" in a traceback after the error.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import create_async_engine

from iii.stream import StreamGetInput, StreamSetInput
from iii_streams import sqlite_threads
from iii_streams.errors import StreamUnavailableError
from iii_streams.sql import SQLStream
from iii_streams.sqlite_threads import wait_for_failed_connects
from tests.unit.streams.held_stop import CHILD_PRELUDE, HeldStop, hold_stops

pytestmark = pytest.mark.timeout(30)

_GET = StreamGetInput(stream_name="s", group_id="g", item_id="i")

_CHILD = CHILD_PRELUDE + """
import asyncio
from iii.stream import StreamGetInput
from iii_streams.sql import SQLStream
async def first_get() -> None:
    async with SQLStream.from_url(sys.argv[1], create=False) as store:
        await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i"))
try:
    asyncio.run(first_get())
except Exception as exc:
    print(type(exc).__name__, flush=True)
"""


@pytest.fixture
def held_stops(monkeypatch: pytest.MonkeyPatch) -> type[HeldStop]:
    return hold_stops(monkeypatch)


def _left_after(run: Any) -> list[str]:
    """Names of the threads ``run()`` started that are still alive when it returns (joined then, so that an error in
    one is this test's)."""
    before = set(threading.enumerate())
    run()
    left = [thread for thread in set(threading.enumerate()) - before if thread.is_alive()]
    for thread in left:
        thread.join(10)
    return [thread.name for thread in left]


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_first_get_without_create_leaves_no_thread_past_asyncio_run(
        tmp_path: Path, held_stops: type[HeldStop]) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'x.db'}"

    async def first_get() -> None:
        async with SQLStream.from_url(url, create=False) as store:
            with pytest.raises(StreamUnavailableError):
                await store.get(_GET)

    assert _left_after(lambda: asyncio.run(first_get())) == [], "aiosqlite's thread outlived asyncio.run"
    assert held_stops.held == 1


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_store_on_the_caller_s_engine_waits_too(tmp_path: Path, held_stops: type[HeldStop]) -> None:
    """An engine the caller made (``SQLStream(engine)``) gets the listener too; a ``do_connect`` listener the caller
    adds afterwards still runs (ours makes the connection through it)."""
    seen: list[str] = []

    async def first_get() -> None:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'x.db'}")
        try:
            async with SQLStream(engine, create=False) as store:
                @event.listens_for(engine.sync_engine, "do_connect")
                def _mine(_dialect: Any, _record: Any, cargs: list[Any], _cparams: dict[str, Any]) -> None:
                    seen.append(str(cargs[0]))

                with pytest.raises(StreamUnavailableError):
                    await store.get(_GET)
        finally:
            await engine.dispose()

    assert _left_after(lambda: asyncio.run(first_get())) == []
    assert held_stops.held == 1
    assert seen == [str(tmp_path / "missing" / "x.db")]


async def test_a_listener_that_makes_the_connection_itself_is_left_to_do_so(tmp_path: Path) -> None:
    """A caller's own ``do_connect`` listener, added before or after ours, may return the connection: it is used."""
    good = f"sqlite+aiosqlite:///{tmp_path / 'good.db'}"
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'x.db'}")
    made = create_async_engine(good).sync_engine.dialect
    wait_for_failed_connects(engine)

    @event.listens_for(engine.sync_engine, "do_connect")
    def _elsewhere(_dialect: Any, _record: Any, _cargs: list[Any], _cparams: dict[str, Any]) -> Any:
        return made.connect(str(tmp_path / "good.db"))

    try:
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("select 1")).scalar() == 1
    finally:
        await engine.dispose()


def test_the_program_s_stderr_holds_no_traceback(tmp_path: Path) -> None:
    """The same first get in a program of its own, the driver's stop held: all it writes is the error's name."""
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    url = f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'x.db'}"
    done = subprocess.run([sys.executable, "-c", _CHILD, url], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=25, check=False)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert done.stdout == "stop held\nStreamUnavailableError\n"


async def test_a_failed_connect_does_not_wait_for_other_stores_new_connections(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wait ends with the failed connection's thread, not with every aiosqlite thread started meanwhile: another
    store's new pooled connections (their threads stay alive) made a failed connect wait the whole bound (1 s)."""
    monkeypatch.setattr(sqlite_threads, "DRIVER_THREAD_S", 5.0)  # a wait for the wrong threads shows as 5 s
    for _ in range(3):
        # a new pool each round (its later connections are new ones, each with its own thread), its first connect made
        # alone: SQLAlchemy 2.0.0 (our floor) serializes a new pool's first connect with a thread lock that concurrent
        # first connects of one loop deadlock on
        async with SQLStream.from_url(f"sqlite+aiosqlite:///{tmp_path / 'good.db'}") as good:
            await good.prepare()

            async def connect_meanwhile(k: int, good: SQLStream = good) -> None:
                await asyncio.sleep(0.0005 * k)  # spread over the failing connect's few milliseconds
                async with good.engine.connect():
                    await asyncio.sleep(0.003)

            async def failing() -> float:
                began = asyncio.get_running_loop().time()
                async with SQLStream.from_url(f"sqlite+aiosqlite:///{tmp_path / 'no' / 'x.db'}", create=False) as bad:
                    with pytest.raises(StreamUnavailableError):
                        await bad.get(_GET)
                return asyncio.get_running_loop().time() - began

            took, *_ = await asyncio.gather(failing(), *(connect_meanwhile(k) for k in range(4)))
            assert took < 2.5, took  # before: 5.0


async def test_a_burst_of_first_operations_on_a_store_that_cannot_open_fails_each_at_once(tmp_path: Path) -> None:
    """64 first operations at once on a ``create=False`` store whose file cannot be opened: each gets its
    ``StreamUnavailableError`` within moments. Before, they rushed the pool together; the connects past its size
    failed without waking the callers queued for a pooled connection, and 49 of 64 waited the pool's 30 s for
    "pool exhausted"."""
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{tmp_path / 'no' / 'x.db'}", create=False) as bad:
        async with asyncio.timeout(15):
            results = await asyncio.gather(*(bad.get(_GET) for _ in range(64)), return_exceptions=True)
    assert {type(r) for r in results} == {StreamUnavailableError}, {type(r).__name__ for r in results}


async def test_stores_sharing_one_engine_leave_it_working(tmp_path: Path) -> None:
    """Each store put its hooks on the engine it was given, again for each store: with two, every transaction of the
    engine began twice ("cannot start a transaction within a transaction")."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}")
    stores = [SQLStream(engine) for _ in range(3)]
    try:
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("select 1")).scalar() == 1
        await stores[0].set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
        assert await stores[2].get(_GET) == 1
    finally:
        for store in stores:
            await store.aclose()
        await engine.dispose()
