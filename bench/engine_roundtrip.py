"""Engine hot path: invocation round trips per second through our engine vs a minimal raw relay.

The baseline is the leanest possible Python relay written inline (one websockets server, orjson/json parsing,
a dict of pending ids, no validation): caller -> relay -> callee -> relay -> caller, the same two hops our
engine makes. Both are driven by the same raw clients in the same run, so ``engine / relay`` is the share of
the ceiling the engine's decode -> route -> send path reaches.

Usage: .venv/bin/python bench/engine_roundtrip.py [--calls N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import websockets
from websockets.asyncio.server import ServerConnection, serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a plain script: use the checkout

from iii.wire import dumps, loads
from iii_engine import Engine, EngineConfig


async def raw_relay() -> tuple[Any, str]:
    """The baseline: forwards invocations to the one registered callee and results back, nothing else."""
    callee: list[ServerConnection] = []
    waiting: dict[str, ServerConnection] = {}

    async def handler(ws: ServerConnection) -> None:
        await ws.send(dumps({"type": "workerregistered", "worker_id": str(uuid.uuid4())}))
        async for raw in ws:
            msg = loads(raw)
            kind = msg["type"]
            if kind == "registerfunction":
                callee.append(ws)
            elif kind == "invokefunction":
                waiting[msg["invocation_id"]] = ws
                await callee[-1].send(raw)
            elif kind == "invocationresult":
                await waiting.pop(msg["invocation_id"]).send(raw)
            elif kind == "ping":
                await ws.send('{"type":"pong"}')

    server = await serve(handler, "127.0.0.1", 0, compression=None, ping_interval=None)
    port = server.sockets[0].getsockname()[1]
    return server, f"ws://127.0.0.1:{port}"


async def drive(url: str, calls: int, in_flight: int) -> float:
    """Calls per second with ``in_flight`` outstanding calls from one raw caller to one raw callee."""
    async with websockets.connect(url, compression=None) as callee, \
            websockets.connect(url, compression=None) as caller:
        await callee.recv()
        await caller.recv()
        await callee.send(dumps({"type": "registerfunction", "id": "bench::echo"}))
        await callee.send('{"type":"ping"}')
        await callee.recv()

        async def serve_calls() -> None:
            async for raw in callee:
                msg = loads(raw)
                if msg.get("type") == "invokefunction":
                    await callee.send(dumps({"type": "invocationresult", "invocation_id": msg["invocation_id"],
                                             "function_id": msg["function_id"], "result": msg["data"]}))

        waiting: dict[str, asyncio.Future[None]] = {}

        async def receive() -> None:
            async for raw in caller:
                msg = loads(raw)
                future = waiting.pop(msg.get("invocation_id", ""), None)
                if future is not None:
                    future.set_result(None)

        tasks = [asyncio.create_task(serve_calls()), asyncio.create_task(receive())]
        loop = asyncio.get_running_loop()
        remaining = calls

        async def one_lane() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                invocation_id = str(uuid.uuid4())
                future = waiting[invocation_id] = loop.create_future()
                await caller.send(dumps({"type": "invokefunction", "invocation_id": invocation_id,
                                         "function_id": "bench::echo", "data": {"n": remaining}}))
                await future

        started = time.perf_counter()
        await asyncio.gather(*(one_lane() for _ in range(in_flight)))
        elapsed = time.perf_counter() - started
        for task in tasks:
            task.cancel()
        return calls / elapsed


async def main(calls: int) -> None:
    relay, relay_url = await raw_relay()
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as engine:
        print(f"{'mode':<22}{'raw relay/s':>14}{'engine/s':>12}{'ratio':>8}")
        for label, in_flight, n in (("sequential", 1, max(calls // 10, 200)), ("64 in flight", 64, calls)):
            await drive(relay_url, min(n, 200), in_flight)  # warm-up
            base = await drive(relay_url, n, in_flight)
            ours = await drive(engine.url, n, in_flight)
            print(f"{label:<22}{base:>14.0f}{ours:>12.0f}{ours / base:>8.2f}")
    relay.close()
    await relay.wait_closed()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10000)
    asyncio.run(main(parser.parse_args().calls))
