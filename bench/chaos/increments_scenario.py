"""Increments: 4 processes increment one item concurrently on every store, directly through ``iii_streams``
and through an engine process's ``stream::update`` (memory, Redis, SQLite, PostgreSQL).

Targets per store and path: no lost update (final value == increments made), 0 errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from iii import register_worker
from iii.stream import StreamDeleteInput, StreamGetInput, StreamSetInput
from iii_streams import open_stream
from iii_streams.cli import main as streams_cli

from .common import ROOT, EngineProcess, Report, child_env

PROCESSES = 4
REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
ITEM = {"group_id": "g", "item_id": "counter"}


class Racers:
    """The long-lived incrementing processes, driven line by line."""

    def __init__(self, procs: list[asyncio.subprocess.Process]) -> None:
        self.procs = procs

    @classmethod
    async def start(cls) -> Racers:
        """Start :data:`PROCESSES` of them."""
        procs = [await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.chaos.incr_worker", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env=child_env(), cwd=ROOT) for _ in range(PROCESSES)]
        return cls(procs)

    async def race(self, cmd: dict[str, Any], within: float) -> list[dict[str, Any]]:
        """Give every process ``cmd``, start them together, collect their results (bounded by ``within`` s)."""
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write((json.dumps(cmd) + "\n").encode())  # racing processes can take minutes: see run()
        async with asyncio.timeout(within):
            for proc in self.procs:
                assert proc.stdout is not None
                line = await proc.stdout.readline()
                if line.strip() != b"ready":
                    raise RuntimeError(f"increment process said {line!r} instead of ready")
            for proc in self.procs:
                assert proc.stdin is not None
                proc.stdin.write(b"go\n")
            out = []
            for proc in self.procs:
                assert proc.stdout is not None
                out.append(json.loads(await proc.stdout.readline()))
            return out

    async def close(self) -> None:
        """End them (an empty line), killing any that do not exit within 5 s."""
        for proc in self.procs:
            with contextlib.suppress(Exception):
                assert proc.stdin is not None
                proc.stdin.write(b"\n")
                proc.stdin.close()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(POSTGRES_SERVER, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def direct_value(url: str, stream: str, value: Any = None, *, delete: bool = False) -> Any:
    """Set the item to ``value`` (when given), delete it, or read it, straight from the store."""
    store = open_stream(url)
    try:
        if delete:
            await store.delete(StreamDeleteInput(stream_name=stream, **ITEM))
            return None
        if value is not None:
            await store.set(StreamSetInput(stream_name=stream, data=value, **ITEM))
            return value
        return await store.get(StreamGetInput(stream_name=stream, **ITEM))
    finally:
        await store.aclose()


async def engine_value(url: str, stream: str, value: Any = None) -> Any:
    """Set or read the item through the engine's ``stream::set`` / ``stream::get``."""
    client = await asyncio.to_thread(register_worker, url)
    try:
        if value is not None:
            await client.trigger_async({"function_id": "stream::set",
                                        "payload": {"stream_name": stream, **ITEM, "data": value}})
            return value
        return await client.trigger_async({"function_id": "stream::get", "payload": {"stream_name": stream, **ITEM}})
    finally:
        await client.shutdown_async()


def _n(value: Any) -> Any:
    return value.get("n") if isinstance(value, dict) else value


TARGETS: tuple[tuple[str, str], ...] = (("memory", "engine"), ("redis", "direct"), ("redis", "engine"),
                                         ("sqlite", "direct"), ("sqlite", "engine"),
                                         ("postgres", "direct"), ("postgres", "engine"))


def engine_config(workdir: Path) -> Path:
    """An engine configuration with the stream module alone: the others only cost start-up time here."""
    path = workdir / "increments-engine.json"
    path.write_text(json.dumps({"port": 0, "modules": [
        {"class": "modules::stream::StreamModule", "config": {"host": "127.0.0.1", "port": 0}}]}))
    return path


async def run(quick: bool, workdir: Path, paths: tuple[str, ...] = ("direct", "engine"),
              stores: tuple[str, ...] = ("memory", "redis", "sqlite", "postgres")) -> Report:
    """Run the increments scenario (only the ``paths`` and ``stores`` given) and return its figures.

    Set-up runs at once: the racing processes, the PostgreSQL database and one engine per store reached through
    an engine all start together; then the targets race one after another on the same processes.
    """
    report = Report("increments")
    total = 60 if quick else 10_000  # quick: 15 per process, still 8 writers racing on one item
    per = total // PROCESSES
    concurrency = 2 if quick else 8  # full: 4 x 8 = 32 writers racing on one item
    chosen = [t for t in TARGETS if t[1] in paths and t[0] in stores]
    pg_name = f"iii_chaos_{uuid.uuid4().hex[:12]}"
    pg_url = make_url(POSTGRES_SERVER).set(drivername="postgresql+asyncpg", database=pg_name).render_as_string(False)
    urls: dict[str, str | None] = {
        "memory": None, "redis": REDIS_URL, "postgres": pg_url,
        "sqlite": f"sqlite+aiosqlite:///{workdir / 'increments.db'}"}
    config = engine_config(workdir)
    needs_pg = any(store == "postgres" for store, _ in chosen)

    async def pg_setup() -> None:
        await _admin(f'CREATE DATABASE "{pg_name}"')
        if await asyncio.to_thread(streams_cli, ["migrate", pg_url]) != 0:
            raise RuntimeError(f"iii-streams migrate {pg_url} failed")

    pg_ready = asyncio.create_task(pg_setup()) if needs_pg else None

    async def start_engine(store: str) -> EngineProcess:
        if store == "postgres" and pg_ready is not None:
            await pg_ready  # the engine checks the schema when it starts
        args = ["--config", str(config), "--log-level", "WARNING"]
        url = urls[store]
        if url is not None:
            # SQLite: the engine gets its own file, so the direct and engine runs never share a database lock
            args += ["--stream-store", url.replace("increments.db", "increments-engine.db")]
        return await EngineProcess.start(workdir / f"engine-{store}.log", *args)

    engine_stores = sorted({store for store, path in chosen if path == "engine"})
    engine_tasks = {store: asyncio.create_task(start_engine(store)) for store in engine_stores}
    racers_task = asyncio.create_task(Racers.start())
    racers: Racers | None = None
    try:
        racers = await racers_task
        for store_name, path in chosen:
            label = f"{store_name} {'direct' if path == 'direct' else 'via engine'}"
            stream = f"chaos_{uuid.uuid4().hex[:10]}"
            store_url = urls[store_name]
            engine: EngineProcess | None = None
            began = time.perf_counter()
            try:
                if store_name == "postgres" and pg_ready is not None:
                    await pg_ready
                if path == "engine":
                    engine = await engine_tasks[store_name]
                    await engine_value(engine.url, stream, {"n": 0})
                    cmd = {"mode": "engine", "url": engine.url}
                else:
                    assert store_url is not None
                    await direct_value(store_url, stream, {"n": 0})
                    cmd = {"mode": "direct", "url": store_url}
                results = await racers.race({**cmd, "stream": stream, "n": per, "concurrency": concurrency},
                                            25 if quick else 400)
                seconds = max(r["seconds"] for r in results)  # from "go" to the last increment
                final = _n(await (engine_value(engine.url, stream) if engine is not None
                                  else direct_value(str(store_url), stream)))
                done = sum(r["done"] for r in results)
                errors = sum(r["errors"] for r in results)
                samples = [s for r in results for s in r["samples"]][:2]
                lost = done - final if isinstance(final, int) else done
                report.check(f"{label}: lost updates", lost, lost == 0 and final == done, "0",
                             detail=f"final {final!r}, {done} acknowledged of {per * PROCESSES}; "
                             f"{done / max(seconds, 1e-9):,.0f} increments/s")
                report.check(f"{label}: errors", errors, errors == 0, "0", detail="; ".join(samples)
                             + f" (race and checks {time.perf_counter() - began:.1f} s)")
            except Exception as exc:  # one store failing must not hide the others
                # A run cut short leaves its processes mid-conversation: start fresh ones for the next store.
                await racers.close()
                racers = await Racers.start()
                report.check(f"{label}: completed", "no", False, "yes", detail=f"{type(exc).__name__}: {exc}"[:300])
            finally:
                if store_url is not None and store_name == "redis":
                    with contextlib.suppress(Exception):
                        await direct_value(store_url, stream, delete=True)
    finally:
        if racers is None:
            with contextlib.suppress(Exception):
                racers = await racers_task
        if racers is not None:
            await racers.close()
        for task in engine_tasks.values():
            with contextlib.suppress(Exception):
                await (await task).stop()
        if pg_ready is not None:
            with contextlib.suppress(Exception):
                await pg_ready
            with contextlib.suppress(Exception):
                await _admin(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
    return report
