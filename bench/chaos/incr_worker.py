"""One of the processes racing increments on one item (increments scenario).

Reads one JSON command per line on stdin: ``{"mode": "direct"|"engine", "url": ..., "stream": ..., "n": ...,
"concurrency": ...}``; connects, prints ``ready``, waits for a ``go`` line, runs ``n`` increments with
``concurrency`` tasks and prints ``{"done", "errors", "samples", "seconds"}``. An empty line or EOF ends it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from iii import register_worker
from iii.stream import StreamUpdateInput, UpdateIncrement
from iii_streams import open_stream

ITEM = {"group_id": "g", "item_id": "counter"}


async def one_run(cmd: dict[str, Any], readline: Callable[[], Awaitable[str]]) -> dict[str, Any]:
    """Connect as the command says, wait for ``go``, increment, report."""
    closers: list[Callable[[], Awaitable[None]]] = []
    if cmd["mode"] == "direct":
        store = open_stream(cmd["url"])
        closers.append(store.aclose)
        update = StreamUpdateInput(stream_name=cmd["stream"], ops=[UpdateIncrement(path="n", by=1)], **ITEM)

        async def increment() -> None:
            await store.update(update)
    else:
        client = await asyncio.to_thread(register_worker, cmd["url"])
        closers.append(client.shutdown_async)
        request = {"function_id": "stream::update", "timeout_ms": 30_000,
                   "payload": {"stream_name": cmd["stream"], **ITEM,
                               "ops": [{"type": "increment", "path": "n", "by": 1}]}}

        async def increment() -> None:
            await client.trigger_async(request)
    remaining = int(cmd["n"])
    done = 0
    errors = 0
    samples: list[str] = []

    async def loop() -> None:
        nonlocal remaining, done, errors
        while remaining > 0:
            remaining -= 1
            try:
                await increment()
                done += 1
            except Exception as exc:  # counted and sampled: every error is a finding
                errors += 1
                if len(samples) < 3:
                    samples.append(f"{type(exc).__name__}: {exc}"[:200])

    print("ready", flush=True)
    cmd["_ready"] = True
    if (await readline()).strip() != "go":
        return {"done": 0, "errors": 0, "samples": ["no go"], "seconds": 0.0}
    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(int(cmd["concurrency"]))))
    seconds = time.perf_counter() - started
    for close in closers:
        await close()
    return {"done": done, "errors": errors, "samples": samples, "seconds": seconds}


def preload() -> None:
    """Import every store's driver now, while the parent is still setting up, so the first race does not pay it
    (SQLAlchemy alone takes about a second of CPU per process)."""
    import importlib

    for name in ("iii_streams.redis", "iii_streams.sql", "aiosqlite", "asyncpg"):
        try:
            importlib.import_module(name)
        except ImportError:  # that store's extra is missing: its race will report the error itself
            pass


async def main() -> int:
    """Serve commands until an empty line or EOF."""
    loop = asyncio.get_running_loop()
    preload()

    async def readline() -> str:
        return await loop.run_in_executor(None, sys.stdin.readline)

    while line := (await readline()).strip():
        if line == "go":  # left over from a run whose set-up failed
            continue
        cmd: dict[str, Any] = {}
        try:
            cmd = json.loads(line)
            result = await one_run(cmd, readline)
        except Exception as exc:  # reported to the parent, which counts it as a failed run
            result = {"done": 0, "errors": 1, "samples": [f"{type(exc).__name__}: {exc}"[:300]], "seconds": 0.0}
            if not cmd.get("_ready"):
                print("ready", flush=True)
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
