"""A raw JSON-frame worker in its own process, the floor the SDK rows of ``sdk_calls.py`` are set against.

Usage: python raw_worker.py URL serve -> registers raw::echo, prints "ready", serves until stdin closes
       python raw_worker.py URL call N CONCURRENCY [sync] -> prints {"calls": N, "seconds": ..., "cpu": ...}

``sync``: each call is made by the main thread, blocked until a loop thread that owns the socket has the answer
(``run_coroutine_threadsafe(...).result()``), the shape every sync SDK call has; the thread hand-offs are the
only thing it adds to the plain async caller.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
import uuid
from typing import Any

import websockets

PAYLOAD = {"n": 1, "s": "hello"}


async def register_echo(ws: Any) -> None:
    """Register ``raw::echo`` on ``ws`` (the ping makes the engine read both frames before the first call)."""
    await ws.send(json.dumps({"type": "registerfunction", "id": "raw::echo"}))
    await ws.send(json.dumps({"type": "ping"}))


async def answer(ws: Any) -> None:
    """Answer every invocation arriving on ``ws`` with its own data, until the socket closes."""
    async for raw in ws:
        msg = json.loads(raw)
        if msg.get("type") == "invokefunction":
            await ws.send(json.dumps({"type": "invocationresult", "invocation_id": msg["invocation_id"],
                                      "function_id": msg["function_id"], "result": msg["data"]}))


async def serve(url: str) -> None:
    async with websockets.connect(url, compression=None) as ws:
        await register_echo(ws)
        print("ready", flush=True)
        stdin_closed = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        server = asyncio.ensure_future(answer(ws))
        await stdin_closed
        server.cancel()


class Caller:
    """One socket, answers matched to their calls by invocation id."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.waiting: dict[str, asyncio.Future[Any]] = {}
        self.receiver: asyncio.Future[None] | None = None

    async def receive(self) -> None:
        async for raw in self.ws:
            msg = json.loads(raw)
            fut = self.waiting.pop(msg.get("invocation_id", ""), None)
            if fut is not None:
                fut.set_result(msg)

    async def call(self) -> Any:
        iid = str(uuid.uuid4())
        fut = asyncio.get_running_loop().create_future()
        self.waiting[iid] = fut
        await self.ws.send(json.dumps({"type": "invokefunction", "invocation_id": iid, "function_id": "raw::echo",
                                       "data": PAYLOAD}))
        return await fut


def call(url: str, n: int, concurrency: int, sync: bool) -> dict[str, float]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def connect() -> Caller:
        caller = Caller(await websockets.connect(url, compression=None))
        caller.receiver = asyncio.ensure_future(caller.receive())
        return caller

    caller = asyncio.run_coroutine_threadsafe(connect(), loop).result()

    async def many(count: int) -> None:
        sem = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with sem:
                await caller.call()

        await asyncio.gather(*(one() for _ in range(count)))

    def run(count: int) -> None:
        if sync:
            for _ in range(count):
                asyncio.run_coroutine_threadsafe(caller.call(), loop).result()
        else:
            asyncio.run_coroutine_threadsafe(many(count), loop).result()

    run(50)  # warm up
    start, cpu = time.perf_counter(), time.process_time()
    run(n)
    return {"calls": n, "seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu}


def main() -> None:
    url, role = sys.argv[1], sys.argv[2]
    if role == "serve":
        asyncio.run(serve(url))
    else:
        sync = len(sys.argv) > 5 and sys.argv[5] == "sync"
        print(json.dumps(call(url, int(sys.argv[3]), int(sys.argv[4]), sync)), flush=True)


if __name__ == "__main__":
    main()
