"""A SQLite store over an engine the caller used before (its pool already holding connections, say after running its
own migrations): those connections were made before the store's connect hook, so they kept the driver's implicit
transactions; the store's single-statement writes opened one that was never committed, and the pool's rollback on
return discarded them. 20 of 30 increments were answered "ok" and lost in an attack."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from contextlib import closing
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from iii.stream import StreamSetInput, StreamUpdateInput, UpdateIncrement
from iii_streams.schema import TABLE_NAME
from iii_streams.sql import SQLStream


async def test_a_store_over_an_engine_used_before_keeps_every_write(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    try:
        used = [await engine.connect() for _ in range(3)]
        for conn in used:
            await conn.execute(text("SELECT 1"))
        for conn in used:
            await conn.close()  # back in the pool, made before the store existed
        increment = StreamUpdateInput(stream_name="s", group_id="g", item_id="i", ops=[UpdateIncrement(path="n", by=1)])
        async with SQLStream(engine, create=True) as store:
            await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data={"n": 0}))
            together = await asyncio.gather(*(store.update(increment) for _ in range(10)))
            one_by_one = [await store.update(increment) for _ in range(10)]
        assert sorted(r.new_value["n"] for r in together + one_by_one) == list(range(1, 21))
        with closing(sqlite3.connect(path)) as other:
            (stored,) = other.execute(f"SELECT value FROM {TABLE_NAME}").fetchone()
        assert json.loads(stored) == {"n": 20}  # before: {"n": 11}, writes answered "ok" rolled back
    finally:
        await engine.dispose()


async def _caller_query(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def test_a_cut_checkout_of_an_in_memory_engine_keeps_its_database() -> None:
    """The set-up of such connections ran in a pool checkout hook: a cancel there made the pool invalidate the
    connection, and an in-memory database (all of it: the caller's tables and the store's items) went with it, 24 of
    40 cancels in an attack. It runs as the store's operation now, outside the checkout."""
    for turns in range(12):  # the cancel comes after that many loop turns: somewhere in the checkout
        engine = create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)
        try:
            async with engine.begin() as conn:
                await conn.execute(text("CREATE TABLE mine (x INTEGER)"))
                await conn.execute(text("INSERT INTO mine VALUES (42)"))
            SQLStream(engine, create=True)  # hooks the engine

            query = asyncio.create_task(_caller_query(engine))
            for _ in range(turns):
                await asyncio.sleep(0)  # (the point of the cut, counted in loop turns: no event marks it)
            query.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await query
            async with engine.connect() as conn:
                assert (await conn.execute(text("SELECT x FROM mine"))).all() == [(42,)], turns
        finally:
            await engine.dispose()
