"""Contended updates of one item: P processes x C calls in flight against one caller doing them one at a time.

For each store (Redis, SQLite file, PostgreSQL) and each path (``direct``: the processes open the store with
``iii_streams.open_stream``; ``engine``: an in-process engine keeps the store and the processes call
``stream::update`` over raw worker sockets), every round runs

- ``seq``: one process, one call at a time (the baseline), and
- ``contended``: ``--procs`` processes x ``--inflight`` calls in flight,

interleaved (every round runs each path and kind once, the order alternates per round), each incrementing one
fresh item ``--n`` times in total. It prints per round and then medians with spread (min-max): updates/s
(updates over the slowest worker's time from the common start signal to its last update), the ratio contended /
seq, CPU seconds per 1000 updates (all worker processes, plus the engine process on the engine path, which is
also shown alone), optimistic-retry conflicts per update where the store counts them (Redis), and checks that the
final counter equals the number of updates. With both paths it also prints engine / direct per kind, each ratio
taken within one round. ``direct`` opens the stores without change events (the issue's baseline, kept as it was);
``direct-events`` opens them with events published the way the engine's store publishes them (Redis PUBLISH in
the write's script, PostgreSQL NOTIFY in the write's statement), the like-for-like comparison.

Run: ``.venv/bin/python bench/streams_contended.py [--n 2000] [--rounds 3] [--procs 4] [--inflight 64]
[--stores redis,sqlite,postgres] [--paths direct,direct-events,engine] [--before /tmp/old-checkout]``.
``--before DIR`` adds the path ``engine-before``: an engine from another checkout (``git worktree add DIR <commit>``)
in the same rounds; both engines then run in processes of their own (CPU read from ``/proc``), and it prints
engine / engine-before per kind (rate and engine CPU per update, each ratio within one round).
Engines run with the collector settings the ``iii-engine`` command applies (iii_engine.gc_policy; ``III_GC_TUNING=0``
turns them off), as shipped.
Goal (issue #10): contended >= seq on Redis, 0 lost updates; PostgreSQL engine >= 0.8 of direct.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a plain script: use the checkout

from iii.stream import StreamGetInput, StreamUpdateInput, UpdateIncrement
from iii.wire import dumps, loads
from iii_streams import open_stream

ROOT = Path(__file__).resolve().parents[1]
DIRECT_PATHS = ("direct", "direct-events")


# -- the worker process ----------------------------------------------------------------------------------------


async def _worker(cmd: dict[str, Any]) -> dict[str, Any]:
    n, inflight, stream = int(cmd["n"]), int(cmd["inflight"]), cmd["stream"]
    remaining = n
    conflicts_before = 0
    store: Any = None
    if cmd["path"] in DIRECT_PATHS:
        # "direct" as in the row (no change events); "direct-events" publishes them like the engine's store
        store = open_stream(cmd["url"], publish_events=cmd["path"] == "direct-events")
        request = StreamUpdateInput(stream_name=stream, group_id="g", item_id="counter",
                                    ops=[UpdateIncrement(path="n", by=1)])
        await store.get(StreamGetInput(stream_name=stream, group_id="g", item_id="warm-up"))  # connect, migrate

        async def one() -> None:
            await store.update(request)

        conflicts_before = int(getattr(store, "update_conflicts", 0))
    else:
        import websockets

        ws = await websockets.connect(cmd["url"], compression=None, max_size=None)
        await ws.recv()  # workerregistered
        waiting: dict[str, asyncio.Future[Any]] = {}

        async def read() -> None:
            async for raw in ws:
                frame = loads(raw)
                fut = waiting.pop(frame.get("invocation_id", ""), None)
                if fut is not None and not fut.done():
                    if frame.get("error"):
                        fut.set_exception(RuntimeError(str(frame["error"])))
                    else:
                        fut.set_result(frame.get("result"))

        reader = asyncio.get_running_loop().create_task(read())
        data = {"stream_name": stream, "group_id": "g", "item_id": "counter",
                "ops": [{"type": "increment", "path": "n", "by": 1}]}

        async def one() -> None:
            invocation_id = str(uuid.uuid4())  # canonical form: the engine answers with it
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            waiting[invocation_id] = fut
            await ws.send(dumps({"type": "invokefunction", "invocation_id": invocation_id,
                                 "function_id": "stream::update", "data": data}))
            await fut

    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    cpu0 = time.process_time()
    errors: list[str] = []

    async def lane() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            try:
                await one()
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:200])

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(inflight)))
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    conflicts = int(getattr(store, "update_conflicts", 0)) - conflicts_before if store is not None else 0
    if store is not None:
        await store.aclose()
    else:
        reader.cancel()
        await ws.close()
    return {"seconds": seconds, "cpu": cpu, "errors": len(errors), "samples": errors[:3], "conflicts": conflicts}


# -- the driver ------------------------------------------------------------------------------------------------


async def _run_processes(path: str, url: str, stream: str, total: int, procs: int, inflight: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    share = [total // procs + (1 if i < total % procs else 0) for i in range(procs)]
    children = []
    for n in share:
        cmd = {"path": path, "url": url, "stream": stream, "n": n, "inflight": inflight}
        child = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--worker", json.dumps(cmd), env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        children.append(child)
    for child in children:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 60)
        if line.strip() != b"ready":
            raise RuntimeError(f"worker did not start: {line!r}")
    cpu0 = time.process_time()
    started = time.perf_counter()
    for child in children:
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        await child.stdin.drain()
    reports = []
    for child in children:
        out, _ = await asyncio.wait_for(child.communicate(), 600)
        reports.append(json.loads(out.decode().strip().splitlines()[-1]))
    wall = time.perf_counter() - started
    engine_cpu = time.process_time() - cpu0 if path == "engine" else 0.0  # the engine runs in this process
    return {"wall": wall, "busiest": max(r["seconds"] for r in reports),
            "cpu": sum(r["cpu"] for r in reports) + engine_cpu,
            "errors": sum(r["errors"] for r in reports), "samples": [s for r in reports for s in r["samples"]],
            "conflicts": sum(r["conflicts"] for r in reports), "engine_cpu": engine_cpu}


async def _final(url: str, stream: str) -> int:
    async with open_stream(url, publish_events=False) as store:
        value = await store.get(StreamGetInput(stream_name=stream, group_id="g", item_id="counter"))
    return int(value["n"]) if isinstance(value, dict) else 0


async def _one(
    label: str, path: str, url: str, store_url: str, total: int, procs: int, inflight: int
) -> dict[str, Any]:
    stream = f"bench-{label}-{uuid.uuid4().hex[:8]}"
    report = await _run_processes(path, url, stream, total, procs, inflight)
    final = await _final(store_url, stream)
    report["lost"] = total - report["errors"] - final
    # from "go" to the last worker's last update (process start-up and teardown are not the store's work)
    report["rate"] = total / report["busiest"]
    return report


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):9.1f} ({min(values):.1f}-{max(values):.1f})"


async def _start_engine(store_url: str) -> Any:
    from iii_engine import Engine, EngineConfig, ModuleSpec

    modules = [ModuleSpec("modules::stream::StreamModule",
                          {"host": "127.0.0.1", "port": 0, "store_url": store_url})]
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=modules))
    await engine.__aenter__()
    _tune_gc()
    return engine


def _tune_gc() -> None:
    """The collector settings the ``iii-engine`` command applies once started (the engine as shipped); a checkout
    from before iii_engine.gc_policy runs without them. ``III_GC_TUNING=0`` turns them off."""
    try:
        from iii_engine.gc_policy import tune_gc
    except ImportError:
        return
    tune_gc()


_ENGINE_CHILD = """
import asyncio, sys
sys.path.insert(0, sys.argv[1])
from iii_engine import Engine, EngineConfig, ModuleSpec

async def main() -> None:
    modules = [ModuleSpec("modules::stream::StreamModule", {"host": "127.0.0.1", "port": 0, "store_url": sys.argv[2]})]
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=modules))
    await engine.__aenter__()
    try:  # the collector settings the iii-engine command applies (absent from older checkouts)
        from iii_engine.gc_policy import tune_gc
    except ImportError:
        pass
    else:
        tune_gc()
    print(engine.url, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await engine.__aexit__(None, None, None)

asyncio.run(main())
"""


class _ChildEngine:
    """An engine from checkout ``root`` in a process of its own (``--before``): its URL and its CPU seconds."""

    def __init__(self, process: Any, url: str) -> None:
        self.process = process
        self.url = url

    @classmethod
    async def start(cls, root: str, store_url: str) -> _ChildEngine:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-P", "-c", _ENGINE_CHILD, root, store_url,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        if not line.startswith(b"ws"):
            raise RuntimeError(f"engine from {root} did not start: {line!r}")
        return cls(process, line.decode().strip())

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime, every thread

    async def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"stop\n")
        await self.process.stdin.drain()
        await asyncio.wait_for(self.process.wait(), 30)


async def _bench(store: str, store_url: str, paths: list[str], args: argparse.Namespace) -> None:
    """Every round runs each (path, kind) once; the order alternates per round so drift hits both sides."""
    children: dict[str, _ChildEngine] = {}
    if args.before:  # both engines in processes of their own, so they are measured alike
        children["engine"] = await _ChildEngine.start(str(ROOT), store_url)
        children["engine-before"] = await _ChildEngine.start(args.before, store_url)
        paths = [*paths, "engine-before"] if "engine" in paths else paths
    engine = await _start_engine(store_url) if "engine" in paths and not children else None
    runs = [(path, kind) for path in paths for kind in ("seq", "contended")]
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {run: [] for run in runs}
    try:
        for r in range(args.rounds):
            for path, kind in runs if r % 2 == 0 else runs[::-1]:
                procs, inflight = (1, 1) if kind == "seq" else (args.procs, args.inflight)
                n = args.n_seq if kind == "seq" else args.n
                child = children.get(path)
                url = child.url if child is not None else engine.url if path == "engine" else store_url
                cpu0 = child.cpu() if child is not None else 0.0
                rep = await _one(f"{store}-{kind}", "engine" if child is not None else path, url, store_url, n,
                                 procs, inflight)
                if child is not None:  # the engine's own process, not this one
                    rep["engine_cpu"] = child.cpu() - cpu0
                    rep["cpu"] += rep["engine_cpu"]
                rows[path, kind].append(rep)
                own = (f" (engine {1000 * rep['engine_cpu'] / n:5.2f}, {1e6 * rep['engine_cpu'] / n:5.1f} µs/upd)"
                       if path.startswith("engine") else "")
                print(f"  {store:8} {path:13} round {r + 1} {kind:9} {rep['rate']:9.1f} upd/s  "
                      f"(slowest worker {rep['busiest']:.2f} s of {rep['wall']:.2f} s)  "
                      f"cpu/1000 {1000 * rep['cpu'] / n:6.2f} s{own}  conflicts/upd {rep['conflicts'] / n:6.2f}  "
                      f"errors {rep['errors']}  lost {rep['lost']}" + (f"  e.g. {rep['samples'][0]}"
                                                                      if rep["samples"] else ""), flush=True)
    finally:
        if engine is not None:
            await engine.__aexit__(None, None, None)
        for child in children.values():
            await child.stop()
    for path in paths:
        seq = [r["rate"] for r in rows[path, "seq"]]
        con = [r["rate"] for r in rows[path, "contended"]]
        ratios = [c / s for c, s in zip(con, seq, strict=True)]
        cpu = {k: [1000 * r["cpu"] / (args.n_seq if k == "seq" else args.n) for r in rows[path, k]]
               for k in ("seq", "contended")}
        lost = sum(r["lost"] for k in ("seq", "contended") for r in rows[path, k])
        if path.startswith("engine"):  # the engine process's own CPU per update (the through-engine cost), in µs
            own_us = {k: [1e6 * r["engine_cpu"] / (args.n_seq if k == "seq" else args.n) for r in rows[path, k]]
                      for k in ("seq", "contended")}
            print(f"{store:8} {path} process CPU per update: seq {_summary(own_us['seq'])} µs, contended "
                  f"{_summary(own_us['contended'])} µs", flush=True)
        print(f"{store:8} {path:13} seq {_summary(seq)} upd/s   {args.procs}x{args.inflight} {_summary(con)} upd/s   "
              f"ratio {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})   cpu/1000 upd: seq "
              f"{statistics.median(cpu['seq']):.2f} s, contended {statistics.median(cpu['contended']):.2f} s   "
              f"lost {lost}", flush=True)
    if "engine-before" in paths:
        for kind in ("seq", "contended"):
            n = args.n_seq if kind == "seq" else args.n
            rate = [e["rate"] / b["rate"] for e, b in zip(rows["engine", kind], rows["engine-before", kind],
                                                          strict=True)]
            cpu_ratio = [e["engine_cpu"] / b["engine_cpu"] for e, b in zip(rows["engine", kind],
                                                                         rows["engine-before", kind], strict=True)]
            print(f"{store:8} engine/engine-before {kind:9} rate {statistics.median(rate):.2f} "
                  f"({min(rate):.2f}-{max(rate):.2f})   engine cpu per update {statistics.median(cpu_ratio):.2f} "
                  f"({min(cpu_ratio):.2f}-{max(cpu_ratio):.2f}) of before, same rounds "
                  f"(n {n})", flush=True)
    for direct in (p for p in DIRECT_PATHS if p in paths and "engine" in paths):
        for kind in ("seq", "contended"):
            through = [e["rate"] / d["rate"] for e, d in zip(rows["engine", kind], rows[direct, kind], strict=True)]
            own = [1000 * e["engine_cpu"] / (args.n_seq if kind == "seq" else args.n) for e in rows["engine", kind]]
            print(f"{store:8} engine/{direct:13} {kind:9} {statistics.median(through):.2f} "
                  f"({min(through):.2f}-{max(through):.2f}) same round   engine process cpu/1000 upd "
                  f"{statistics.median(own):.2f} s", flush=True)


async def _postgres_url(server: str) -> tuple[str, Any]:
    import asyncpg
    from sqlalchemy.engine import make_url

    from iii_streams.migrate import migrate

    name = f"iii_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(server).set(drivername="postgresql+asyncpg", database=name).render_as_string(False)
    await migrate(url)

    async def drop() -> None:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    return url, drop


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="updates per contended run")
    parser.add_argument("--n-seq", type=int, default=0, help="updates per seq run (default: --n / 4)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--stores", default="redis,sqlite,postgres")
    parser.add_argument("--paths", default="direct,direct-events,engine",
                        help="direct: stores without change events (the issue's baseline); direct-events: stores "
                        "that publish them, as the engine's store does; engine: stream::update through an engine")
    parser.add_argument("--before", default="",
                        help="a checkout (e.g. a git worktree of an older commit): adds the path engine-before, an "
                        "engine from that checkout; both engines then run in processes of their own")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    args.n_seq = args.n_seq or max(100, args.n // 4)
    print(f"ratio = contended ({args.procs} processes x {args.inflight} in flight) / seq (1 caller, one at a "
          "time), same run, interleaved rounds; medians (min-max)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for store in args.stores.split(","):
            drop = None
            if store == "redis":
                url = args.redis
            elif store == "sqlite":
                url = f"sqlite+aiosqlite:///{Path(tmp) / 'contended.db'}"
            elif store == "postgres":
                url, drop = await _postgres_url(args.postgres)
            else:
                raise SystemExit(f"unknown store {store!r} (redis, sqlite, postgres)")
            try:
                await _bench(store, url, args.paths.split(","), args)
            finally:
                if drop is not None:
                    await drop()
                if store == "redis":
                    import redis.asyncio as aioredis

                    client = aioredis.Redis.from_url(args.redis)
                    keys = [k async for k in client.scan_iter(match="stream:bench-redis-*")]
                    if keys:
                        await client.delete(*keys)
                    await client.aclose()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(asyncio.run(_worker(json.loads(sys.argv[2])))), flush=True)
    else:
        asyncio.run(main())
