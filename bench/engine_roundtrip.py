"""Engine hot path: invocation round trips through our engine vs a bare Python relay, with server CPU per call.

The baseline is the leanest Python relay worth the name, written inline (one websockets server, the same JSON
codec, a dict of pending ids, no validation): caller -> relay -> callee -> relay -> caller, the two hops our
engine makes. The ``built-in 64`` rows call a function the server answers itself (an engine built-in echo; the
relay replies from its own loop): the worker-socket path of a built-in such as ``stream::update``. Each server
runs alone in a child process, so its CPU time per call is read from ``/proc`` (far less noisy than throughput
on a shared machine); the same raw clients drive both, in interleaved rounds (the order alternates each round).
Printed: medians with the min-max spread, and ``engine / relay`` of the medians.

With ``--before DIR`` (a checkout of an earlier commit, e.g. ``git archive HEAD~1 | tar -x -C DIR``) the engine
of that checkout runs as a third server in the same rounds, so a change is measured against its own baseline.

With ``--turns`` the engines also count their event loop's turns (``_run_once``) and callbacks (``Handle._run``)
and report them per call (read through the built-in ``bench::turns``; the relay is not counted).

Usage: .venv/bin/python bench/engine_roundtrip.py [--calls N] [--rounds R] [--before DIR] [--gc] [--turns]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import websockets
from websockets.asyncio.server import ServerConnection, serve

ROOT = Path(__file__).resolve().parents[1]
if "--root" not in sys.argv:
    sys.path.insert(0, str(ROOT))  # a plain script: use the checkout (a server child gets its root on PYTHONPATH)

from iii.wire import dumps, loads  # noqa: E402

_TICKS = os.sysconf("SC_CLK_TCK")
#: A function the server answers itself (an engine built-in echo; the relay replies from its own loop).
BUILTIN = "bench::builtin"
#: An engine built-in answering ``[loop turns, callbacks]`` so far (counted only with ``III_BENCH_TURNS=1``).
TURNS = "bench::turns"
_COUNTS = [0, 0]


def count_turns() -> None:
    """Count every turn of the event loop and every callback it runs, into ``_COUNTS`` (turns, callbacks)."""
    from asyncio import base_events, events

    loop_class: Any = base_events.BaseEventLoop  # _run_once: a private name the type stubs lack
    run_once, run = loop_class._run_once, events.Handle._run

    def counted_run_once(self: Any) -> None:
        _COUNTS[0] += 1
        run_once(self)

    def counted_run(self: Any) -> None:
        _COUNTS[1] += 1
        run(self)

    loop_class._run_once = counted_run_once
    events.Handle._run = counted_run  # type: ignore[method-assign]


async def serve_relay() -> None:
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
                if msg["function_id"] == BUILTIN:  # the relay answers itself: the baseline of an engine built-in
                    await ws.send(dumps({"type": "invocationresult", "invocation_id": msg["invocation_id"],
                                         "function_id": BUILTIN, "result": msg["data"]}))
                    continue
                waiting[msg["invocation_id"]] = ws
                await callee[-1].send(raw)
            elif kind == "invocationresult":
                await waiting.pop(msg["invocation_id"]).send(raw)
            elif kind == "ping":
                await ws.send('{"type":"pong"}')

    async with serve(handler, "127.0.0.1", 0, compression=None, ping_interval=None) as server:
        print(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Event().wait()


async def serve_engine(tuned_gc: bool = False) -> None:
    """Our engine with no modules but the worker module (``tuned_gc``: with the collector settings the
    ``iii-engine`` command applies once started, iii_engine.gc_policy)."""
    from iii_engine import Engine, EngineConfig
    from iii_engine.modules.base import BuiltinFunction
    from iii_engine.registry import FunctionEntry

    async def echo(data: Any, ctx: Any) -> Any:
        return data

    async def turns(data: Any, ctx: Any) -> Any:
        return list(_COUNTS)

    if os.environ.get("III_BENCH_TURNS") == "1":
        count_turns()
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as engine:
        engine.registry.add_function(FunctionEntry(BUILTIN, builtin=BuiltinFunction(BUILTIN, echo)))
        engine.registry.add_function(FunctionEntry(TURNS, builtin=BuiltinFunction(TURNS, turns)))
        if tuned_gc:
            from iii_engine.gc_policy import tune_gc
            tune_gc({})
        print(engine.url, flush=True)
        await asyncio.Event().wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


async def drive(url: str, calls: int, in_flight: int, function_id: str = "bench::echo") -> float:
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
                                         "function_id": function_id, "data": {"n": remaining}}))
                await future

        started = time.perf_counter()
        await asyncio.gather(*(one_lane() for _ in range(in_flight)))
        elapsed = time.perf_counter() - started
        for task in tasks:
            task.cancel()
        return calls / elapsed


def start_server(kind: str, root: Path = ROOT, turns: bool = False) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": str(root), "III_BENCH_TURNS": "1" if turns else "0"}
    proc = subprocess.Popen([sys.executable, "-P", __file__, "--serve", kind, "--root", str(root)],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("ws://"):
        proc.kill()
        raise RuntimeError(f"{kind} server did not start (printed {url!r})")
    return proc, url


def summary(values: list[float], fmt: str) -> str:
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


async def read_turns(url: str) -> tuple[int, int]:
    """(loop turns, callbacks) an engine started with ``turns`` counted so far."""
    invocation_id = str(uuid.uuid4())
    async with websockets.connect(url, compression=None) as ws:
        await ws.recv()
        await ws.send(dumps({"type": "invokefunction", "invocation_id": invocation_id, "function_id": TURNS,
                             "data": {}}))
        while True:
            msg = loads(await ws.recv())
            if msg.get("invocation_id") == invocation_id:
                turns, callbacks = msg["result"]
                return int(turns), int(callbacks)


async def turns_per_call(calls: int, before: Path | None) -> None:
    """Print each engine's loop turns and callbacks per call in every mode (servers of their own: counting costs
    CPU). The reading itself (a connection and a built-in call) is measured and taken off."""
    roots = {"engine": ROOT, **({"before": before} if before is not None else {})}
    servers = {kind: start_server("engine", root, turns=True) for kind, root in roots.items()}
    modes = (("sequential", 1, calls, "bench::echo"), ("64 in flight", 64, calls, "bench::echo"),
             ("built-in 64", 64, calls, BUILTIN))
    print(f"{'mode':<14}{'server':<10}{'turns/call':>12}{'callbacks/call':>16}")
    try:
        for kind, (_, url) in servers.items():
            await drive(url, 300, 8)
            first = await read_turns(url)
            second = await read_turns(url)
            reading = (second[0] - first[0], second[1] - first[1])
            for label, in_flight, n, function_id in modes:
                before_run = await read_turns(url)
                await drive(url, n, in_flight, function_id)
                after_run = await read_turns(url)
                turns = (after_run[0] - before_run[0] - reading[0]) / n
                callbacks = (after_run[1] - before_run[1] - reading[1]) / n
                print(f"{label:<14}{kind:<10}{turns:>12.2f}{callbacks:>16.2f}")
    finally:
        for proc, _ in servers.values():
            proc.kill()
            proc.wait()


async def main(calls: int, rounds: int, before: Path | None, gc_compare: bool = False) -> None:
    servers = {kind: start_server(kind) for kind in ("relay", "engine", *(("engine-gc",) if gc_compare else ()))}
    if before is not None:
        servers["before"] = start_server("engine", before)
    modes = (("sequential", 1, max(calls // 5, 200), "bench::echo"), ("64 in flight", 64, calls, "bench::echo"),
             ("built-in 64", 64, calls, BUILTIN))
    rate: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    try:
        for _, url in servers.values():  # warm-up
            await drive(url, 300, 8)
        for round_no in range(rounds):
            order = list(servers) if round_no % 2 == 0 else list(reversed(servers))
            for label, in_flight, n, function_id in modes:
                for kind in order:
                    proc, url = servers[kind]
                    spent = cpu_seconds(proc.pid)
                    rate.setdefault((label, kind), []).append(await drive(url, n, in_flight, function_id))
                    cpu.setdefault((label, kind), []).append((cpu_seconds(proc.pid) - spent) / n * 1e6)
    finally:
        for proc, _ in servers.values():
            proc.kill()
            proc.wait()
    print(f"{rounds} interleaved rounds; medians (min-max); CPU = server process CPU per call")
    print(f"{'mode':<14}{'server':<10}{'calls/s':>22}{'vs relay':>10}{'CPU µs/call':>20}{'CPU vs relay':>14}")
    for label, _, _, _ in modes:
        base, base_cpu = rate[(label, "relay")], cpu[(label, "relay")]
        for kind in servers:
            ours, ours_cpu = rate[(label, kind)], cpu[(label, kind)]
            print(f"{label:<14}{kind:<10}{summary(ours, '.0f'):>22}"
                  f"{statistics.median(ours) / statistics.median(base):>10.2f}{summary(ours_cpu, '.1f'):>20}"
                  f"{statistics.median(ours_cpu) / statistics.median(base_cpu):>14.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", type=Path, help="also run the engine of this earlier checkout")
    parser.add_argument("--gc", action="store_true",
                        help="also run our engine with the iii-engine command's collector settings (engine-gc)")
    parser.add_argument("--turns", action="store_true",
                        help="only count the engines' loop turns and callbacks per call (no timing)")
    parser.add_argument("--serve", choices=("relay", "engine", "engine-gc"), help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args()
    server: Any = {"relay": serve_relay, "engine": serve_engine,
                   "engine-gc": lambda: serve_engine(tuned_gc=True)}.get(args.serve or "")
    if server is not None:
        asyncio.run(server())
    elif args.turns:
        asyncio.run(turns_per_call(args.calls, args.before))
    else:
        asyncio.run(main(args.calls, args.rounds, args.before, args.gc))
