"""What a SQLite store hands to aiosqlite's thread, counted in tests: the store sends some statements through
SQLAlchemy (a cursor's ``execute``) and some straight to the driver's connection (``execute``,
``execute_fetchall``), so SQLAlchemy's ``before_cursor_execute`` sees only the first kind."""

from __future__ import annotations

import collections
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import aiosqlite.core
import aiosqlite.cursor
import pytest


def count_trips(monkeypatch: pytest.MonkeyPatch) -> tuple[collections.Counter[str], list[str]]:
    """From now on, count every call handed to aiosqlite's thread (by the function's name) and every statement's
    first two words, and list the statements' first words in order (upper case)."""
    trips: collections.Counter[str] = collections.Counter()
    order: list[str] = []
    run = aiosqlite.core.Connection._execute

    async def counted_run(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        trips[getattr(fn, "__name__", repr(fn))] += 1
        return await run(self, fn, *args, **kwargs)

    def note(sql: str) -> None:
        words = sql.split(" ", 2)
        trips[" ".join(words[:2])] += 1
        order.append(words[0].upper())

    def counting(original: Any) -> Any:
        async def counted(self: Any, sql: str, parameters: Any = None) -> Any:
            note(sql)
            return await original(self, sql, parameters)
        return counted

    monkeypatch.setattr(aiosqlite.core.Connection, "_execute", counted_run)
    for owner, name in ((aiosqlite.cursor.Cursor, "execute"), (aiosqlite.core.Connection, "execute"),
                        (aiosqlite.core.Connection, "execute_fetchall")):
        monkeypatch.setattr(owner, name, counting(getattr(owner, name)))
    return trips, order


def before_statements(monkeypatch: pytest.MonkeyPatch, first_word: str,
                      hook: Callable[[], Awaitable[object] | object]) -> None:
    """From now on call ``hook`` (awaiting what it returns, if awaitable) before each statement whose first word is
    ``first_word`` that the store hands straight to the driver's connection: a locking transaction's statements
    (``BEGIN IMMEDIATE``, ``SELECT``, ``INSERT``, ``UPDATE``, ``DELETE``, ``COMMIT``, ``ROLLBACK``), the
    compare-and-set ``UPDATE``, a get's ``SELECT``. (SQLAlchemy's ``commit`` and ``before_cursor_execute`` events never
    see them.)"""

    def hooking(original: Any) -> Any:
        async def hooked(self: Any, sql: str, parameters: Any = None) -> Any:
            if sql.split(" ", 1)[0].upper() == first_word:
                out = hook()
                if inspect.isawaitable(out):
                    await out
            return await original(self, sql, parameters)
        return hooked

    for name in ("execute", "execute_fetchall", "executemany"):
        monkeypatch.setattr(aiosqlite.core.Connection, name, hooking(getattr(aiosqlite.core.Connection, name)))
