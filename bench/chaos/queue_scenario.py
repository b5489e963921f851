"""Queue: a Redis-backed queue in an engine process that is SIGKILLed mid-processing and restarted on the same
port; the SDK worker reconnects by itself.

Targets: 0 lost jobs, 0 duplicates outside the jobs in flight at the kill (a job counts as in flight when its
handler ran at any time from 0.5 s before the kill was ordered until the engine process was gone, since its result
may not have been recorded). Leases are 3 s (default 60 s) so that jobs in flight at the kill come back quickly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from iii import InitOptions, register_worker

from .common import EngineProcess, Report, free_port

REDIS_URL = "redis://127.0.0.1:6379/0"
IN_FLIGHT_GRACE_S = 0.5


class Ledger:
    """What the worker's handler saw, shared between the SDK's thread and ours."""

    def __init__(self, total: int, kill_at: int) -> None:
        self.lock = threading.Lock()
        self.total = total
        self.kill_at = kill_at
        self.runs: Counter[int] = Counter()
        self.running: set[int] = set()
        self.finished_at: dict[int, float] = {}
        self.reached_kill = threading.Event()
        self.all_done = threading.Event()

    async def handle(self, data: Any) -> dict[str, Any]:
        """The job handler: 5 ms of work, then recorded."""
        job = int(data["job"])
        with self.lock:
            self.running.add(job)
        await asyncio.sleep(0.005)
        with self.lock:
            self.running.discard(job)
            self.runs[job] += 1
            self.finished_at[job] = time.monotonic()
            if len(self.runs) >= self.kill_at:
                self.reached_kill.set()
            if len(self.runs) >= self.total:
                self.all_done.set()
        return {"ok": job}

    def in_flight(self, since: float | None = None) -> set[int]:
        """Jobs running now or finished after ``since`` (default: within the grace period before now)."""
        after = time.monotonic() - IN_FLIGHT_GRACE_S if since is None else since
        with self.lock:
            return set(self.running) | {j for j, t in self.finished_at.items() if t >= after}


async def run(quick: bool, workdir: Path) -> Report:
    """Run the queue scenario and return its figures."""
    report = Report("queue")
    total = 100 if quick else 10_000
    prefix = f"chaos_{uuid.uuid4().hex[:12]}:"
    port = free_port()
    config = workdir / "queue.yaml"
    config.write_text(json.dumps({"port": port, "modules": [{"class": "modules::queue::QueueModule", "config": {
        "adapter": {"class": "modules::queue::RedisAdapter", "config": {"redis_url": REDIS_URL, "key_prefix": prefix}},
        "queue_configs": {"chaos": {"concurrency": 8, "max_retries": 5, "backoff_ms": 50, "lease_ms": 3000}}}}]}))
    ledger = Ledger(total, max(1, total * 3 // 10))
    log = workdir / "queue-engine.log"
    engine = await EngineProcess.start(log, "--config", str(config), "--log-level", "WARNING")
    client = await asyncio.to_thread(register_worker, engine.url, InitOptions(worker_name="chaos-queue"))
    enqueued = 0
    enqueue_errors: list[str] = []
    restart_s = 0.0
    try:
        client.register_function("chaos::job", ledger.handle)
        limit = asyncio.Semaphore(16)

        async def enqueue(i: int) -> None:
            nonlocal enqueued
            async with limit:
                try:
                    reply = await client.trigger_async({"function_id": "chaos::job", "payload": {"job": i},
                                                        "action": {"type": "enqueue", "queue": "chaos"},
                                                        "timeout_ms": 10_000})
                    if isinstance(reply, dict) and reply.get("messageReceiptId"):
                        enqueued += 1
                    else:
                        enqueue_errors.append(f"job {i}: reply {reply!r}"[:120])
                except Exception as exc:
                    enqueue_errors.append(f"job {i}: {type(exc).__name__}: {exc}"[:160])

        started = time.monotonic()
        await asyncio.gather(*(enqueue(i) for i in range(total)))
        reached = await asyncio.to_thread(ledger.reached_kill.wait, 60)
        killing = time.monotonic()
        processed_at_kill = len(ledger.runs)
        await engine.kill()
        # The worker keeps running jobs until the engine is really gone (the kill takes a while on a busy machine):
        # every job that ran from the grace period before the kill until the engine died counts as in flight.
        in_flight = ledger.in_flight(since=killing - IN_FLIGHT_GRACE_S)
        restarted = time.monotonic()
        engine = await EngineProcess.start(log, "--config", str(config), "--log-level", "WARNING")
        restart_s = time.monotonic() - restarted
        done = await asyncio.to_thread(ledger.all_done.wait, 60 if quick else 300)
        await asyncio.sleep(2.0)  # a measuring interval: late duplicates would show up here
        seconds = time.monotonic() - started
    finally:
        with contextlib.suppress(Exception):
            await client.shutdown_async()
        await engine.stop()
        with contextlib.suppress(Exception):
            redis = aioredis.Redis.from_url(REDIS_URL)
            keys = [k async for k in redis.scan_iter(match=f"{prefix}*", count=500)]
            if keys:
                await redis.delete(*keys)
            await redis.aclose()
    with ledger.lock:
        runs = Counter(ledger.runs)
    lost = [j for j in range(total) if runs[j] == 0]
    duplicated = [j for j, n in runs.items() if n > 1]
    bad_dupes = [j for j in duplicated if j not in in_flight]
    report.check("jobs enqueued", enqueued, enqueued == total, f"{total}", detail="; ".join(enqueue_errors[:2]))
    report.info("killed after", processed_at_kill, "jobs", detail=f"reached: {reached}; {len(in_flight)} in flight "
                f"at the kill; restart took {restart_s:.1f} s; all processed: {done}; {seconds:.1f} s in all")
    report.check("jobs lost", len(lost), not lost, "0", detail=f"e.g. {lost[:5]}" if lost else "")
    report.info("jobs processed exactly once", sum(1 for n in runs.values() if n == 1))
    report.info("duplicates of in-flight jobs (allowed)", len(duplicated) - len(bad_dupes))
    report.check("duplicates of jobs not in flight", len(bad_dupes), not bad_dupes, "0",
                 detail=f"e.g. {bad_dupes[:5]}" if bad_dupes else "")
    return report
