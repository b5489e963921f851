"""Two real SDK workers that call each other continuously while the engine is under attack (a subprocess of
the fuzz scenario, so the attackers' CPU does not distort its latencies).

Protocol on stdin/stdout, one line each: it prints ``ready`` once both functions answer; ``phase NAME`` on
stdin starts a new measurement phase; ``stop`` (or EOF, or ``--max-seconds``) ends it, and it prints one JSON
object ``{phase: {calls, failures, errors, latencies_ms}}``.

Usage: python -m bench.chaos.legit --url ws://127.0.0.1:PORT [--max-seconds 600]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from iii import InitOptions, register_worker
from iii.iii import III

BIG = "x" * (256 * 1024)
CALL_TIMEOUT_MS = 5000


class Phases:
    """Latencies and failures per phase."""

    def __init__(self) -> None:
        self.current = "warmup"
        self.data: dict[str, dict[str, Any]] = {}

    def _phase(self) -> dict[str, Any]:
        return self.data.setdefault(self.current, {"calls": 0, "failures": 0, "errors": [], "latencies_ms": [],
                                                   "own_lag_ms": []})

    def record(self, seconds: float, error: str | None) -> None:
        """One legitimate call finished (``error`` is None on success)."""
        phase = self._phase()
        phase["calls"] += 1
        if error is None:
            phase["latencies_ms"].append(round(seconds * 1000, 3))
        else:
            phase["failures"] += 1
            if len(phase["errors"]) < 5:
                phase["errors"].append(error)


async def own_lag(phases: Phases, stop: asyncio.Event, tick_s: float = 0.005) -> None:
    """How late this process's own timer fires, per phase: the callers' share of CPU starvation, reported beside
    their latencies (a call cannot be answered faster than the caller's loop gets to run)."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + tick_s
        await asyncio.sleep(tick_s)
        phases._phase()["own_lag_ms"].append(round(max(0.0, loop.time() - due) * 1000, 3))


async def caller(client: III, target: str, phases: Phases, stop: asyncio.Event) -> None:
    """Call ``target`` back to back until ``stop``; every call is checked and timed."""
    n = 0
    while not stop.is_set():
        n += 1
        start = time.perf_counter()
        error: str | None = None
        try:
            result = await client.trigger_async({"function_id": target, "payload": {"n": n},
                                                 "timeout_ms": CALL_TIMEOUT_MS})
            echo = result.get("echo") if isinstance(result, dict) else None
            if not isinstance(echo, dict) or echo.get("n") != n:
                error = f"wrong result {str(result)[:100]}"
        except Exception as exc:  # every failure of a legitimate call is a finding
            error = f"{type(exc).__name__}: {str(exc)[:200]}"
        phases.record(time.perf_counter() - start, error)


async def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    args = parser.parse_args()
    options = InitOptions(worker_name="chaos-legit", invocation_timeout_ms=CALL_TIMEOUT_MS)
    a = register_worker(args.url, options)
    b = register_worker(args.url, options)
    a.register_function("chaos::a", lambda data: {"echo": data})
    b.register_function("chaos::b", lambda data: {"echo": data})
    # The big results for the non-reading client come from a third worker, so the measured pair never queues
    # behind them in its own socket.
    c = register_worker(args.url, options)
    c.register_function("chaos::big", lambda data: BIG)
    deadline = time.monotonic() + 15
    while True:  # registrations travel asynchronously: ready once both directions answer
        try:
            await a.trigger_async({"function_id": "chaos::b", "payload": {"n": 0}, "timeout_ms": 1000})
            await b.trigger_async({"function_id": "chaos::a", "payload": {"n": 0}, "timeout_ms": 1000})
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
    phases = Phases()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(caller(a, "chaos::b", phases, stop)),
             asyncio.create_task(caller(b, "chaos::a", phases, stop)),
             asyncio.create_task(own_lag(phases, stop))]
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    end = time.monotonic() + args.max_seconds
    while time.monotonic() < end:
        try:
            line = await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), end - time.monotonic())
        except TimeoutError:
            break
        words = line.split()
        if not words or words[0] == "stop":
            break
        if words[0] == "phase" and len(words) > 1:
            phases.current = words[1]
    stop.set()
    await asyncio.wait(tasks, timeout=CALL_TIMEOUT_MS / 1000 + 1)
    print(json.dumps(phases.data), flush=True)
    await a.shutdown_async()
    await b.shutdown_async()
    await c.shutdown_async()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
