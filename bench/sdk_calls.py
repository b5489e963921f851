"""Invocation round trips per second through our engine: our SDK vs the reference SDK vs raw WebSockets.

Every number comes from the same run on the same engine. The raw baseline is two bare WebSocket clients
speaking the JSON frames (no SDK at all), so ``sdk / raw`` is the share of the ceiling each SDK reaches.
Rounds are interleaved (raw, ours with telemetry on, ours with it off, reference) and each ratio is taken
against the raw rate of its own round; the table shows the median and the spread (min-max) over rounds, plus
the CPU each SDK process spent per call (caller and callee, all threads), which wanders less than rates do, and the
engine's: this process's CPU while the pair ran (it runs only the engine then; the pair's start, connect and
registration are counted in it too, a few µs per call at the default 3,000 calls).

"telemetry on" is our default (``OTEL_ENABLED`` unset: spans, metrics and logs exported on the worker socket);
the reference SDK runs with ``OTEL_ENABLED=false`` (its exporter would open a second socket).

A "floor" row runs raw clients shaped like an SDK pair (``raw_worker.py``: caller and callee each in its own process,
and at 1 in flight a sync caller blocked on a loop thread per call); ``sdk/floor`` is each variant against it.

With ``--caller-thread`` the sequential rows also run with the caller's calls made from a thread other than its main
one (as a web server's request threads make them): only there does a sync call start from the calling thread while
the SDK's loop is idle (the main thread, which runs signal handlers, always hands the call to the loop).

With ``--handler-cpu`` it measures only the callee's own CPU per handled call, in process, without engine or
sockets: a ``HandlerRunner`` running an async echo handler through the client's ``TraceScope`` (span started, status
set, span ended and queued for export) ``--calls`` times, thread CPU per call, the best of 5 repetitions per round,
rounds interleaved between this checkout and ``--compare``. It wanders far less than rates do on a shared machine.

With ``--caller-cpu`` it measures only the caller's CPU per ``trigger_async`` call at 64 in flight: our SDK's caller
process (all threads, telemetry on and off) against a raw callee answering in this process, rounds interleaved
between this checkout and ``--compare``.

Usage: .venv/bin/python bench/sdk_calls.py [--calls N] [--rounds R] [--only 1|64] [--compare CHECKOUT] [--caller-thread]
       [--ref-python .ref-venv/bin/python] [--handler-cpu] [--caller-cpu]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import websockets

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # a plain script: make the checkout importable without installing it

from bench.raw_worker import Caller, answer, register_echo  # noqa: E402
from iii_engine import Engine, EngineConfig  # noqa: E402

_TICKS = os.sysconf("SC_CLK_TCK")


async def raw_baseline(url: str, n: int, concurrency: int) -> float:
    """Calls/s with hand-written frames: a raw callee answering, a raw caller with ``concurrency`` in flight."""
    async with websockets.connect(url, compression=None) as callee, websockets.connect(url, compression=None) as ws:
        await register_echo(callee)
        server = asyncio.create_task(answer(callee))
        caller = Caller(ws)
        receiver = asyncio.create_task(caller.receive())
        sem = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with sem:
                await caller.call()

        await asyncio.gather(*(one() for _ in range(50)))
        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        elapsed = time.perf_counter() - start
        server.cancel()
        receiver.cancel()
        return n / elapsed


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` (all threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def sdk_rate(python: str, url: str, n: int, concurrency: int, telemetry: bool,
             root: Path | None, script: str = "sdk_worker.py", mode: str = "") -> tuple[float, float, float]:
    """``(calls/s, caller CPU µs per call, callee CPU µs per call)`` of one SDK caller/callee pair; ``root``: the
    checkout whose ``iii`` to import (``None``: whatever ``python`` has installed); ``script``/``mode``: the worker
    script (``raw_worker.py`` for the raw floor, ``mode`` ``sync`` for its thread-hop caller)."""
    env = dict(os.environ)
    env.pop("OTEL_ENABLED", None)
    if not telemetry:
        env["OTEL_ENABLED"] = "false"
    if root is not None:
        env["PYTHONPATH"] = str(root)
    else:
        env.pop("PYTHONPATH", None)
    server = subprocess.Popen([python, str(HERE / script), url, "serve"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env, cwd="/tmp")
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        callee_cpu = _cpu_seconds(server.pid)
        out = subprocess.run([python, str(HERE / script), url, "call", str(n), str(concurrency), *filter(None, [mode])],
                             capture_output=True, text=True, env=env, cwd="/tmp", check=True, timeout=300)
        callee_cpu = _cpu_seconds(server.pid) - callee_cpu  # includes the caller's 50 warm-up calls
        result = json.loads(out.stdout.strip().splitlines()[-1])
        return (float(result["calls"] / result["seconds"]), 1e6 * float(result["cpu"]) / n,
                1e6 * callee_cpu / (n + 50))
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(10)


def _per_call(seconds: float, n: int) -> float:
    """µs of CPU per call: ``n`` measured calls plus the caller's 50 warm-up calls (both go through the engine)."""
    return 1e6 * seconds / (n + 50)


FLOOR_NAME = "floor: raw clients in processes"

# One in-process measurement of --handler-cpu: argv = calls, traceparent ("" for none); prints µs of thread CPU per
# handled call (the best of 5 repetitions). Telemetry as the client sets it up (OTEL_ENABLED decides), spans only.
_HANDLER_CPU = """
import asyncio, sys, time
from iii import OtelConfig, telemetry
from iii.handler_runner import HandlerRunner
from iii.trace_scope import TraceScope

calls, traceparent = int(sys.argv[1]), sys.argv[2] or None
telemetry.init_otel(OtelConfig(fetch_instrumentation_enabled=False, metrics_enabled=False, logs_enabled=False),
                    frame_sink=lambda frame: None)
scope = TraceScope(telemetry)
runner = HandlerRunner("ws://127.0.0.1:1")

async def echo(data):
    return data

runner.add("bench::echo", echo)

async def main():
    data = {"n": 1, "s": "hello"}
    best = float("inf")
    for repetition in range(6):  # the first warms up
        start = time.thread_time()
        for _ in range(calls):
            _, end = await runner.start("bench::echo", data, traceparent, None, scope, True)
            end()
        if repetition:
            best = min(best, time.thread_time() - start)
    print(1e6 * best / calls)

asyncio.run(main())
telemetry.shutdown_otel()
"""
_CALLER_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def handler_cpu(root: Path, calls: int, telemetry: bool, traceparent: str) -> float:
    """µs of CPU per handled call of ``root``'s SDK, in process (see the module docstring)."""
    env = dict(os.environ, PYTHONPATH=str(root))
    env.pop("OTEL_ENABLED", None)
    if not telemetry:
        env["OTEL_ENABLED"] = "false"
    out = subprocess.run([sys.executable, "-c", _HANDLER_CPU, str(calls), traceparent], capture_output=True,
                         text=True, env=env, cwd="/tmp", check=True, timeout=300)
    return float(out.stdout.strip().splitlines()[-1])


def handler_cpu_table(calls: int, rounds: int, compare: Path | None) -> None:
    """Print ``--handler-cpu``'s table: median (min-max) over ``rounds`` interleaved rounds."""
    roots = [("ours", ROOT)] + ([("compared", compare)] if compare is not None else [])
    cases = [(f"{name}, telemetry {'on' if on else 'off'}, {'caller span' if tp else 'no caller span'}", root, on, tp)
             for name, root in roots for on in (True, False) for tp in (_CALLER_TRACEPARENT, "") if on or not tp]
    results: dict[str, list[float]] = {case[0]: [] for case in cases}
    for _ in range(rounds):
        for label, root, on, tp in cases:
            results[label].append(handler_cpu(root, calls, on, tp))
    print(f"\ncallee CPU per handled call, in process, {calls} calls x 5 (best) x {rounds} rounds")
    print(f"  {'variant':<46} {'µs/call median (spread)':>24}")
    for label, values in results.items():
        print(f"  {label:<46} {_spread(values):>24}")


def caller_cpu(root: Path, url: str, calls: int, telemetry: bool) -> float:
    """µs of process CPU (all threads) per ``trigger_async`` call, 64 in flight, of ``root``'s SDK as the caller."""
    env = dict(os.environ, PYTHONPATH=str(root))
    env.pop("OTEL_ENABLED", None)
    if not telemetry:
        env["OTEL_ENABLED"] = "false"
    out = subprocess.run([sys.executable, str(HERE / "sdk_worker.py"), url, "call", str(calls), "64"],
                         capture_output=True, text=True, env=env, cwd="/tmp", check=True, timeout=300)
    return 1e6 * float(json.loads(out.stdout.strip().splitlines()[-1])["cpu"]) / calls


async def caller_cpu_table(calls: int, rounds: int, compare: Path | None) -> None:
    """Print ``--caller-cpu``'s table: the caller's CPU per call against a raw callee in this process, median
    (min-max) over ``rounds`` interleaved rounds."""
    roots = [("ours", ROOT)] + ([("compared", compare)] if compare is not None else [])
    cases = [(f"{name}, telemetry {'on' if on else 'off'}", root, on) for name, root in roots for on in (True, False)]
    results: dict[str, list[float]] = {case[0]: [] for case in cases}
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as engine, \
            websockets.connect(engine.url, compression=None) as callee:
        # raw_worker's echo answers any function id; the SDK caller calls bench::echo
        await callee.send(json.dumps({"type": "registerfunction", "id": "bench::echo"}))
        await callee.send(json.dumps({"type": "ping"}))
        server = asyncio.create_task(answer(callee))
        for _ in range(rounds):
            for label, root, on in cases:
                results[label].append(await asyncio.to_thread(caller_cpu, root, engine.url, calls, on))
        server.cancel()
    print(f"\ncaller CPU per trigger_async call, 64 in flight, raw callee, {calls} calls x {rounds} rounds")
    print(f"  {'variant':<46} {'µs/call median (spread)':>24}")
    for label, values in results.items():
        print(f"  {label:<46} {_spread(values):>24}")


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):5.2f} ({min(values):.2f}-{max(values):.2f})"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ref-python", default=str(ROOT / ".ref-venv" / "bin" / "python"))
    parser.add_argument("--only", choices=["1", "64"], help="one concurrency only")
    parser.add_argument("--compare", type=Path, metavar="CHECKOUT",
                        help="also run the SDK of another checkout (e.g. a `git worktree` of the commit before)")
    parser.add_argument("--caller-thread", action="store_true",
                        help="at 1 in flight, also call from a thread other than the caller's main thread")
    parser.add_argument("--handler-cpu", action="store_true",
                        help="only the callee's CPU per handled call, in process (see the module docstring)")
    parser.add_argument("--caller-cpu", action="store_true",
                        help="only the caller's CPU per trigger_async call, 64 in flight (see the module docstring)")
    args = parser.parse_args()
    if args.handler_cpu:
        handler_cpu_table(args.calls, args.rounds, args.compare)
        return
    if args.caller_cpu:
        await caller_cpu_table(args.calls, args.rounds, args.compare)
        return
    have_ref = os.path.exists(args.ref_python)  # noqa: ASYNC240 - once, before anything runs
    variants: list[tuple[str, str, bool, Path | None, str]] = [
        ("ours, telemetry on", sys.executable, True, ROOT, ""),
        ("ours, telemetry off", sys.executable, False, ROOT, "")]
    if args.caller_thread:
        variants.append(("ours, on, caller thread", sys.executable, True, ROOT, "thread"))
    if args.compare is not None:
        variants += [("compared, telemetry on", sys.executable, True, args.compare, ""),
                     ("compared, telemetry off", sys.executable, False, args.compare, "")]
        if args.caller_thread:
            variants.append(("compared, on, caller thread", sys.executable, True, args.compare, "thread"))
    if have_ref:
        variants.append(("reference (telemetry off)", args.ref_python, False, None, ""))
    # The floor: raw clients shaped like an SDK pair (caller and callee each in its own process; at 1 in flight a
    # sync caller, the main thread blocked on a loop thread per call). The issue's `raw` baseline runs both raw
    # clients in this process, on the engine's own loop, so it has no process or thread hand-off at all.
    floor = FLOOR_NAME
    levels = (int(args.only),) if args.only else (1, 64)
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as engine:
        url = engine.url
        for concurrency in levels:
            names = [floor] + [name for name, *_ in variants]
            ratios: dict[str, list[float]] = {name: [] for name in names}
            to_floor: dict[str, list[float]] = {name: [] for name in names}
            cpu: dict[str, list[tuple[float, float, float]]] = {name: [] for name in names}
            raws: list[float] = []
            for _ in range(args.rounds):
                raw = await raw_baseline(url, args.calls, concurrency)
                raws.append(raw)
                engine_cpu = time.process_time()
                floor_rate, caller_us, callee_us = await asyncio.to_thread(
                    sdk_rate, sys.executable, url, args.calls, concurrency, False, None, "raw_worker.py",
                    "sync" if concurrency == 1 else "")
                engine_us = _per_call(time.process_time() - engine_cpu, args.calls)
                ratios[floor].append(floor_rate / raw)
                to_floor[floor].append(1.0)
                cpu[floor].append((caller_us, callee_us, engine_us))
                for name, python, telemetry, root, mode in variants:
                    engine_cpu = time.process_time()
                    rate, caller_us, callee_us = await asyncio.to_thread(
                        sdk_rate, python, url, args.calls, concurrency, telemetry, root, "sdk_worker.py",
                        mode if concurrency == 1 else "")
                    engine_us = _per_call(time.process_time() - engine_cpu, args.calls)
                    ratios[name].append(rate / raw)
                    to_floor[name].append(rate / floor_rate)
                    cpu[name].append((caller_us, callee_us, engine_us))
            print(f"\n{concurrency} in flight, {args.calls} calls x {args.rounds} rounds; "
                  f"raw median {statistics.median(raws):.0f} calls/s")
            print(f"  {'variant':<34} {'sdk/raw median (spread)':>24} {'sdk/floor':>18} "
                  f"{'caller CPU µs/call':>19} {'callee CPU µs/call':>19} {'engine CPU µs/call':>19}")
            for name in names:
                caller, callee, engine_us = (statistics.median(c[i] for c in cpu[name]) for i in range(3))
                print(f"  {name:<34} {_spread(ratios[name]):>24} {_spread(to_floor[name]):>18} "
                      f"{caller:19.0f} {callee:19.0f} {engine_us:19.0f}")


if __name__ == "__main__":
    asyncio.run(main())
