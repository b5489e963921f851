"""Channels: transfers through an in-process engine (so the relay's live channel count can be read): a third
normal, a third whose writer dies mid-stream (SIGKILLed subprocess, cancelled task, dropped connection, explicit
abort), a third into slow readers.

Targets: 0 silent truncations (EOF with fewer or different bytes and no error), 0 false errors, 0 hangs, 0
channels left in the engine afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import websockets

from iii import register_worker
from iii.channels import ChannelReader, ChannelWriter
from iii_engine import Engine, EngineConfig
from iii_engine.modules.http.channels import channel_url

from .common import MIB, ROOT, Report, child_env

SIZES = (0, 1, 1000, 65_536, 65_537, 300_000, 1 * MIB, 3 * MIB + 7)
CHUNK = 65_536
BLOCK = os.urandom(3 * MIB + 8)
KILL_KINDS = ("sigkill", "cancel", "drop", "abort")


def payload(i: int, size: int) -> bytes:
    """The bytes of transfer ``i``: its number first, so cross-talk between channels shows."""
    return (i.to_bytes(8, "big") + BLOCK)[:size]


async def read(ref: dict[str, Any], url: str, delay: float) -> tuple[str, bytes | BaseException]:
    """Read a whole channel: ``("eof", data)`` or ``("error", exc)``; ``delay`` s per chunk for slow readers."""
    reader = ChannelReader(url, ref)
    parts: list[bytes] = []
    try:
        async for chunk in reader:
            parts.append(chunk)
            if delay:
                await asyncio.sleep(delay)
        return "eof", b"".join(parts)
    except Exception as exc:  # an error is the expected outcome for killed writers
        return "error", exc
    finally:
        with contextlib.suppress(Exception):
            await reader.close_async()


async def write_all(ref: dict[str, Any], url: str, data: bytes) -> BaseException | None:
    """Write ``data`` and close normally; the error, if any."""
    try:
        async with ChannelWriter(url, ref) as writer:
            for at in range(0, len(data), CHUNK):
                await writer.write(data[at:at + CHUNK])
        return None
    except Exception as exc:
        return exc


async def write_and_die(kind: str, ref: dict[str, Any], url: str, half: int) -> None:
    """Write at least ``half`` bytes, then die the way ``kind`` says; never closes normally."""
    chunk = bytes(range(256)) * 256
    if kind == "sigkill":
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.chaos.channel_writer", channel_url(url, ref), "--announce-after",
            str(half), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=child_env(),
            cwd=ROOT)
        assert proc.stdout is not None
        try:
            await asyncio.wait_for(proc.stdout.readline(), 20)
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    elif kind == "drop":
        ws = await websockets.connect(channel_url(url, ref), compression=None, ping_interval=None)
        sent = 0
        while sent < half:
            await ws.send(chunk)
            sent += len(chunk)
        ws.transport.abort()  # no close frame: the TCP connection just goes away
    else:
        async def body(writer: ChannelWriter) -> None:
            sent = 0
            while True:
                await writer.write(chunk)
                sent += len(chunk)
                if sent >= half:
                    if kind == "abort":
                        await writer.abort("chaos: aborted mid-stream")
                        return
                    await asyncio.sleep(3600)  # cancelled here, in the middle of the stream

        async def run() -> None:
            async with ChannelWriter(url, ref) as writer:  # the documented form: an exception aborts
                await body(writer)

        task = asyncio.create_task(run())
        if kind == "cancel":
            await asyncio.sleep(0.05 if half < MIB else 0.2)  # let it write, then cancel it mid-stream
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def run(quick: bool, workdir: Path) -> Report:
    """Run the channels scenario and return its figures."""
    report = Report("channels")
    total = 24 if quick else 1_000  # 24: every size, every kind of death
    timeout = 20.0 if quick else 30.0
    outcome: Counter[str] = Counter()
    samples: list[str] = []
    moved = 0
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as engine:
        client = await asyncio.to_thread(register_worker, engine.url)  # it blocks until connected
        url = engine.url
        limit = asyncio.Semaphore(8)

        async def transfer(i: int) -> None:
            nonlocal moved
            size = SIZES[(i // 3) % len(SIZES)]
            kind = ("normal", "killed", "slow")[i % 3]
            sub = KILL_KINDS[(i // 3) % len(KILL_KINDS)] if kind == "killed" else kind
            async with limit:
                refs = await client.trigger_async({"function_id": "engine::channels::create", "payload": {}})
                data = payload(i, size)
                reading = asyncio.create_task(read(refs["reader"], url, 0.003 if kind == "slow" else 0.0))
                if kind == "killed":
                    writing: asyncio.Task[Any] = asyncio.create_task(
                        write_and_die(sub, refs["writer"], url, max(CHUNK, size // 2)))
                else:
                    writing = asyncio.create_task(write_all(refs["writer"], url, data))
                _, pending = await asyncio.wait({reading, writing}, timeout=timeout)
                if pending:
                    for task in pending:
                        task.cancel()
                    await asyncio.gather(*pending, return_exceptions=True)
                    outcome["hang"] += 1
                    samples.append(f"#{i} {sub} {size} B: hang ({'reader' if reading in pending else 'writer'})")
                    return
                status, got = reading.result()
                if kind == "killed":
                    if status == "eof":
                        outcome["silent_truncation"] += 1
                        samples.append(f"#{i} {sub} {size} B: killed writer seen as EOF after {len(got)} B")  # type: ignore[arg-type]
                    else:
                        outcome["ok"] += 1
                    return
                werr = writing.result()
                if status == "eof" and got == data and werr is None:
                    outcome["ok"] += 1
                    moved += size
                elif status == "eof" and got != data:
                    outcome["silent_truncation"] += 1
                    samples.append(f"#{i} {sub} {size} B: EOF with {len(got)} B, different bytes")  # type: ignore[arg-type]
                else:
                    outcome["false_error"] += 1
                    samples.append(f"#{i} {sub} {size} B: reader {status} {got if status == 'error' else ''!r}, "
                                   f"writer {werr!r}"[:200])

        started = time.monotonic()
        await asyncio.gather(*(transfer(i) for i in range(total)))
        seconds = time.monotonic() - started
        await client.shutdown_async()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(engine.channels.wait_idle(), 5.0)
        left = len(engine.channels)
    report.info("transfers", total, detail=f"{seconds:.1f} s, {moved / MIB / max(seconds, 1e-9):.0f} MiB/s of "
                "verified payload; sizes 0 B to 3 MiB; killed via " + "/".join(KILL_KINDS))
    report.info("transfers ok", outcome["ok"])
    detail = "; ".join(samples[:3])
    report.check("silent truncations", outcome["silent_truncation"], outcome["silent_truncation"] == 0, "0",
                 detail=detail)
    report.check("false errors", outcome["false_error"], outcome["false_error"] == 0, "0", detail=detail)
    report.check("hangs", outcome["hang"], outcome["hang"] == 0, "0", detail=f"bounded at {timeout:g} s; {detail}")
    report.check("channels left in engine", left, left == 0, "0", detail="after 5 s for the relay to go idle")
    return report
