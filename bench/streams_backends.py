"""Stream backend throughput: ops/s of get, set and update per backend, against the raw client doing the same
work (same statements / commands, same event publication) in the same run, printed as ratios.

Rows ``set x64`` / ``update x64`` keep 64 calls in flight (the stores group-commit them: many writes per
transaction) against the raw client's one-transaction-per-write approach, which is what the SQL store did
before (the ratio is the group-commit gain; issue #10 asks >= 5 for SQLite ``set``). ``get x64`` keeps 64 gets in
flight (the SQL store reads those waiting together, in one statement) against the raw client's one pooled connection
and statement per get. ``set`` writes over 100
existing items; ``set new x64`` creates a new item with every call (the raw client: one INSERT per transaction).
Rounds are interleaved (the order alternates), each figure is a median with its spread (min-max), and ``cpu`` is
this process's CPU microseconds per op.

Run: ``.venv/bin/python bench/streams_backends.py [--n 2000] [--rounds 3] [--redis URL] [--postgres URL]
[--only memory,redis,sqlite,postgres] [--rows "set x64,set new x64"]`` (PostgreSQL: a server URL; a scratch
database ``iii_bench_<random>`` is created and dropped).
Goal: every backend >= 0.70 of its raw client for get and set.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import WatchError
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a plain script: use the checkout

from iii.stream import StreamGetInput, StreamSetInput, StreamUpdateInput, UpdateIncrement
from iii.stream_ops import apply_update
from iii.wire import dumps, loads
from iii_streams import MemoryStream, RedisStream, SQLStream
from iii_streams.base import Backend
from iii_streams.events import make_event
from iii_streams.migrate import migrate
from iii_streams.schema import group_key, item_key, items, stream_key

Op = Callable[[int], Awaitable[Any]]


async def rate(op: Op, n: int, concurrency: int = 1) -> tuple[float, float]:
    """``(ops/s, CPU µs per op)`` of ``n`` calls with ``concurrency`` in flight."""
    for i in range(min(50, n)):  # warm-up: connections, statement caches
        await op(i)
    counter = iter(range(n))

    async def lane() -> None:
        for i in counter:
            await op(i)

    cpu = time.process_time()
    start = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return n / (time.perf_counter() - start), 1e6 * (time.process_time() - cpu) / n


def ours(store: Backend, stream: str) -> dict[str, Op]:
    ops = [UpdateIncrement(path="n", by=1)]
    fresh = itertools.count()  # a new item per call, whatever ``i`` the rate loop passes (it repeats per round)
    return {
        "set new": lambda i: store.set(StreamSetInput(stream_name=stream, group_id="new", item_id=f"n{next(fresh)}",
                                                      data={"n": i, "text": "hello", "tags": [1, 2, 3]})),
        "get": lambda i: store.get(StreamGetInput(stream_name=stream, group_id="g", item_id=f"i{i % 100}")),
        "set": lambda i: store.set(StreamSetInput(stream_name=stream, group_id="g", item_id=f"i{i % 100}",
                                                  data={"n": i, "text": "hello", "tags": [1, 2, 3]})),
        "update": lambda i: store.update(StreamUpdateInput(stream_name=stream, group_id="g", item_id="u", ops=ops)),
    }


def raw_redis(client: aioredis.Redis, stream: str) -> dict[str, Op]:
    key = f"stream:{stream}:g"

    async def get(i: int) -> Any:
        raw = await client.hget(key, f"i{i % 100}")
        return None if raw is None else loads(raw)

    async def set_(i: int, item: str | None = None, group: str = "g") -> Any:
        item, data = item or f"i{i % 100}", {"n": i, "text": "hello", "tags": [1, 2, 3]}
        text = dumps(data)
        async with client.pipeline(transaction=True) as pipe:
            pipe.hget(f"stream:{stream}:{group}", item)
            pipe.hset(f"stream:{stream}:{group}", item, text)
            pipe.publish("stream::events", dumps(make_event(stream, group, item, "update", data)))
            old, _, _ = await pipe.execute()
        return None if old is None else loads(old)

    fresh = itertools.count()

    async def set_new(i: int) -> Any:
        return await set_(i, f"n{next(fresh)}", "new")

    async def update_(i: int) -> Any:
        async with client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.hget(key, "u")
                    _, new = apply_update(None if raw is None else loads(raw), [UpdateIncrement(path="n", by=1)])
                    pipe.multi()
                    pipe.hset(key, "u", dumps(new))
                    pipe.publish("stream::events", dumps(make_event(stream, "g", "u", "update", new)))
                    await pipe.execute()
                    return new
                except WatchError:
                    continue

    return {"get": get, "set": set_, "set new": set_new, "update": update_}


def raw_sql(engine: AsyncEngine, stream: str) -> dict[str, Op]:
    pg = engine.dialect.name == "postgresql"
    reader = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def get(i: int) -> Any:
        async with reader.connect() as conn:
            text = (await conn.execute(select(items.c.value).where(
                items.c.item_key == item_key(stream, "g", f"i{i % 100}")))).scalar_one_or_none()
        return None if text is None else loads(text)

    async def write(item: str, compute: Callable[[Any], Any], group: str = "g") -> Any:
        key = item_key(stream, group, item)
        query = select(items.c.value).where(items.c.item_key == key)
        async with engine.begin() as conn:
            old_text = (await conn.execute(query.with_for_update() if pg else query)).scalar_one_or_none()
            new = compute(None if old_text is None else loads(old_text))
            text = dumps(new)
            if old_text is None:
                await conn.execute(insert(items).values(
                    item_key=key, group_key=group_key(stream, group), stream_key=stream_key(stream),
                    stream_name=stream, group_id=group, item_id=item, value=text))
            else:
                await conn.execute(update(items).where(items.c.item_key == key).values(value=text))
            if pg:
                await conn.execute(select(func.pg_notify("iii_streams_events",
                                                         dumps(make_event(stream, group, item, "update", new)))))
        return new

    async def set_(i: int) -> Any:
        data = {"n": i, "text": "hello", "tags": [1, 2, 3]}
        return await write(f"i{i % 100}", lambda _old: data)

    fresh = itertools.count()

    async def set_new(i: int) -> Any:
        data = {"n": i, "text": "hello", "tags": [1, 2, 3]}
        return await write(f"n{next(fresh)}", lambda _old: data, "new")

    async def update_(i: int) -> Any:
        return await write("u", lambda old: apply_update(old, [UpdateIncrement(path="n", by=1)])[1])

    return {"get": get, "set": set_, "set new": set_new, "update": update_}


ROWS: tuple[tuple[str, str, int], ...] = (("set", "set", 1), ("get", "get", 1), ("update", "update", 1),
                                          ("get x64", "get", 64), ("set x64", "set", 64),
                                          ("set new x64", "set new", 64), ("update x64", "update", 64))


def _fmt(values: list[float]) -> str:
    return f"{statistics.median(values):>8.0f} ({min(values):.0f}-{max(values):.0f})"


async def compare(label: str, mine: dict[str, Op], raw: dict[str, Op] | None, n: int, rounds: int,
                  rows: set[str] | None = None) -> None:
    for row, name, concurrency in ROWS:  # set first so get reads existing items
        if (raw is None and concurrency > 1) or (rows is not None and row not in rows):
            continue
        ours_runs: list[tuple[float, float]] = []
        raw_runs: list[tuple[float, float]] = []
        for r in range(rounds):
            order = [(mine, ours_runs), (raw, raw_runs)] if r % 2 == 0 else [(raw, raw_runs), (mine, ours_runs)]
            for ops, runs in order:
                if ops is not None:
                    # the raw baseline is always one call at a time: one transaction per write, as the SQL store did
                    runs.append(await rate(ops[name], n, concurrency if ops is mine else 1))
        ours_rate = [r for r, _ in ours_runs]
        cpu = statistics.median(c for _, c in ours_runs)
        line = f"{label:<9} {row:<11} ours {_fmt(ours_rate)} ops/s cpu {cpu:5.0f} µs"
        if raw_runs:
            raw_rate = [r for r, _ in raw_runs]
            ratios = [o / r for o, r in zip(ours_rate, raw_rate, strict=True)]
            line += (f"   raw {_fmt(raw_rate)} ops/s cpu {statistics.median(c for _, c in raw_runs):5.0f} µs   "
                     f"ratio {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")
        print(line, flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--only", default="memory,redis,sqlite,postgres", help="backends to run, comma-separated")
    parser.add_argument("--rows", default="", help="rows to run, comma-separated (default: all)")
    args = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    only = set(args.only.split(","))
    rows = set(args.rows.split(",")) if args.rows else None

    if "memory" in only:
        async with MemoryStream() as memory:
            await compare("memory", ours(memory, "bench"), None, args.n * 5, args.rounds, rows)

    if "redis" in only:
        async with RedisStream.from_url(args.redis) as store:
            raw_client = aioredis.Redis.from_url(args.redis)
            try:
                await compare("redis", ours(store, f"bench-ours-{run}"), raw_redis(raw_client, f"bench-raw-{run}"),
                              args.n, args.rounds, rows)
            finally:
                for key in (f"stream:bench-ours-{run}:g", f"stream:bench-raw-{run}:g",
                            f"stream:bench-ours-{run}:new", f"stream:bench-raw-{run}:new"):
                    await raw_client.delete(key)
                await raw_client.aclose()

    if "sqlite" in only:
        with TemporaryDirectory() as tmp:
            async with SQLStream.from_url(f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}") as store:
                await store.get(StreamGetInput(stream_name="x", group_id="g", item_id="i"))  # migrates
                await compare("sqlite", ours(store, "ours"), raw_sql(store.engine, "raw"), args.n // 2, args.rounds,
                              rows)

    if "postgres" not in only:
        return
    name = f"iii_bench_{run}"
    admin = await asyncpg.connect(args.postgres)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(args.postgres).set(drivername="postgresql+asyncpg", database=name).render_as_string(False)
        await migrate(url)
        async with SQLStream.from_url(url) as store:
            await compare("postgres", ours(store, "ours"), raw_sql(store.engine, "raw"), args.n // 2, args.rounds,
                          rows)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
