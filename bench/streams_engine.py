"""Stream functions through the engine: ops/s of ``stream::set``, ``stream::get`` and ``stream::update`` invoked by
a worker over the control socket, against calling the same backend directly in the same run, printed as ratios.

Each backend is the engine's own store (``store_url``). "seq" is one call at a time (a full worker → engine →
store → worker round trip); "x32" keeps 32 calls in flight on one socket.

Run: ``.venv/bin/python bench/streams_engine.py [--n 2000] [--redis URL] [--no-sqlite]``
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a plain script: use the checkout

from iii.stream import StreamGetInput, StreamSetInput, StreamUpdateInput, UpdateIncrement
from iii.wire import dumps, loads
from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.stream import StreamModule
from iii_streams import open_stream

Op = Callable[[int], Awaitable[Any]]
IN_FLIGHT = 32


class Caller:
    """A raw worker socket matching results to calls by invocation id."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.waiting: dict[str, asyncio.Future[Any]] = {}
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            frame = loads(raw)
            fut = self.waiting.pop(frame.get("invocation_id", ""), None)
            if fut is not None:
                if "error" in frame:
                    fut.set_exception(RuntimeError(str(frame["error"])))
                else:
                    fut.set_result(frame.get("result"))

    async def call(self, function_id: str, data: Any) -> Any:
        invocation_id = str(uuid.uuid4())
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[invocation_id] = fut
        await self.ws.send(dumps({"type": "invokefunction", "invocation_id": invocation_id,
                                  "function_id": function_id, "data": data}))
        return await fut


def payloads(i: int) -> dict[str, dict[str, Any]]:
    key = {"stream_name": "bench", "group_id": "g", "item_id": f"i{i % 100}"}
    return {
        "set": {**key, "data": {"n": i, "text": "hello", "tags": [1, 2, 3]}},
        "get": key,
        "update": {"stream_name": "bench", "group_id": "g", "item_id": "u",
                   "ops": [{"type": "increment", "path": "n", "by": 1}]},
    }


async def rate(op: Op, n: int, concurrency: int = 1) -> float:
    for i in range(min(50, n)):
        await op(i)
    counter = iter(range(n))

    async def lane() -> None:
        for i in counter:
            await op(i)

    start = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return n / (time.perf_counter() - start)


async def bench_backend(label: str, url: str, n: int) -> None:
    direct = open_stream(url, publish_events=False)
    ops = [UpdateIncrement(path="n", by=1)]
    direct_ops: dict[str, Op] = {
        "set": lambda i: direct.set(StreamSetInput(stream_name="bench-direct", group_id="g", item_id=f"i{i % 100}",
                                                   data={"n": i, "text": "hello", "tags": [1, 2, 3]})),
        "get": lambda i: direct.get(StreamGetInput(stream_name="bench-direct", group_id="g", item_id=f"i{i % 100}")),
        "update": lambda i: direct.update(StreamUpdateInput(stream_name="bench-direct", group_id="g", item_id="u",
                                                            ops=ops)),
    }
    modules = [ModuleSpec("modules::stream::StreamModule", {"host": "127.0.0.1", "port": 0, "store_url": url})]
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=modules)) as engine:
        module = engine.module("stream")
        assert isinstance(module, StreamModule)
        ws = await websockets.connect(engine.url, compression=None, max_size=None)
        await ws.recv()  # workerregistered
        caller = Caller(ws)
        for name in ("set", "get", "update"):
            raw = await rate(direct_ops[name], n)

            def through(i: int, name: str = name) -> Awaitable[Any]:
                return caller.call(f"stream::{name}", payloads(i)[name])

            seq = await rate(through, n)
            par = await rate(through, n, IN_FLIGHT)
            print(f"{label:8} {name:7} direct {raw:>9.0f}/s   engine seq {seq:>7.0f}/s ({seq / raw:5.3f})"
                  f"   engine x{IN_FLIGHT} {par:>7.0f}/s ({par / raw:5.3f})", flush=True)
        await ws.close()
        caller.reader.cancel()
    await direct.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args()
    print("ratio = engine ops/s / direct backend ops/s, same run")
    await bench_backend("memory", "memory://", args.n)
    try:
        import redis.asyncio as aioredis

        probe = aioredis.Redis.from_url(args.redis, socket_connect_timeout=1)
        await probe.ping()
        await probe.aclose()
    except Exception as exc:
        print(f"redis    skipped: {exc}")
    else:
        await bench_backend("redis", args.redis, args.n)
        cleanup = aioredis.Redis.from_url(args.redis)
        keys = [k async for k in cleanup.scan_iter(match="stream:bench*")]
        if keys:
            await cleanup.delete(*keys)
        await cleanup.aclose()
    if not args.no_sqlite:
        with TemporaryDirectory() as tmp:
            await bench_backend("sqlite", f"sqlite+aiosqlite:///{tmp}/bench.db", max(200, args.n // 4))


if __name__ == "__main__":
    asyncio.run(main())
