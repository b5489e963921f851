"""aiosqlite's connection threads, found and waited for: the one module that relies on how aiosqlite names them.

aiosqlite (0.22) stops the thread of a connection that failed to open by a message that thread answers on the
caller's event loop later. A process that closed its loop first (``iii-engine`` exiting on that very failure,
``iii-streams migrate`` on a file it cannot open, a program whose ``asyncio.run`` ends on a store's error) printed the
thread's "RuntimeError: Event loop is closed" traceback after its one-line error. So each connect of an engine given
to :func:`wait_for_failed_connects` notes the threads running before it (:func:`sqlite_threads`) and, when it fails,
waits at most :data:`DRIVER_THREAD_S` for the ones started since to end (:func:`driver_threads_ended`) before its
error goes on: every connect, whichever operation made it.

The thread is found one of two ways, checked here (a test fails when an upgrade changes both): before 0.22 the public
``Connection`` is the thread; since 0.22 it starts a plain ``Thread``, known only by its name, which ``Thread`` takes
from its target, a private function. Without either, :data:`SQLITE_THREAD_MISSING` names what is missing, no thread
is found and a failed open does not wait (the traceback at exit may come back; nothing else changes).

A connection both stopped and closed has a second hazard, in aiosqlite 0.22: SQLAlchemy cuts a connection by its
``stop()`` and closes one gracefully by its ``close()``, and does both when a cancel interrupts the graceful close
(a store's operation timing out inside the migration, say). A ``close()`` after a ``stop()`` its thread had not yet
run let go of the sqlite3 connection the stop was to close (left open, its transaction's lock held: the next store
on the file waited out SQLite's 30 s busy wait) and queued a second stop, which the thread, ended by the first,
never answered (the close hung for good). :func:`guard_aiosqlite` makes each connection's stop happen once and a
close after it wait for that stop, which closes the connection. And a connection closed while a cancelled read
left a statement unfinished is not closed by SQLite at all until that statement is freed: it kept
its locks, and the next write or open on the file waited the busy wait out. Its close closes its cursors and rolls
back first (:class:`ClosesCleanly`), which ends such statements.

Example:
    >>> sqlite_threads() == set()
    True
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import sqlite3
import sys
import threading
import weakref
from typing import Any, Final

from sqlalchemy import event
from sqlalchemy.exc import MissingGreenlet
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import await_only

__all__ = ["DRIVER_THREAD_S", "SQLITE_THREAD_MISSING", "ClosesCleanly", "driver_threads_ended", "guard_aiosqlite",
           "sqlite_threads", "stops_once", "wait_for_failed_connects"]

log = logging.getLogger(__name__)

DRIVER_THREAD_S = 1.0
"""How long a failed open waits at most for aiosqlite's threads started since it began."""
_DRIVER_THREAD_POLL_S: Final = 0.005


def _import_or_none(name: str) -> Any:
    """Module ``name``, or ``None`` when it is not installed (a PostgreSQL-only install has no aiosqlite)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


_SQLITE_THREAD_TARGET: Final = "_connection_worker_thread"
_sqlite_core = sys.modules.get("aiosqlite.core") or _import_or_none("aiosqlite.core")
_SQLITE_CONNECTION_THREAD: Final[type[threading.Thread] | None] = (
    _sqlite_core.Connection if isinstance(getattr(_sqlite_core, "Connection", None), type)
    and issubclass(_sqlite_core.Connection, threading.Thread) else None)
SQLITE_THREAD_MISSING: tuple[str, ...] = () if _SQLITE_CONNECTION_THREAD is not None or callable(
    getattr(_sqlite_core, _SQLITE_THREAD_TARGET, None)) else (f"aiosqlite.core.{_SQLITE_THREAD_TARGET}",)
"""What this module could not find in aiosqlite (empty when it finds its threads)."""
del _sqlite_core


def sqlite_threads() -> set[threading.Thread]:
    """aiosqlite's connection threads running now (none when :data:`SQLITE_THREAD_MISSING` names what is missing).

    Example:
        >>> sqlite_threads() == set()
        True
    """
    if SQLITE_THREAD_MISSING:
        return set()
    if _SQLITE_CONNECTION_THREAD is not None:
        return {thread for thread in threading.enumerate() if isinstance(thread, _SQLITE_CONNECTION_THREAD)}
    return {thread for thread in threading.enumerate() if f"({_SQLITE_THREAD_TARGET})" in thread.name}


async def driver_threads_ended(before: set[threading.Thread]) -> None:
    """After a connect failed: wait (at most :data:`DRIVER_THREAD_S`) until one of the aiosqlite threads started
    since ``before`` has ended, the failed connection's (at once when none is alive). Threads of other connections
    made meanwhile, which stay alive in their pools, are not waited for: a failed connect beside another store's new
    connections waited the whole second. Polled: the thread signals nothing we can await, and this runs only when a
    connect failed.

    Example:
        >>> asyncio.run(driver_threads_ended(sqlite_threads()))  # none started since: returns at once
    """
    started = sqlite_threads() - before
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DRIVER_THREAD_S
    # a join in an executor thread would outlive a cancelled caller; short sleeps do not
    while all(thread.is_alive() for thread in started) and started and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(_DRIVER_THREAD_POLL_S)


def _connect_or_wait(dialect: Any, record: Any, cargs: list[Any], cparams: dict[str, Any]) -> Any:
    """``do_connect``: the connection, made here (by the ``do_connect`` listeners added after this one, as SQLAlchemy
    would have, else by the dialect); a connect that fails or is cancelled waits for the driver's threads it started
    (at most :data:`DRIVER_THREAD_S`)."""
    before = sqlite_threads()
    try:
        # SQLAlchemy calls the listeners in order and stops at the first that returns a connection: this one, so the
        # ones after it would never run. It runs them itself (listeners are kept as given: checked at our floor too)
        listeners = list(dialect.dispatch.do_connect)
        later = listeners[listeners.index(_connect_or_wait) + 1:] if _connect_or_wait in listeners else []
        for listener in later:
            connection = listener(dialect, record, cargs, cparams)
            if connection is not None:
                return connection
        return dialect.connect(*cargs, **cparams)
    except (Exception, asyncio.CancelledError):
        # a cancelled connect too: its thread, told to stop, ends a moment later, and a store closed meanwhile
        # returned with it running (a loop ended right after printed its "Event loop is closed" traceback)
        ended = driver_threads_ended(before)
        try:
            # the listener runs in SQLAlchemy's greenlet of the caller's task: this suspends that task, not the loop
            await_only(ended)
        except MissingGreenlet:  # a connect outside an AsyncEngine's greenlet: nothing to suspend, no wait
            ended.close()
        raise


def wait_for_failed_connects(engine: AsyncEngine) -> None:
    """Make each failed connect of ``engine`` (SQLite through aiosqlite) wait for the driver's thread of that
    connection to end before its error goes on. Idempotent; ``do_connect`` listeners added to ``engine`` before or
    after still run in their order.

    Example:
        >>> from sqlalchemy.ext.asyncio import create_async_engine
        >>> engine = create_async_engine("sqlite+aiosqlite:///no/such/dir/s.db")
        >>> wait_for_failed_connects(engine)
        >>> async def first_connect() -> None:
        ...     try:
        ...         async with engine.connect():
        ...             pass
        ...     except Exception as exc:
        ...         print(exc.orig)
        ...     finally:
        ...         await engine.dispose()
        >>> asyncio.run(first_connect())  # and no thread is left to answer on the closed loop
        unable to open database file
    """
    if not event.contains(engine.sync_engine, "do_connect", _connect_or_wait):
        event.listen(engine.sync_engine, "do_connect", _connect_or_wait)


def stops_once(dbapi_connection: Any, _record: Any = None) -> bool:
    """Pool ``connect`` listener: make the aiosqlite connection behind ``dbapi_connection`` (SQLAlchemy's adapter)
    stop once, a second ``stop()`` returning the first's future, and a ``close()`` after a stop wait for that stop
    (its thread closes the sqlite3 connection as it stops) instead of letting go of the connection and queuing a stop
    nobody answers. Whether it did: not when the driver has no ``stop()`` (aiosqlite before 0.22, which SQLAlchemy
    never stops).

    Example:
        >>> from sqlalchemy.ext.asyncio import create_async_engine
        >>> async def demo() -> bool:
        ...     engine = create_async_engine("sqlite+aiosqlite://")
        ...     try:
        ...         async with engine.connect() as connection:
        ...             raw = await connection.get_raw_connection()
        ...             return stops_once(raw.dbapi_connection)
        ...     finally:
        ...         await engine.dispose()
        >>> asyncio.run(demo())
        True
    """
    driver: Any = getattr(dbapi_connection, "driver_connection", None)
    stop, close = getattr(driver, "stop", None), getattr(driver, "close", None)
    if not (callable(stop) and callable(close)):
        return False
    stopping: list[asyncio.Future[Any] | None] = []

    def stop_once() -> asyncio.Future[Any] | None:
        if not stopping:
            stopping.append(stop())
        return stopping[0]

    async def close_or_await_stop() -> None:
        if not stopping:
            await close()  # (its own stop at its end is stop_once: the instance's attribute)
        elif (stopped := stopping[0]) is not None and not stopped.done():
            # shielded: a cancel of this caller must not cancel the stop others await. One already done, or
            # cancelled by the cancel of a close that awaited it, is not awaited (its thread still closes the
            # connection): a cancelled future would raise CancelledError into a caller nobody cancelled
            await asyncio.shield(stopped)

    driver.stop = stop_once
    driver.close = close_or_await_stop
    return True


class ClosesCleanly(sqlite3.Connection):
    """A sqlite3 connection whose ``close()`` first closes the cursors still open on it and rolls back the
    transaction still open. SQLite closes a connection with a statement not yet finished (a read cancelled between its
    first row and the rest, its cursor still referenced) only once that statement is freed, and until then it keeps
    its locks: a write transaction's kept every later writer of the file waiting, and a read's kept the next store's
    first open (its switch to WAL) waiting. Cursors are tracked as they are made (about 1.4 µs a statement).

    Example:
        >>> first = sqlite3.connect(":memory:", factory=ClosesCleanly, isolation_level=None)
        >>> unfinished = first.execute("SELECT 1 UNION ALL SELECT 2")
        >>> unfinished.fetchone()
        (1,)
        >>> first.close()
        >>> unfinished.fetchone()
        Traceback (most recent call last):
        sqlite3.ProgrammingError: Cannot operate on a closed cursor.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cursors: weakref.WeakSet[sqlite3.Cursor] = weakref.WeakSet()

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        """``sqlite3.Connection.cursor``, the cursor noted for :meth:`close`.

        Example:
            >>> connection = sqlite3.connect(":memory:", factory=ClosesCleanly)
            >>> connection.cursor().execute("SELECT 1").fetchone()
            (1,)
        """
        made = super().cursor(*args, **kwargs)
        self._cursors.add(made)
        return made

    # sqlite3's own shortcuts make their cursors in C, past cursor(): through it here
    def execute(self, *args: Any) -> Any:
        """``sqlite3.Connection.execute`` on a cursor from :meth:`cursor`.

        Example:
            >>> sqlite3.connect(":memory:", factory=ClosesCleanly).execute("SELECT ?", (2,)).fetchone()
            (2,)
        """
        return self.cursor().execute(*args)

    def executemany(self, *args: Any) -> Any:
        """``sqlite3.Connection.executemany`` on a cursor from :meth:`cursor`.

        Example:
            >>> connection = sqlite3.connect(":memory:", factory=ClosesCleanly)
            >>> _ = connection.execute("CREATE TABLE t (x)")
            >>> connection.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)]).rowcount
            2
        """
        return self.cursor().executemany(*args)

    def executescript(self, *args: Any) -> Any:
        """``sqlite3.Connection.executescript`` on a cursor from :meth:`cursor`.

        Example:
            >>> connection = sqlite3.connect(":memory:", factory=ClosesCleanly)
            >>> _ = connection.executescript("CREATE TABLE t (x); INSERT INTO t VALUES (3);")
            >>> connection.execute("SELECT x FROM t").fetchone()
            (3,)
        """
        return self.cursor().executescript(*args)

    def close(self) -> None:
        """Close the cursors still open, roll back the transaction still open, then close the connection.

        Example:
            >>> connection = sqlite3.connect(":memory:", factory=ClosesCleanly, isolation_level=None)
            >>> _ = connection.execute("BEGIN")
            >>> connection.close()  # rolled back first
        """
        for cursor in list(self._cursors):
            with contextlib.suppress(sqlite3.Error):  # (one closed already, or this connection is)
                cursor.close()
        with contextlib.suppress(sqlite3.Error):  # (already closed, or the rollback failed: the close still runs)
            if self.in_transaction:
                self.rollback()
        super().close()


def _closes_cleanly(_dialect: Any, _record: Any, _cargs: list[Any], cparams: dict[str, Any]) -> None:
    """``do_connect``: connections made as :class:`ClosesCleanly`, unless the engine's owner chose a factory."""
    cparams.setdefault("factory", ClosesCleanly)


def _warn_if_connected(engine: AsyncEngine) -> None:
    """Say so when ``engine``'s pool already holds connections: made before the guards, they stay unguarded (replacing
    them as they are next checked out was tried, and lost per-connection state and hung a shared StaticPool). Only a
    pool that counts its connections (the default, a queue pool) can tell."""
    pool = engine.sync_engine.pool
    checkedin, checkedout = getattr(pool, "checkedin", None), getattr(pool, "checkedout", None)
    if not (callable(checkedin) and callable(checkedout)):
        return
    made = checkedin() + checkedout()
    if made:
        log.warning("SQLite engine %s had %d connection(s) before iii_streams guarded it: those stay unguarded (a "
                    "cancel may hang their close or leave the file locked); call "
                    "iii_streams.sqlite_threads.guard_aiosqlite(engine) right after create_async_engine",
                    engine.url.render_as_string(hide_password=True), made)


def guard_aiosqlite(engine: AsyncEngine) -> None:
    """The guards on ``engine`` (SQLite through aiosqlite): :func:`wait_for_failed_connects`; connections made as
    :class:`ClosesCleanly` (unless ``connect_args`` names a ``factory``); :func:`stops_once` on each. Idempotent.
    Connections the engine made before the first call stay unguarded: a warning says so, where its pool counts them.

    Example:
        >>> from sqlalchemy.ext.asyncio import create_async_engine
        >>> engine = create_async_engine("sqlite+aiosqlite://")
        >>> guard_aiosqlite(engine); guard_aiosqlite(engine)
        >>> event.contains(engine.sync_engine, "connect", stops_once)
        True
    """
    wait_for_failed_connects(engine)
    if not event.contains(engine.sync_engine, "do_connect", _closes_cleanly):
        _warn_if_connected(engine)
        event.listen(engine.sync_engine, "do_connect", _closes_cleanly)
    if not event.contains(engine.sync_engine, "connect", stops_once):
        event.listen(engine.sync_engine, "connect", stops_once)
