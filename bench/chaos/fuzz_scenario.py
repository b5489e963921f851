"""Fuzz: malformed frames of every kind from several attacker connections against an engine in its own
process, while two real SDK workers (a subprocess) call each other; then a client that sends but never reads.

Targets: 0 crashes (process died or stopped answering a probe), 0 failed legitimate calls, legitimate p99 <
100 ms and max < 1 s, engine RSS after the attack within 16 MiB of the start, and a client that asks for big
results without reading them disconnected with 1008 while the engine never grows more than +64 MiB.

Measured honestly: the legitimate calls are timed by their callers, in their own process, first in a *baseline*
phase with no attack (on the same loaded machine) and then under attack, and the ratio is printed; beside them
stand the callers' own loop lag (how late their process got to run), the engine's loop lag (from
:mod:`bench.chaos.engine_probe`), the engine's CPU per 1,000 frames and the machine's load average. RSS "after"
is the median of several samples at the end of a settle interval.

Diagnosis: ``III_CHAOS_FUZZ_WITHOUT=huge,large,deep,churn`` leaves those kinds out (to compare runs);
``III_CHAOS_TRACEMALLOC=1`` / ``III_CHAOS_MALLOC_TRIM=1`` / ``III_CHAOS_ALLOC=1`` add the probe's allocation figures
to the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import websockets

from iii import register_worker
from iii_engine.config import DEFAULT_CONTROL_MAX_MESSAGE_SIZE, DEFAULT_MAX_OUTBOX_BYTES

from .common import MIB, ROOT, EngineProcess, RawWebSocket, Report, child_env, percentile
from .frames import next_frame

HUGE_BYTES = 60 * 1000 * 1000  # far past the frame limit: the engine reads the header and closes with 1009
LARGE_BYTES = DEFAULT_CONTROL_MAX_MESSAGE_SIZE - 64 * 1024  # just under it: parsed, off the event loop
OVER_LIMIT_BYTES = 65 * MIB
BIG_RESULT_BYTES = 256 * 1024  # what chaos::big answers (bench/chaos/legit.py)
PROBE_EVERY_S = 0.5
PROBE_TIMEOUT_S = 2.0
SKIP = frozenset(k.strip() for k in os.environ.get("III_CHAOS_FUZZ_WITHOUT", "").split(",") if k.strip())


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
    """60 MB frames (valid JSON to a missing function, and garbage), then one past the old 64 MiB limit: each
    costs the engine a frame header before it closes that connection with 1009."""
    body = b"x" * HUGE_BYTES
    for i in range(count):
        ws = await RawWebSocket.connect(port)
        if i % 2 == 0:
            ws.send_text(b'{"type":"invokefunction","function_id":"fuzz::missing","invocation_id":"'
                         + str(uuid.uuid4()).encode() + b'","data":"' + body + b'"}')
        else:
            ws.send_text(b"[" + body)
        stats["huge_60MB"] += 1
        with contextlib.suppress(ConnectionError, OSError):
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


async def large_frames(port: int, count: int, stats: Counter[str]) -> None:
    """Frames just under the frame limit, which the engine must parse: an invocation of a missing function, a
    valid registration with a huge description, garbage, and deep nesting padded to size."""
    body = b"x" * LARGE_BYTES
    ws = await RawWebSocket.connect(port)
    for i in range(count):
        if ws.closed_by_peer or ws.writer.is_closing():
            await ws.close()
            ws = await RawWebSocket.connect(port)
        kind = i % 4
        if kind == 0:
            frame = (b'{"type":"invokefunction","function_id":"fuzz::missing","invocation_id":"'
                     + str(uuid.uuid4()).encode() + b'","data":"' + body + b'"}')
        elif kind == 1:
            frame = b'{"type":"registerfunction","id":"fuzz::large' + str(i).encode() + b'","description":"' \
                + body + b'"}'
        elif kind == 2:
            frame = b'{"type":"ping","x":[' + body
        else:
            frame = b'{"type":"ping","pad":"' + body[:LARGE_BYTES // 2] + b'","deep":' + b"[" * 100_000 \
                + b"]" * 100_000 + b"}"
        ws.send_text(frame)
        stats["large_under_limit"] += 1
        with contextlib.suppress(ConnectionError, OSError):
            await ws.flush(30.0)
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


async def non_reader(port: int, requests: int, stats: Counter[str], engine_url: str,
                     within: float) -> float:
    """Asks for 256 KiB results and never reads: the engine must drop it with 1008 once 16 MiB are unread.

    Requests go out as fast as the engine takes them. Returns the seconds until the engine no longer lists the
    connection among its workers (``engine::workers::list``), ``within`` when it still did by then: only the
    engine can tell, since its close reaches a client that does not read no sooner than its unread results.
    """
    ws = await RawWebSocket.connect(port, drain=False, rcvbuf=4096)
    worker_id = await _first_worker_id(ws)
    watcher = await asyncio.to_thread(register_worker, engine_url)
    started = time.monotonic()
    try:
        sent = 0
        with contextlib.suppress(ConnectionError, OSError):  # the engine may close the connection under us
            for i in range(requests):
                frame = {"type": "invokefunction", "function_id": "chaos::big",
                         "invocation_id": str(uuid.uuid4()), "data": {"i": i}}
                ws.send_text(json.dumps(frame).encode())
                sent += 1
                if i % 16 == 15 and not await ws.flush(max(0.1, within - (time.monotonic() - started))):
                    break  # the engine stopped taking our frames
        stats["non_reader_requests"] += sent
        while time.monotonic() - started < within:
            listed = await watcher.trigger_async({"function_id": "engine::workers::list",
                                                  "payload": {"worker_id": worker_id}, "timeout_ms": 5000})
            if not listed.get("workers"):
                return time.monotonic() - started
            # The engine's worker table, not an event: polled every 0.1 s, bounded by ``within``.
            await asyncio.sleep(0.1)
        return within
    finally:
        ws.reset()
        await watcher.shutdown_async()


async def _first_worker_id(ws: RawWebSocket) -> str:
    """Read the one ``workerregistered`` frame (server frames are unmasked and this one is short)."""
    head = await asyncio.wait_for(ws.reader.readexactly(2), 10)
    length = head[1] & 0x7F
    if length == 126:
        length = int.from_bytes(await ws.reader.readexactly(2), "big")
    frame = json.loads(await asyncio.wait_for(ws.reader.readexactly(length), 10))
    return str(frame["worker_id"])


def _phase(phases: dict[str, Any], name: str, key: str) -> list[float]:
    return list(phases.get(name, {}).get(key, []))


def _ms(values: list[float], p: float) -> float:
    return round(percentile(values, p), 2)


PARTS = ("attack", "nonreader")


class Run:
    """What one fuzz run measured, filled in as its parts go."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.stats: Counter[str] = Counter()
        self.marks: dict[str, dict[str, Any]] = {}
        self.phases: dict[str, Any] = {}
        self.attack_s = 0.0
        self.rss_start = self.rss_after = self.peak_attack = 0
        self.after: list[int] = []
        self.rss_nr_start = self.peak_nr = 0
        self.nr_seconds = 0.0
        self.settle_s = 1.5 if quick else 5.0
        self.nr_within = 10.0 if quick else 20.0
        self.attackers = 4 if quick else 8


async def attack(run: Run, engine: EngineProcess, monitor: Monitor, legit_stdin: asyncio.StreamWriter) -> None:
    """Baseline, attack and settle phases."""
    quick = run.quick
    frames = 1_000 if quick else 100_000
    huge = 0 if "huge" in SKIP else (1 if quick else 3)
    large = 0 if "large" in SKIP else (4 if quick else 40)
    churns = 0 if "churn" in SKIP else (40 if quick else 2_000)
    port = int(engine.url.rsplit(":", 1)[1])
    rng = random.Random(8)
    legit_stdin.write(b"phase baseline\n")
    await engine.probe()  # the start-up is not part of any period
    await asyncio.sleep(1.5 if quick else 5.0)  # a measuring interval: legitimate calls with no attack
    run.marks["baseline"] = await engine.probe()
    run.rss_start = monitor.peak = engine.rss()
    legit_stdin.write(b"phase attack\n")
    started = time.monotonic()
    deadline = started + (60 if quick else 420)
    per = frames // run.attackers
    await asyncio.gather(
        *(attacker(port, random.Random(rng.random()), per, run.stats, deadline) for _ in range(run.attackers)),
        churn(port, churns, run.stats, deadline),
        huge_frames(port, huge, run.stats),
        large_frames(port, large, run.stats))
    run.attack_s = time.monotonic() - started
    run.marks["attack"] = await engine.probe()
    legit_stdin.write(b"phase settle\n")
    run.peak_attack = monitor.peak
    await asyncio.sleep(run.settle_s * 2 / 3)  # settle interval after the attackers left
    for _ in range(5):  # then the "after" RSS: the median of samples spread over the rest of it
        run.after.append(engine.rss())
        await asyncio.sleep(run.settle_s / 3 / 5)
    run.rss_after = int(statistics.median(run.after))
    run.marks["settle"] = await engine.probe()


async def run(quick: bool, workdir: Path, parts: tuple[str, ...] = PARTS) -> Report:
    """Run the fuzz scenario (its ``parts``: the attack, the non-reading client) and return its figures."""
    report = Report("fuzz")
    measured = Run(quick)
    load_start = os.getloadavg()
    engine = await EngineProcess.start(workdir / "fuzz-engine.log", "--port", "0", "--log-level", "WARNING",
                                       probed=True)
    legit = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.chaos.legit", "--url", engine.url, "--max-seconds", "900",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=child_env(), cwd=ROOT,
        limit=256 * MIB)  # its one result line holds every latency
    assert legit.stdin is not None and legit.stdout is not None
    monitor = Monitor(engine)
    background: list[asyncio.Task[None]] = []
    try:
        line = await asyncio.wait_for(legit.stdout.readline(), 30)
        if line.strip() != b"ready":
            raise RuntimeError(f"legitimate workers did not start: {line!r}")
        monitor.peak = engine.rss()
        background = [asyncio.create_task(monitor.sample()), asyncio.create_task(monitor.probe())]
        if "attack" in parts:
            await attack(measured, engine, monitor, legit.stdin)
        if "nonreader" in parts:
            legit.stdin.write(b"phase nonreader\n")
            monitor.peak = measured.rss_nr_start = engine.rss()
            measured.nr_seconds = await non_reader(int(engine.url.rsplit(":", 1)[1]), 400 if quick else 4_000,
                                                   measured.stats, engine.url, measured.nr_within)
            measured.peak_nr = monitor.peak
            measured.marks["nonreader"] = await engine.probe()
        legit.stdin.write(b"stop\n")
        await legit.stdin.drain()
        out = await asyncio.wait_for(legit.stdout.readline(), 20)
        measured.phases = json.loads(out) if out.strip() else {}
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
    load_end = os.getloadavg()
    report.info("machine load average", f"{load_start[0]:.1f} -> {load_end[0]:.1f}",
                detail=f"1-minute load on {os.cpu_count()} cores, at the start and at the end")
    report.check("engine crashes", int(crashed), not crashed, "0", detail=f"exit code {code}" if crashed else "")
    report.check("probes unanswered", len(monitor.probe_failures), not monitor.probe_failures, "0",
                 detail=f"of {monitor.probes}; worst answered {monitor.worst_probe_s * 1000:.0f} ms; "
                 + "; ".join(monitor.probe_failures[:2]))
    if "attack" in parts:
        attack_figures(report, measured)
    if "nonreader" in parts:
        non_reader_figures(report, measured, engine.log_path.read_text(errors="replace"))
    return report


def attack_figures(report: Report, run: Run) -> None:
    """The figures of the baseline, attack and settle phases."""
    stats, marks, phases = run.stats, run.marks, run.phases
    sent_malformed = sum(v for k, v in stats.items() if not k.startswith(("churn", "connect", "connections",
                                                                           "attacker", "non_reader")))
    attack = marks.get("attack", {})
    report.info("malformed frames sent", sent_malformed, detail=f"{run.attackers} attacker connections, "
                f"{run.attack_s:.1f} s, {sent_malformed / max(run.attack_s, 1e-9):,.0f}/s; without: "
                f"{','.join(sorted(SKIP)) or 'nothing'}")
    report.info("engine CPU per 1,000 frames", round(attack.get("cpu_s", 0.0) / max(sent_malformed, 1) * 1000, 3),
                "s", detail=f"{attack.get('cpu_s', 0)} s CPU in {attack.get('wall_s', 0)} s of attack")
    report.info("connections closed by engine", stats["connections_closed_by_engine"])
    report.info("churn connections", sum(v for k, v in stats.items() if k.startswith("churn_reset")
                                         or k == "churn_half_handshake"))
    calls = failures = 0
    latencies: list[float] = []
    errors: list[str] = []
    for name in ("attack", "settle", "nonreader"):
        phase = phases.get(name, {})
        calls += phase.get("calls", 0)
        failures += phase.get("failures", 0)
        latencies += phase.get("latencies_ms", [])
        errors += phase.get("errors", [])
    baseline = _phase(phases, "baseline", "latencies_ms")
    report.check("legit calls failed", failures, failures == 0 and calls > 0, "0",
                 detail=f"of {calls}; " + "; ".join(errors[:2]))
    report.info("legit baseline p50 / p99", f"{_ms(baseline, 50)} / {_ms(baseline, 99)}", "ms",
                detail=f"{len(baseline)} calls, no attack, same machine; callers' own loop lag p99 "
                f"{_ms(_phase(phases, 'baseline', 'own_lag_ms'), 99)} ms")
    if not latencies:
        latencies = [float("inf")]  # no successful call at all: every latency target fails
    under_attack = _phase(phases, "attack", "latencies_ms")
    ratio = percentile(under_attack, 99) / max(percentile(baseline, 99), 1e-9) if baseline and under_attack else 0
    own = _phase(phases, "attack", "own_lag_ms")
    report.at_most("legit p50", _ms(latencies, 50), 100, "ms")
    report.at_most("legit p99", _ms(latencies, 99), 100, "ms",
                   detail=f"attack phase alone {_ms(under_attack, 99)} ms = {ratio:.1f}x baseline p99; callers' own "
                   f"loop lag p99 {_ms(own, 99)} ms, max {max(own, default=0):.0f} ms")
    report.at_most("legit max", round(max(latencies, default=0.0), 1), 1000, "ms")
    base = marks.get("baseline", {})
    report.info("engine loop lag p99 / max", f"{attack.get('lag_p99_ms')} / {attack.get('lag_max_ms')}", "ms",
                detail=f"during the attack; baseline {base.get('lag_p99_ms')} / {base.get('lag_max_ms')} ms; "
                f"{attack.get('lag_over_50ms')} ticks late by more than 50 ms")
    report.info("engine RSS start", round(run.rss_start / MIB, 1), "MiB")
    report.info("engine RSS peak (attack)", round(run.peak_attack / MIB, 1), "MiB")
    report.at_most("engine RSS after - start", round((run.rss_after - run.rss_start) / MIB, 1), 16, "MiB",
                   detail=f"median of {len(run.after)} samples after {run.settle_s:g} s; "
                   + _allocation_detail(marks.get("baseline", {}), marks.get("settle", {})))


def non_reader_figures(report: Report, run: Run, log_text: str) -> None:
    """The figures of the non-reading client."""
    nr = _phase(run.phases, "nonreader", "latencies_ms")
    report.info("legit p99 with non-reader", _ms(nr, 99), "ms", detail=f"{len(nr)} calls")
    report.at_most("engine RSS growth, non-reader", round((run.peak_nr - run.rss_nr_start) / MIB, 1), 64, "MiB",
                   detail=f"{run.stats['non_reader_requests']} requests of {BIG_RESULT_BYTES // 1024} KiB results")
    closed_1008 = "closing with 1008" in log_text and "does not read what it is sent" in log_text
    dropped = closed_1008 and run.nr_seconds < run.nr_within
    report.check("non-reader disconnected with 1008", f"after {run.nr_seconds:.1f} s" if dropped else "no", dropped,
                 f"yes, within {run.nr_within:g} s", detail=f"engine logged 1008: {'yes' if closed_1008 else 'no'}; "
                 f"{'dropped from' if dropped else 'still in'} engine::workers::list "
                 f"(bound {DEFAULT_MAX_OUTBOX_BYTES // MIB} MiB unread)")


def _allocation_detail(before: dict[str, Any], after: dict[str, Any]) -> str:
    """Where the RSS difference lives (per kind of mapping), and the probe's allocation figures."""
    was, now = before.get("rss_by_mapping_mib", {}), after.get("rss_by_mapping_mib", {})
    parts = ["growth by mapping: " + ", ".join(f"{k} {now[k] - was.get(k, 0):+.1f}" for k in now)] if now else []
    if "traced_mib" in after:
        parts.append(f"Python-traced {after['traced_mib']} MiB; grew: " + " | ".join(after.get("grew", [])[:3]))
    if "alloc" in after:
        was_alloc = before.get("alloc", {})
        parts.append("alloc " + ", ".join(f"{k} {v} (was {was_alloc.get(k)})" for k, v in after["alloc"].items()))
    if "malloc_trim_freed_mib" in after:
        parts.append(f"malloc_trim gave back {after['malloc_trim_freed_mib']} MiB")
    return "; ".join(parts)
