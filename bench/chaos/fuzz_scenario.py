"""Fuzz: malformed frames of every kind from several attacker connections against an engine in its own
process, while two real SDK workers (a subprocess) call each other; then a client that sends but never reads.

Targets: 0 crashes (process died or stopped answering a probe), 0 failed legitimate calls, legitimate p99 <
100 ms and max < 1 s, engine RSS after the attack within 16 MiB of the start, and never more than +64 MiB with
a non-reading client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import websockets

from .common import MIB, ROOT, EngineProcess, RawWebSocket, Report, child_env, percentile
from .frames import next_frame

HUGE_BYTES = 60 * 1000 * 1000
OVER_LIMIT_BYTES = 65 * MIB  # past the engine's 64 MiB max_message_size: that connection alone gets 1009
PROBE_EVERY_S = 0.5
PROBE_TIMEOUT_S = 2.0


class Monitor:
    """Samples the engine's RSS (peak) and probes it with ping/pong on a fresh connection."""

    def __init__(self, engine: EngineProcess) -> None:
        self.engine = engine
        self.peak = 0
        self.probes = 0
        self.probe_failures: list[str] = []
        self.worst_probe_s = 0.0
        self._stop = asyncio.Event()

    async def sample(self) -> None:
        """RSS every 20 ms until stopped."""
        while not self._stop.is_set():
            self.peak = max(self.peak, self.engine.rss())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.02)

    async def probe(self) -> None:
        """A fresh connection must get ``workerregistered`` and a pong within 2 s, every 0.5 s."""
        while not self._stop.is_set():
            start = time.perf_counter()
            try:
                async with asyncio.timeout(PROBE_TIMEOUT_S):
                    async with websockets.connect(self.engine.url, compression=None, open_timeout=None,
                                                  ping_interval=None, close_timeout=0.5) as ws:
                        await ws.recv()
                        await ws.send('{"type":"ping"}')
                        while json.loads(await ws.recv()).get("type") != "pong":
                            pass
                self.worst_probe_s = max(self.worst_probe_s, time.perf_counter() - start)
            except Exception as exc:  # a probe that fails is the finding
                self.probe_failures.append(f"{type(exc).__name__}: {exc}"[:200])
            self.probes += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), PROBE_EVERY_S)

    def stop(self) -> None:
        """End sampling and probing."""
        self._stop.set()


async def attacker(port: int, rng: random.Random, count: int, stats: Counter[str], deadline: float) -> None:
    """Send ``count`` malformed frames on one connection, reconnecting whenever the engine closes it."""
    ws: RawWebSocket | None = None
    sent = 0
    while sent < count and time.monotonic() < deadline:
        if ws is None or ws.closed_by_peer or ws.writer.is_closing():
            if ws is not None:
                stats["connections_closed_by_engine"] += 1
                await ws.close()
            try:
                ws = await RawWebSocket.connect(port)
            except (OSError, TimeoutError, ConnectionError) as exc:
                stats[f"connect_failed:{type(exc).__name__}"] += 1
                await asyncio.sleep(0.05)
                continue
        kind, payload, binary = next_frame(rng)
        (ws.send_binary if binary else ws.send_text)(payload)
        stats[kind] += 1
        sent += 1
        if sent % 50 == 0 and not await ws.flush(10.0):
            stats["attacker_send_stalled_10s"] += 1
            ws.reset()
            ws = None
    if ws is not None:
        await ws.close()


async def huge_frames(port: int, count: int, stats: Counter[str]) -> None:
    """60 MB frames (valid JSON to a missing function, and garbage), then one past the size limit."""
    body = b"x" * HUGE_BYTES
    for i in range(count):
        ws = await RawWebSocket.connect(port)
        if i % 2 == 0:
            ws.send_text(b'{"type":"invokefunction","function_id":"fuzz::missing","invocation_id":"'
                         + str(uuid.uuid4()).encode() + b'","data":"' + body + b'"}')
        else:
            ws.send_text(b"[" + body)
        stats["huge_60MB"] += 1
        await ws.flush(30.0)
        await ws.close()
    ws = await RawWebSocket.connect(port)
    try:
        ws.send_text(b"y" * OVER_LIMIT_BYTES)
        await ws.flush(30.0)
    except (ConnectionError, OSError):
        pass
    stats["over_limit_65MiB"] += 1
    await ws.close()


async def churn(port: int, count: int, stats: Counter[str], deadline: float) -> None:
    """Connections reset at every stage: before the upgrade, right after it, in the middle of a frame."""
    for i in range(count):
        if time.monotonic() > deadline:
            break
        stage = i % 4
        try:
            if stage == 0:
                _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nUpgr")
                writer.transport.abort()
                stats["churn_half_handshake"] += 1
                continue
            ws = await RawWebSocket.connect(port)
            if stage == 2:
                ws.send_raw(b"\x81\xfe\x10\x00\x00\x00\x00\x00" + b'{"type":"ping"')  # 4096-byte frame cut short
            elif stage == 3:
                ws.send_text(b'{"type":"registerfunction","id":"fuzz::churn' + str(i).encode() + b'"}')
                await ws.flush(5)
            ws.reset()
            stats[f"churn_reset_stage{stage}"] += 1
        except (OSError, TimeoutError, ConnectionError) as exc:
            stats[f"churn_failed:{type(exc).__name__}"] += 1


async def non_reader(port: int, requests: int, stats: Counter[str], report_every: float = 0.2) -> None:
    """Asks for 256 KiB results without ever reading; stops when the engine stops taking its frames."""
    ws = await RawWebSocket.connect(port, drain=False, rcvbuf=4096)
    blocked = False
    for i in range(requests):
        frame = {"type": "invokefunction", "function_id": "chaos::big", "invocation_id": str(uuid.uuid4()),
                 "data": {"i": i}}
        ws.send_text(json.dumps(frame).encode())
        stats["non_reader_requests"] += 1
        if i % 20 == 19 and not await ws.flush(2.0):
            blocked = True  # the engine applies backpressure to us: that is the good outcome
            break
    stats["non_reader_backpressured"] = int(blocked)
    await asyncio.sleep(3.0)  # a measuring interval: the engine's RSS is sampled meanwhile
    ws.reset()


async def run(quick: bool, workdir: Path) -> Report:
    """Run the fuzz scenario and return its figures."""
    report = Report("fuzz")
    frames = 1_000 if quick else 100_000
    attackers = 4 if quick else 8
    huge = 1 if quick else 3
    churns = 40 if quick else 2_000
    non_reader_requests = 400 if quick else 4_000
    rng = random.Random(8)
    engine = await EngineProcess.start(workdir / "fuzz-engine.log", "--port", "0", "--log-level", "WARNING")
    port = int(engine.url.rsplit(":", 1)[1])
    legit = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.chaos.legit", "--url", engine.url, "--max-seconds", "900",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=child_env(), cwd=ROOT,
        limit=256 * MIB)  # its one result line holds every latency
    assert legit.stdin is not None and legit.stdout is not None
    monitor = Monitor(engine)
    stats: Counter[str] = Counter()
    try:
        line = await asyncio.wait_for(legit.stdout.readline(), 30)
        if line.strip() != b"ready":
            raise RuntimeError(f"legitimate workers did not start: {line!r}")
        await asyncio.sleep(1.0)  # warm-up interval before the baseline RSS
        rss_start = engine.rss()
        monitor.peak = rss_start
        background = [asyncio.create_task(monitor.sample()), asyncio.create_task(monitor.probe())]
        legit.stdin.write(b"phase attack\n")
        started = time.monotonic()
        deadline = started + (60 if quick else 420)
        per = frames // attackers
        await asyncio.gather(
            *(attacker(port, random.Random(rng.random()), per, stats, deadline) for _ in range(attackers)),
            churn(port, churns, stats, deadline),
            huge_frames(port, huge, stats))
        attack_s = time.monotonic() - started
        legit.stdin.write(b"phase settle\n")
        peak_attack = monitor.peak
        await asyncio.sleep(3.0)  # settle interval after the attackers left, then the "after" RSS
        rss_after = engine.rss()
        legit.stdin.write(b"phase nonreader\n")
        monitor.peak = rss_nr_start = engine.rss()
        await non_reader(port, non_reader_requests, stats)
        peak_nr = monitor.peak
        legit.stdin.write(b"stop\n")
        await legit.stdin.drain()
        out = await asyncio.wait_for(legit.stdout.readline(), 20)
        phases: dict[str, Any] = json.loads(out) if out.strip() else {}
        monitor.stop()
        await asyncio.gather(*background)
    finally:
        monitor.stop()
        if legit.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                legit.kill()
            await legit.wait()
        crashed = not engine.alive
        code = engine.process.returncode
        await engine.stop()
    sent_malformed = sum(v for k, v in stats.items() if not k.startswith(("churn", "connect", "connections",
                                                                           "attacker", "non_reader")))
    report.info("malformed frames sent", sent_malformed, detail=f"{attackers} attacker connections, "
                f"{attack_s:.1f} s, {sent_malformed / max(attack_s, 1e-9):,.0f}/s")
    report.info("connections closed by engine", stats["connections_closed_by_engine"])
    report.info("churn connections", sum(v for k, v in stats.items() if k.startswith("churn_reset")
                                         or k == "churn_half_handshake"))
    report.check("engine crashes", int(crashed), not crashed, "0", detail=f"exit code {code}" if crashed else "")
    report.check("probes unanswered", len(monitor.probe_failures), not monitor.probe_failures, "0",
                 detail=f"of {monitor.probes}; worst answered {monitor.worst_probe_s * 1000:.0f} ms; "
                 + "; ".join(monitor.probe_failures[:2]))
    calls = failures = 0
    latencies: list[float] = []
    errors: list[str] = []
    for name in ("attack", "settle", "nonreader"):
        phase = phases.get(name, {})
        calls += phase.get("calls", 0)
        failures += phase.get("failures", 0)
        latencies += phase.get("latencies_ms", [])
        errors += phase.get("errors", [])
    report.check("legit calls failed", failures, failures == 0 and calls > 0, "0",
                 detail=f"of {calls}; " + "; ".join(errors[:2]))
    if not latencies:
        latencies = [float("inf")]  # no successful call at all: every latency target fails
    report.at_most("legit p50", round(percentile(latencies, 50), 2), 100, "ms")
    report.at_most("legit p99", round(percentile(latencies, 99), 2), 100, "ms")
    report.at_most("legit max", round(max(latencies, default=0.0), 1), 1000, "ms")
    nr = phases.get("nonreader", {}).get("latencies_ms", [])
    report.info("legit p99 with non-reader", round(percentile(nr, 99), 2), "ms")
    report.info("engine RSS start", round(rss_start / MIB, 1), "MiB")
    report.info("engine RSS peak (attack)", round(peak_attack / MIB, 1), "MiB")
    report.at_most("engine RSS after - start", round((rss_after - rss_start) / MIB, 1), 16, "MiB")
    report.at_most("engine RSS growth, non-reader", round((peak_nr - rss_nr_start) / MIB, 1), 64, "MiB",
                   detail=f"{stats['non_reader_requests']} requests of 256 KiB results; engine stopped reading "
                   f"it: {'yes' if stats['non_reader_backpressured'] else 'no'}")
    return report
