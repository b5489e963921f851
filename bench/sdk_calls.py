"""Invocation round trips per second through our engine: our SDK vs the reference SDK vs raw WebSockets.

Every number comes from the same run on the same engine. The raw baseline is two bare WebSocket clients
speaking the JSON frames (no SDK at all), so ``sdk / raw`` is the share of the ceiling each SDK reaches.

Usage: .venv/bin/python bench/sdk_calls.py [--calls N] [--ref-python .ref-venv/bin/python]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import websockets

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # a plain script: make the checkout importable without installing it

from iii_engine import Engine, EngineConfig  # noqa: E402


async def raw_baseline(url: str, n: int, concurrency: int) -> float:
    """Calls/s with hand-written frames: a raw callee answering, a raw caller with ``concurrency`` in flight."""
    async with websockets.connect(url, compression=None) as callee, websockets.connect(url, compression=None) as caller:
        await callee.send(json.dumps({"type": "registerfunction", "id": "raw::echo"}))
        await callee.send(json.dumps({"type": "ping"}))

        async def serve() -> None:
            async for raw in callee:
                msg = json.loads(raw)
                if msg.get("type") == "invokefunction":
                    await callee.send(json.dumps({"type": "invocationresult", "invocation_id": msg["invocation_id"],
                                                  "function_id": msg["function_id"], "result": msg["data"]}))

        server = asyncio.create_task(serve())
        waiting: dict[str, asyncio.Future[Any]] = {}

        async def receive() -> None:
            async for raw in caller:
                msg = json.loads(raw)
                fut = waiting.pop(msg.get("invocation_id", ""), None)
                if fut is not None:
                    fut.set_result(msg)

        receiver = asyncio.create_task(receive())
        sem = asyncio.Semaphore(concurrency)
        loop = asyncio.get_running_loop()

        async def one() -> None:
            async with sem:
                iid = str(uuid.uuid4())
                fut = loop.create_future()
                waiting[iid] = fut
                await caller.send(json.dumps({"type": "invokefunction", "invocation_id": iid,
                                              "function_id": "raw::echo", "data": {"n": 1, "s": "hello"}}))
                await fut

        await asyncio.gather(*(one() for _ in range(50)))
        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        elapsed = time.perf_counter() - start
        server.cancel()
        receiver.cancel()
        return n / elapsed


def sdk_rate(python: str, url: str, n: int, concurrency: int) -> float:
    env = dict(os.environ, OTEL_ENABLED="false")
    if python == sys.executable:
        env["PYTHONPATH"] = str(ROOT)
    else:
        env.pop("PYTHONPATH", None)
    server = subprocess.Popen([python, str(HERE / "sdk_worker.py"), url, "serve"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env, cwd="/tmp")
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        out = subprocess.run([python, str(HERE / "sdk_worker.py"), url, "call", str(n), str(concurrency)],
                             capture_output=True, text=True, env=env, cwd="/tmp", check=True, timeout=300)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        return float(result["calls"] / result["seconds"])
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(10)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--ref-python", default=str(ROOT / ".ref-venv" / "bin" / "python"))
    args = parser.parse_args()
    have_ref = os.path.exists(args.ref_python)  # noqa: ASYNC240 - once, before anything runs
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as engine:
        url = engine.url
        rows = []
        for concurrency in (1, 64):
            raw = await raw_baseline(url, args.calls, concurrency)
            ours = await asyncio.to_thread(sdk_rate, sys.executable, url, args.calls, concurrency)
            ref = None
            if have_ref:
                ref = await asyncio.to_thread(sdk_rate, args.ref_python, url, args.calls, concurrency)
            rows.append((concurrency, raw, ours, ref))
    print(f"{'in flight':>9} {'raw/s':>9} {'ours/s':>9} {'ref/s':>9} {'ours/raw':>9} {'ref/raw':>8} {'ours/ref':>9}")
    for concurrency, raw, ours, ref in rows:
        ref_s = f"{ref:9.0f}" if ref else f"{'n/a':>9}"
        rr = f"{ref / raw:8.2f}" if ref else f"{'n/a':>8}"
        orf = f"{ours / ref:9.2f}" if ref else f"{'n/a':>9}"
        print(f"{concurrency:>9} {raw:9.0f} {ours:9.0f} {ref_s} {ours / raw:9.2f} {rr} {orf}")


if __name__ == "__main__":
    asyncio.run(main())
