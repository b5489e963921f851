"""Time bounds on a SQLAlchemy async engine whose database server may go silent.

A server that stops answering (a half-open connection behind a NAT or firewall that forgot it, a frozen host, a
listener that accepts and never speaks) leaves asyncpg waiting with no bound: on a statement, and on the orderly
close of every pooled connection in ``engine.dispose()``. The tools here bound both: :func:`dispose_within` cuts the
connections still closing past its limit, and :func:`run_then_dispose` runs one piece of work on a short-lived
engine (a migration, a revision read) within a limit, then disposes of the engine within its own.

Example:
    >>> import asyncio
    >>> from sqlalchemy import text
    >>> from sqlalchemy.ext.asyncio import create_async_engine
    >>> async def demo():
    ...     engine = create_async_engine("sqlite+aiosqlite://")
    ...     async def one():
    ...         async with engine.connect() as connection:
    ...             return (await connection.execute(text("SELECT 1"))).scalar()
    ...     return await run_then_dispose(engine, one(), 10.0, "an in-memory database")
    >>> asyncio.run(demo())
    1
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import weakref
from collections.abc import Coroutine, Iterator
from typing import Any, Final, TypeVar

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from .deadlines import finish_within, let_go

__all__ = ["DISPOSE_TIMEOUT_S", "SQLALCHEMY_CLOSES_STRANDED", "close_stranded_connects", "closing_stranded",
           "cut_connections", "dispose_within", "run_then_dispose", "stranded_closes_ended", "track_connections"]

log = logging.getLogger(__name__)

T = TypeVar("T")

DISPOSE_TIMEOUT_S: Final = 2.0
"""How long a dispose waits for the database to answer the orderly close of the pooled connections: a server gone
silent never answers, and asyncpg's close waits for it with no bound. Past it those connections are cut (one
warning) and the dispose ends."""


def track_connections(engine: AsyncEngine) -> weakref.WeakSet[Any]:
    """The pool entries of ``engine``'s connections, each for as long as the pool keeps it: what
    :func:`cut_connections` cuts. Call it before the engine's first connection.

    Example:
        >>> from sqlalchemy.ext.asyncio import create_async_engine
        >>> len(track_connections(create_async_engine("sqlite+aiosqlite://")))
        0
    """
    entries: weakref.WeakSet[Any] = weakref.WeakSet()

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(_dbapi_connection: Any, entry: Any) -> None:
        entries.add(entry)

    return entries


def _version(text: str) -> tuple[int, ...]:
    """The leading numbers of a version string: ``"2.0.53"`` -> ``(2, 0, 53)``."""
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


SQLALCHEMY_CLOSES_STRANDED: Final = _version(sqlalchemy.__version__) >= (2, 0, 53)
"""Whether this SQLAlchemy closes a new connection whose ``connect`` listeners failed (2.0.53 and later). Before, such
a connection stayed open with nothing referring to it (an aiosqlite connection and its thread, an asyncpg socket)."""


def close_stranded_connects(engine: AsyncEngine) -> None:
    """On a SQLAlchemy that leaves them open (before 2.0.53, :data:`SQLALCHEMY_CLOSES_STRANDED`): note each new
    connection of ``engine`` from its first ``connect`` listener to the last one added so far, so that a connect that
    fails between them (a cancel in SQLAlchemy's own set-up of the connection, or in the store's) can close it
    (:func:`closing_stranded`). Call it once the engine's own hooks are added; idempotent; no-op on later releases.

    Example:
        >>> from sqlalchemy.ext.asyncio import create_async_engine
        >>> close_stranded_connects(create_async_engine("sqlite+aiosqlite://"))
    """
    if SQLALCHEMY_CLOSES_STRANDED or event.contains(engine.sync_engine, "connect", _set_up_began):
        return
    event.listen(engine.sync_engine, "connect", _set_up_began, insert=True)
    event.listen(engine.sync_engine, "connect", _set_up_ended)


@contextlib.contextmanager
def closing_stranded(engine: AsyncEngine) -> Iterator[None]:
    """Around code that connects through ``engine`` (in a task): when it fails, the connection its connect left half
    set up (:func:`close_stranded_connects`), if any, is closed, in a task of its own, so the failure goes on at once.

    Example:
        >>> import asyncio
        >>> from sqlalchemy.ext.asyncio import create_async_engine
        >>> async def demo() -> None:
        ...     engine = create_async_engine("sqlite+aiosqlite://")
        ...     close_stranded_connects(engine)
        ...     with closing_stranded(engine):
        ...         async with engine.connect():
        ...             pass
        ...     await engine.dispose()
        >>> asyncio.run(demo())
    """
    try:
        yield
    except BaseException:
        task = asyncio.current_task()
        stranded = _SETTING_UP.pop(task, None) if task is not None else None
        if stranded is not None:
            dbapi_connection, entry = stranded
            if entry.dbapi_connection is dbapi_connection:
                entry.dbapi_connection = None  # (as SQLAlchemy does once it closed one: nothing left open there)
            closing = asyncio.ensure_future(greenlet_spawn(engine.dialect.do_terminate, dbapi_connection))
            _CLOSING[closing] = engine.sync_engine
            closing.add_done_callback(_closed)
        raise


async def stranded_closes_ended(engine: AsyncEngine, timeout: float) -> None:
    """Wait (``timeout`` seconds at most) for the closes :func:`closing_stranded` started on ``engine``'s connections:
    a store's close returned with one under way, its aiosqlite thread still running, and a loop ended right after
    printed that thread's "Event loop is closed" traceback. Those still under way then are let go with one warning,
    and no later wait waits for them again.

    Example:
        >>> import asyncio
        >>> from sqlalchemy.ext.asyncio import create_async_engine
        >>> asyncio.run(stranded_closes_ended(create_async_engine("sqlite+aiosqlite://"), 1.0))  # none: at once
    """
    closes = [closing for closing, owner in _CLOSING.items() if owner is engine.sync_engine]
    if not closes:
        return
    _, pending = await asyncio.wait(closes, timeout=timeout)
    if pending:
        # let go, once: a later wait of the same close (a store's close waits twice) held it as long again, unsaid
        for closing in pending:
            if _CLOSING.pop(closing, None) is not None:
                _LET_GO.add(closing)
        log.warning("%d connection(s) cut short in their set-up did not close within %g s; left to close by "
                    "themselves", len(pending), timeout)


_SETTING_UP: weakref.WeakKeyDictionary[asyncio.Task[Any], tuple[Any, Any]] = weakref.WeakKeyDictionary()
"""By task: the new connection whose ``connect`` listeners are running, with its pool entry
(:func:`close_stranded_connects`)."""
_CLOSING: dict[asyncio.Future[None], Any] = {}
"""The closes of stranded connections (:func:`closing_stranded`), each with its engine's sync engine, held until they
end."""
_LET_GO: set[asyncio.Future[None]] = set()
"""Those a wait gave up on (:func:`stranded_closes_ended`), held until they end."""


def _set_up_began(dbapi_connection: Any, entry: Any) -> None:
    task = _current_task()
    if task is not None:
        _SETTING_UP[task] = (dbapi_connection, entry)


def _set_up_ended(dbapi_connection: Any, _entry: Any) -> None:
    task = _current_task()
    if task is not None and _SETTING_UP.get(task, (None,))[0] is dbapi_connection:
        del _SETTING_UP[task]


def _current_task() -> asyncio.Task[Any] | None:
    """The task connecting (a pool listener runs in its greenlet), or ``None`` outside one (a sync engine's use)."""
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop
        return None


def _closed(closing: asyncio.Future[None]) -> None:
    _CLOSING.pop(closing, None)
    _LET_GO.discard(closing)
    if not closing.cancelled() and closing.exception() is not None:  # (one that fails has ended: nothing left open)
        log.debug("closing a connection stranded by a failed connect: %r", closing.exception())


def cut_connections(engine: AsyncEngine, entries: weakref.WeakSet[Any]) -> None:
    """Close every connection of ``entries`` at once, without the server (asyncpg: the socket is reset), so whatever
    awaits one of them ends (its connection is lost).

    Example:
        >>> from sqlalchemy.ext.asyncio import create_async_engine
        >>> engine = create_async_engine("sqlite+aiosqlite://")
        >>> cut_connections(engine, track_connections(engine))  # none made yet: nothing to cut
    """
    for entry in list(entries):
        connection = entry.dbapi_connection
        if connection is not None:
            with contextlib.suppress(Exception):  # one that fails to cut is already closed or closing
                engine.dialect.do_terminate(connection)


async def dispose_within(engine: AsyncEngine, entries: weakref.WeakSet[Any], timeout: float, database: str,
                         logger: logging.Logger | None = None) -> None:
    """``engine.dispose()`` within ``timeout`` seconds; past it the connections of ``entries`` (from
    :func:`track_connections`) still open are cut, with one warning naming ``database`` (in words, password
    masked), and the dispose ends without the server. A cancel of the caller cuts them too.

    Example:
        >>> import asyncio
        >>> from sqlalchemy.ext.asyncio import create_async_engine
        >>> async def demo():
        ...     engine = create_async_engine("sqlite+aiosqlite://")
        ...     await dispose_within(engine, track_connections(engine), 2.0, "an in-memory database")
        >>> asyncio.run(demo())
    """
    dispose = asyncio.ensure_future(engine.dispose())
    try:
        done, _ = await asyncio.wait((dispose,), timeout=timeout)
    except BaseException:  # the caller is cancelled: nothing waits for the server any more
        cut_connections(engine, entries)
        let_go(dispose)
        raise
    if done:
        dispose.result()
    else:
        (logger or log).warning("%s did not answer the close of its connections within %g s; cut them", database,
                                timeout)
        cut_connections(engine, entries)
        # cut, each pending close ends at once (its connection is lost); a driver that ignores the cut is let go
        await finish_within(dispose, timeout, f"the close of {database}'s connections", logger or log)
    await stranded_closes_ended(engine, timeout)


async def run_then_dispose(engine: AsyncEngine, work: Coroutine[Any, Any, T], timeout: float | None,
                           database: str, logger: logging.Logger | None = None) -> T:
    """Run ``work`` (on ``engine``, a short-lived one made for it) for at most ``timeout`` seconds (``None``: no
    limit), then dispose of ``engine`` within :data:`DISPOSE_TIMEOUT_S` (:func:`dispose_within`).

    Past ``timeout`` the engine's connections are cut, so that whatever ``work`` awaits ends (a cancel alone would
    leave its clean-up, a rollback, waiting on the silent server), ``work`` is cancelled and let go, and
    :class:`TimeoutError` names ``database`` (in words, password masked). Call it right after making the engine:
    the connections are tracked from here.

    Example:
        >>> import asyncio
        >>> from sqlalchemy.ext.asyncio import create_async_engine
        >>> async def demo():
        ...     engine = create_async_engine("sqlite+aiosqlite://")
        ...     await run_then_dispose(engine, asyncio.Event().wait(), 0.01, "an in-memory database")
        >>> asyncio.run(demo())
        Traceback (most recent call last):
        ...
        TimeoutError: an in-memory database gave no result within 0.01 s
    """
    entries = track_connections(engine)
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait((task,), timeout=timeout)
        if done:
            return task.result()
        raise TimeoutError(f"{database} gave no result within {timeout:g} s")
    finally:
        if not task.done():  # past the bound, or the caller is cancelled: nothing waits for the work any more
            cut_connections(engine, entries)
            let_go(task)
        await dispose_within(engine, entries, DISPOSE_TIMEOUT_S, database, logger)
