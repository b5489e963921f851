"""Engine scale: many workers and functions, many idle channels, many stream-socket subscribers.

Each scenario runs against a fresh engine in a child process (so its resident memory is its own, read from
``/proc``), driven by raw WebSocket clients from this process:

- workers: N connected workers registering 10 functions and one trigger each (at N/10 and at N, to show how it scales):
  connect time, registration time (first frame sent → every worker's ping answered after its registrations),
  ``engine::functions::list`` latency (p50/p99 of sequential calls, decoded by the SDK's codec) and the engine's
  CPU per call (read from ``/proc``: steadier than latency on a shared machine), the same for
  ``engine::triggers::list`` and ``engine::workers::list``, engine RSS, and the time for the function list to
  shrink back once every worker is gone;
- channels: C channels created through ``engine::channels::create`` with their reader end attached and idle
  (engine RSS per channel);
- subscribers: S stream-socket clients joined to one group (at S/10 and at S), then one change at a time: latency
  from the ``stream::set`` call to each subscriber's frame (p50/p99/max over all receptions; the clients share
  this process, so their own reading is in the figure) and the engine's CPU per delivered frame; then the same
  S clients joined to S *other* groups plus one watcher of the changed group: the engine's CPU per change
  should not grow with clients that do not want it.

Rows at two sizes end with the growth of each figure for 10x the size (x10 = linear). With ``--rounds R`` each
figure is the median of R runs (min-max after it). With ``--before DIR`` (a checkout of an earlier commit, e.g.
``git archive HEAD~1 | tar -x -C DIR``) that checkout's engine runs the same scenarios in interleaved rounds and
every row is followed by ``now / before`` of its figures.

Usage: .venv/bin/python bench/engine_scale.py [--workers 1000] [--channels 10000] [--subscribers 1000]
       [--only workers,channels,subscribers] [--rounds 1] [--before DIR]
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parents[1]
# a plain script: use the checkout (the engine child of ``--before DIR`` imports everything from DIR)
sys.path.insert(0, os.environ.get("III_BENCH_ROOT", str(ROOT)))

from iii.wire import loads  # noqa: E402  (the SDK's decoder: what a real caller pays for a big listing)

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
    """A child process running :func:`serve` with the engine of the checkout at ``root``."""

    def __init__(self, root: Path) -> None:
        env = {**os.environ, "III_BENCH_ROOT": str(root)}
        self.proc = subprocess.Popen([sys.executable, "-P", __file__, "--serve"], stdout=subprocess.PIPE, text=True,
                                     env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if len(line) != 2:
            self.proc.kill()
            raise RuntimeError(f"engine did not start (printed {line!r})")
        self.url, self.stream_url = line

    def cpu_s(self) -> float:
        """CPU time the engine's threads have run, to the nanosecond (``/proc/*/stat`` counts 10 ms ticks)."""
        total = 0
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                total += int((task / "schedstat").read_text().split()[0])
        return total / 1e9

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
                msg = loads(raw)
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

    async def timed_calls(self, engine: Engine, function_id: str, key: str, calls: int = 20) -> tuple[
            list[float], float, int]:
        """Latencies of ``calls`` sequential calls, the engine's CPU seconds per call, and the listed count."""
        latencies = []
        cpu = engine.cpu_s()
        listed = 0
        for _ in range(calls):
            started = time.perf_counter()
            listed = len((await self.call(function_id, {}))[key])
            latencies.append(time.perf_counter() - started)
        return latencies, (engine.cpu_s() - cpu) / calls, listed

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


async def workers_scenario(root: Path, count: int) -> dict[str, float]:
    engine = Engine(root)
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

        latencies, list_cpu, functions = await caller.timed_calls(engine, "engine::functions::list", "functions")
        if functions < count * FUNCTIONS_PER_WORKER:
            raise RuntimeError(f"only {functions} functions listed")
        triggers_latencies, triggers_cpu, _ = await caller.timed_calls(engine, "engine::triggers::list", "triggers")
        workers_latencies, workers_cpu, _ = await caller.timed_calls(engine, "engine::workers::list", "workers")
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
                "list_cpu_ms": list_cpu * 1e3,
                "triggers_p50_ms": statistics.median(triggers_latencies) * 1e3, "triggers_cpu_ms": triggers_cpu * 1e3,
                "workers_p50_ms": statistics.median(workers_latencies) * 1e3, "workers_cpu_ms": workers_cpu * 1e3,
                "rss_mib": rss_after - rss_before, "cleanup_s": gone}
    finally:
        engine.stop()


async def channels_scenario(root: Path, count: int) -> dict[str, float]:
    engine = Engine(root)
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


async def subscribers_scenario(root: Path, count: int, changes: int) -> dict[str, float]:
    engine = Engine(root)
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
        cpu = engine.cpu_s()
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
        delivery_cpu = (engine.cpu_s() - cpu) / (2 * changes * count)
        bystander_cpu = await bystander_cost(engine, caller, sockets, changes * 10)
        await caller.close()
        return {"subscribers": count, "all_received_p50_ms": statistics.median(latencies) * 1e3,
                "each_p50_ms": statistics.median(per_socket) * 1e3, "each_p99_ms": pct(per_socket, 0.99) * 1e3,
                "each_max_ms": max(per_socket) * 1e3, "cpu_us_per_frame": delivery_cpu * 1e6,
                "others_cpu_us_per_change": bystander_cpu * 1e6, "rss_mib": rss_joined - rss_before}
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


async def bystander_cost(engine: Engine, caller: Client, sockets: list[ClientConnection], changes: int) -> float:
    """Engine CPU seconds per change of a group one socket watches while every other socket watches another
    group (the cost of the clients that do not want the event)."""
    for index, ws in enumerate(sockets[1:], 1):
        await ws.send(json.dumps({"type": "leave", "data": {"subscriptionId": "s", "streamName": "bench",
                                                            "groupId": "g"}}))
        await ws.send(json.dumps({"type": "join", "data": {"subscriptionId": "o", "streamName": "bench",
                                                           "groupId": f"other{index}"}}))
    for ws in sockets[1:]:
        await ws.recv()  # the sync frame of the new group: the leave before it is done too
    watcher = sockets[0]
    cpu = engine.cpu_s()
    for change in range(changes):
        await caller.call("stream::set", {"stream_name": "bench", "group_id": "g", "item_id": "i",
                                          "data": {"alone": change}})
        await asyncio.wait_for(watcher.recv(), 120)
    return (engine.cpu_s() - cpu) / changes


Row = dict[str, float]
Scenario = Callable[[Path, int], Awaitable[Row]]


def show(title: str, rows: list[Row]) -> Row:
    """Print the median of each figure (min-max when there are several rows); returns the medians."""
    medians = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    cells = []
    for key, value in medians.items():
        cell = f"{key}={value:.3g}"
        if len(rows) > 1 and isinstance(rows[0][key], float):
            cell += f" ({min(row[key] for row in rows):.3g}-{max(row[key] for row in rows):.3g})"
        cells.append(cell)
    print(f"{title:<19} " + ", ".join(cells), flush=True)
    return medians


def show_ratio(now: Row, before: Row, keys: tuple[str, ...]) -> None:
    """``now / before`` of each figure (below 1: the change made it smaller)."""
    print(f"{'':<20}now / before: " + ", ".join(f"{key} {now[key] / max(before[key], 1e-9):.2f}" for key in keys),
          flush=True)


def show_growth(small: Row, large: Row, size_key: str, keys: tuple[str, ...], label: str = "") -> None:
    """How each figure grew from the small run to the large one (x10 for 10x the size is linear)."""
    growth = {key: large[key] / max(small[key], 1e-3) for key in keys}
    print(f"{'':<20}{label}{large[size_key] / small[size_key]:.0f}x the {size_key}: "
          + ", ".join(f"{key} x{value:.1f}" for key, value in growth.items()), flush=True)


async def measure(title: str, scenario: Scenario, size: int, roots: dict[str, Path], rounds: int,
                  keys: tuple[str, ...]) -> dict[str, Row]:
    """Run ``scenario`` ``rounds`` times per checkout (the order alternates each round); print and return the
    medians of each checkout."""
    rows: dict[str, list[Row]] = {label: [] for label in roots}
    for round_no in range(rounds):
        for label in (list(roots) if round_no % 2 == 0 else list(reversed(roots))):
            rows[label].append(await scenario(roots[label], size))
    medians = {label: show(f"{title}{'' if len(roots) == 1 else ' ' + label}", rows[label]) for label in roots}
    if "before" in medians:
        show_ratio(medians["now"], medians["before"], keys)
    return medians


async def main(args: argparse.Namespace) -> None:
    print(f"engine scale on {os.cpu_count()} CPUs (RSS = engine process growth, MiB)")
    roots = {"now": ROOT} if args.before is None else {"now": ROOT, "before": args.before.resolve()}
    only = set(args.only.split(","))

    async def twice(title: str, scenario: Scenario, size: int, size_key: str, keys: tuple[str, ...]) -> None:
        small = await measure(title, scenario, max(size // 10, 2), roots, args.rounds, keys)
        large = await measure(title, scenario, size, roots, args.rounds, keys)
        for label in roots:
            show_growth(small[label], large[label], size_key, keys, "" if len(roots) == 1 else f"{label}: ")

    if "workers" in only:
        await twice("workers", workers_scenario, args.workers, "workers",
                    ("register_s", "list_p50_ms", "list_cpu_ms", "triggers_cpu_ms", "workers_cpu_ms", "rss_mib",
                     "cleanup_s"))
    if "channels" in only:
        await measure("channels", channels_scenario, args.channels, roots, args.rounds,
                      ("create_s", "attach_s", "open_kib_each"))
    if "subscribers" in only:
        async def subscribers(root: Path, count: int) -> Row:
            return await subscribers_scenario(root, count, args.changes)

        await twice("subscribers", subscribers, args.subscribers, "subscribers",
                    ("each_p50_ms", "each_p99_ms", "cpu_us_per_frame", "others_cpu_us_per_change"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=10000)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=5)
    parser.add_argument("--only", default="workers,channels,subscribers",
                        help="comma-separated scenarios to run (default: all)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each scenario (medians are printed)")
    parser.add_argument("--before", type=Path, help="also run the engine of this earlier checkout, interleaved")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    asyncio.run(serve() if args.serve else main(args))
