"""Engine scale: many workers and functions, many idle channels, many stream-socket subscribers.

Each scenario runs against a fresh engine in a child process (so its resident memory is its own, read from
``/proc``), driven by raw WebSocket clients from this process:

- workers: N connected workers registering 10 functions and one trigger each (at N/10 and at N, to show how it scales):
  connect time, registration time (first frame sent → every worker's ping answered after its registrations),
  ``engine::functions::list`` latency (p50/p99 of sequential calls), engine RSS, and the time for the function
  list to shrink back once every worker is gone;
- channels: C channels created through ``engine::channels::create`` with their reader end attached and idle
  (engine RSS per channel);
- subscribers: S stream-socket clients joined to one group, then one change at a time: latency from the
  ``stream::set`` call to each subscriber's frame (p50/p99/max over all receptions; the clients share this
  process, so their own reading is in the figure).

Usage: .venv/bin/python bench/engine_scale.py [--workers 1000] [--channels 10000] [--subscribers 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a plain script: use the checkout

FUNCTIONS_PER_WORKER = 10
_CONNECT_BATCH = 100  # connections opened at once (the listen backlog and two cores set the pace anyway)


async def serve() -> None:
    """The engine under test: the worker module and the stream module (in-memory store), on free ports."""
    from iii_engine import Engine, EngineConfig, ModuleSpec

    stream = ModuleSpec("modules::stream::StreamModule", {"host": "127.0.0.1", "port": 0})
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[stream])) as engine:
        module: Any = engine.module("stream")
        print(engine.url, module.url, flush=True)
        await asyncio.Event().wait()


class Engine:
    """A child process running :func:`serve`."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if len(line) != 2:
            self.proc.kill()
            raise RuntimeError(f"engine did not start (printed {line!r})")
        self.url, self.stream_url = line

    def rss_mib(self) -> float:
        """Resident memory of the engine process."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Client:
    """A raw control-socket client that can call functions."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, url: str) -> Client:
        ws = await websockets.connect(url, compression=None, max_size=None, open_timeout=120)
        await ws.recv()  # workerregistered
        return cls(ws)

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                msg = json.loads(raw)
                future = self.waiting.pop(msg.get("invocation_id") or msg.get("type", ""), None)
                if future is not None and not future.done():
                    future.set_result(msg)

    async def call(self, function_id: str, data: Any) -> Any:
        invocation_id = str(uuid.uuid4())
        future = self.waiting[invocation_id] = asyncio.get_running_loop().create_future()
        await self.ws.send(json.dumps({"type": "invokefunction", "invocation_id": invocation_id,
                                       "function_id": function_id, "data": data}))
        msg = await asyncio.wait_for(future, 120)
        if msg.get("error"):
            raise RuntimeError(f"{function_id}: {msg['error']}")
        return msg.get("result")

    async def count_functions(self) -> int:
        """How many functions ``engine::functions::list`` lists."""
        return len((await self.call("engine::functions::list", {}))["functions"])

    async def ping(self) -> None:
        future = self.waiting["pong"] = asyncio.get_running_loop().create_future()
        await self.ws.send('{"type":"ping"}')
        await asyncio.wait_for(future, 120)

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()


async def connect_many(url: str, count: int) -> list[Client]:
    clients: list[Client] = []
    for start in range(0, count, _CONNECT_BATCH):
        clients += await asyncio.gather(*(Client.connect(url) for _ in range(min(_CONNECT_BATCH, count - start))))
    return clients


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def workers_scenario(count: int) -> dict[str, float]:
    engine = Engine()
    try:
        caller = await Client.connect(engine.url)
        builtins = await caller.count_functions()
        # the caller owns a trigger type every worker puts one trigger on: connects and disconnects then also
        # exercise the trigger tables (handed to the type's owner, taken back when the worker goes)
        await caller.ws.send(json.dumps({"type": "registertriggertype", "id": "bench::hook", "description": "b"}))
        rss_before = engine.rss_mib()
        started = time.perf_counter()
        workers = await connect_many(engine.url, count)
        connected = time.perf_counter() - started

        started = time.perf_counter()
        for index, worker in enumerate(workers):
            for n in range(FUNCTIONS_PER_WORKER):
                await worker.ws.send(json.dumps({"type": "registerfunction", "id": f"svc{index}::fn{n}",
                                                 "description": "scale bench", "metadata": {"n": n}}))
            await worker.ws.send(json.dumps({"type": "registertrigger", "id": f"hook{index}",
                                             "trigger_type": "bench::hook", "function_id": f"svc{index}::fn0",
                                             "config": {}}))
        await asyncio.gather(*(worker.ping() for worker in workers))
        registered = time.perf_counter() - started

        latencies = []
        for _ in range(20):
            started = time.perf_counter()
            functions = await caller.count_functions()
            latencies.append(time.perf_counter() - started)
        if functions < count * FUNCTIONS_PER_WORKER:
            raise RuntimeError(f"only {functions} functions listed")
        rss_after = engine.rss_mib()

        started = time.perf_counter()
        await asyncio.gather(*(worker.close() for worker in workers))
        while True:  # a bench, not a test: poll until the engine has cleaned up every worker
            if await caller.count_functions() <= builtins:
                break
            await asyncio.sleep(0.05)
        gone = time.perf_counter() - started
        await caller.close()
        return {"workers": count, "functions": functions, "connect_s": connected, "register_s": registered,
                "list_p50_ms": statistics.median(latencies) * 1e3, "list_p99_ms": pct(latencies, 0.99) * 1e3,
                "rss_mib": rss_after - rss_before, "cleanup_s": gone}
    finally:
        engine.stop()


async def channels_scenario(count: int) -> dict[str, float]:
    engine = Engine()
    readers: list[ClientConnection] = []
    try:
        caller = await Client.connect(engine.url)
        rss_before = engine.rss_mib()
        started = time.perf_counter()
        refs: list[Any] = []
        for start in range(0, count, 64):
            refs += await asyncio.gather(*(caller.call("engine::channels::create", {})
                                           for _ in range(min(64, count - start))))
        created = time.perf_counter() - started
        rss_created = engine.rss_mib()
        started = time.perf_counter()
        for start in range(0, count, _CONNECT_BATCH):
            batch = refs[start:start + _CONNECT_BATCH]
            readers += await asyncio.gather(*(websockets.connect(
                f"{engine.url}/ws/channels/{ref['reader']['channel_id']}?key={ref['reader']['access_key']}"
                "&dir=read", compression=None, open_timeout=120) for ref in batch))
        attached = time.perf_counter() - started
        await caller.ping()  # the engine is idle again
        rss_open = engine.rss_mib()
        await caller.close()
        return {"channels": count, "create_s": created, "attach_s": attached,
                "created_kib_each": (rss_created - rss_before) * 1024 / count,
                "open_kib_each": (rss_open - rss_before) * 1024 / count, "rss_mib": rss_open - rss_before}
    finally:
        for start in range(0, len(readers), 500):
            await asyncio.gather(*(ws.close() for ws in readers[start:start + 500]), return_exceptions=True)
        engine.stop()


async def subscribers_scenario(count: int, changes: int) -> dict[str, float]:
    engine = Engine()
    sockets: list[ClientConnection] = []
    try:
        caller = await Client.connect(engine.url)
        rss_before = engine.rss_mib()
        for start in range(0, count, _CONNECT_BATCH):
            sockets += await asyncio.gather(*(websockets.connect(engine.stream_url, compression=None,
                                                                 open_timeout=120)
                                              for _ in range(min(_CONNECT_BATCH, count - start))))
        join = {"type": "join", "data": {"subscriptionId": "s", "streamName": "bench", "groupId": "g"}}
        for ws in sockets:
            await ws.send(json.dumps(join))
        for ws in sockets:
            await ws.recv()  # the sync frame
        rss_joined = engine.rss_mib()
        latencies: list[float] = []
        for change in range(changes):
            started = time.perf_counter()
            arrived = asyncio.gather(*(ws.recv() for ws in sockets))
            await caller.call("stream::set", {"stream_name": "bench", "group_id": "g", "item_id": "i",
                                              "data": {"change": change}})
            frames = await asyncio.wait_for(arrived, 120)
            # each recv() finished when its frame arrived; the gather's own completion is the last of them
            latencies.append(time.perf_counter() - started)
            if any(json.loads(frame)["event"]["data"] != {"change": change} for frame in frames):
                raise RuntimeError("a subscriber got the wrong change")
        per_socket = await per_subscriber_latency(caller, sockets, changes)
        await caller.close()
        return {"subscribers": count, "all_received_p50_ms": statistics.median(latencies) * 1e3,
                "each_p50_ms": statistics.median(per_socket) * 1e3, "each_p99_ms": pct(per_socket, 0.99) * 1e3,
                "each_max_ms": max(per_socket) * 1e3, "rss_mib": rss_joined - rss_before}
    finally:
        for start in range(0, len(sockets), 500):
            await asyncio.gather(*(ws.close() for ws in sockets[start:start + 500]), return_exceptions=True)
        engine.stop()


async def per_subscriber_latency(caller: Client, sockets: list[ClientConnection], changes: int) -> list[float]:
    """Latency of every single reception: from the ``stream::set`` call to that subscriber's frame."""
    latencies: list[float] = []

    async def stamp(ws: ClientConnection, started: float) -> None:
        await ws.recv()
        latencies.append(time.perf_counter() - started)

    for change in range(changes):
        started = time.perf_counter()
        tasks = [asyncio.create_task(stamp(ws, started)) for ws in sockets]
        await caller.call("stream::set", {"stream_name": "bench", "group_id": "g", "item_id": "i",
                                          "data": {"again": change}})
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
    return latencies


def show(title: str, row: dict[str, float]) -> None:
    cells = ", ".join(f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}"
                      for key, value in row.items())
    print(f"{title:<12}{cells}", flush=True)


async def main(workers: int, channels: int, subscribers: int, changes: int) -> None:
    print(f"engine scale on {os.cpu_count()} CPUs (RSS = engine process growth, MiB)")
    small = await workers_scenario(max(workers // 10, 1))
    show("workers", small)
    large = await workers_scenario(workers)
    show("workers", large)
    growth = {key: large[key] / max(small[key], 1e-3) for key in ("register_s", "list_p50_ms", "rss_mib",
                                                                  "cleanup_s")}
    print(f"{'':<12}{large['workers'] / small['workers']:.0f}x the workers: "
          + ", ".join(f"{key} x{value:.1f}" for key, value in growth.items()))
    show("channels", await channels_scenario(channels))
    show("subscribers", await subscribers_scenario(subscribers, changes))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=10000)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=5)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    asyncio.run(serve() if args.serve else main(args.workers, args.channels, args.subscribers, args.changes))
