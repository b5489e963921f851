"""REST API: bodies of every size up to and past the JSON body limit (64 MiB), streamed raw bodies, and hostile
clients that stall in the body or dribble their headers, while a legitimate request must keep succeeding.

Targets: every body intact or refused with 413; idle-body and slow-header clients cut off (408 or the connection
closed) within ``CUTOFF_S`` (the module's header/body timeouts set to 5 s); every legitimate request during
the attack succeeds in under 1 s; no channel left.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from pathlib import Path
from typing import Any

import aiohttp

from iii import register_worker
from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.http.settings import ApiSettings

from .common import HOST, MIB, Report

CUTOFF_S = 10.0
# Shorter than the 30 s defaults so the run stays short; applied only where the module knows the keys.
HOSTILE_TIMEOUTS = {"header_timeout": 5000, "body_timeout": 5000}


def api_settings() -> dict[str, Any]:
    """The REST module's settings for this run: free port, and the hostile-client timeouts when supported."""
    settings: dict[str, Any] = {"host": HOST, "port": 0}
    try:
        ApiSettings.parse({**settings, **HOSTILE_TIMEOUTS})
        settings.update(HOSTILE_TIMEOUTS)
    except ValueError:
        pass  # an engine without these keys: judged against CUTOFF_S all the same
    return settings


async def echo(data: Any) -> dict[str, Any]:
    """The HTTP handler: length and SHA-256 of the body it got (parsed JSON string, or the raw stream)."""
    body = data.get("body")
    if isinstance(body, dict) and isinstance(body.get("blob"), str):
        raw = body["blob"].encode()
    else:
        raw = await data["request_body"].read_all()
    return {"status_code": 200, "body": {"len": len(raw), "sha": hashlib.sha256(raw).hexdigest()}}


async def hostile(port: int, kind: str) -> tuple[str, float]:
    """An idle-body or slow-header client; returns how it ended and after how many seconds."""
    reader, writer = await asyncio.open_connection(HOST, port)
    started = time.monotonic()
    try:
        if kind == "idle_body":
            writer.write(b"POST /chaos/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                         b"Content-Length: 100000\r\n\r\n0123456789")
            await writer.drain()
        else:
            writer.write(b"POST /chaos/echo HTTP/1.1\r\n")
        deadline = started + CUTOFF_S + 2
        while time.monotonic() < deadline:
            if kind == "slow_header":
                writer.write(b"X")  # one header byte every 0.5 s, never finishing the line
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
            try:
                data = await asyncio.wait_for(reader.read(4096), 0.5)
            except TimeoutError:
                continue
            except ConnectionError:
                return "reset", time.monotonic() - started
            if not data:
                return "closed", time.monotonic() - started
            status = data.split(b"\r\n", 1)[0]
            return status.decode(errors="replace"), time.monotonic() - started
        return "still open", time.monotonic() - started
    finally:
        writer.transport.abort()


async def run(quick: bool, workdir: Path) -> Report:
    """Run the REST scenario and return its figures."""
    report = Report("rest")
    hostiles = 4 if quick else 200
    api = ModuleSpec("modules::api::RestApiModule", api_settings())
    bad: list[str] = []
    refused = intact = 0
    async with Engine(config=EngineConfig(host=HOST, port=0, modules=[api])) as engine:
        client = await asyncio.to_thread(register_worker, engine.url)
        client.register_function("chaos::echo", echo)
        client.register_trigger({"type": "http", "function_id": "chaos::echo",
                                 "config": {"api_path": "chaos/echo", "http_method": "POST"}})
        module: Any = engine.module("http_api")
        port = module.port
        # The body limit the module enforces (max_body_bytes), else the JSON limit it had before: 64 MiB.
        limit = int(getattr(module.settings, "max_body_bytes", 64 * MIB))
        json_sizes = [0, 1, 1000, MIB, 16 * MIB, limit, limit + 1] if quick else \
            [0, 1, 1000, 65_536, MIB, 8 * MIB, 32 * MIB, limit - 1, limit, limit + 1, limit + MIB]
        raw_sizes = [0, 1, MIB, 16 * MIB, limit + 1] if quick else \
            [0, 1, 65_536, MIB, 16 * MIB, limit, limit + 1, 2 * limit]
        base = f"http://{HOST}:{port}/chaos/echo"
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            for _ in range(100):  # the trigger registration travels asynchronously
                async with http.post(base, json={"blob": ""}) as resp:
                    if resp.status == 200:
                        break
                await asyncio.sleep(0.05)

            async def send(size: int, as_json: bool) -> None:
                nonlocal refused, intact
                if as_json:
                    overhead = len(b'{"blob":""}')
                    blob = b"a" * max(0, size - overhead)
                    body, headers = b'{"blob":"' + blob + b'"}', {"Content-Type": "application/json"}
                    expect = blob
                else:
                    body = expect = (b"0123456789abcdef" * (size // 16 + 1))[:size]
                    headers = {"Content-Type": "application/octet-stream"}
                try:
                    async with http.post(base, data=body, headers=headers) as resp:
                        got = await resp.json(content_type=None) if resp.status == 200 else None
                        if resp.status == 413:
                            refused += 1
                        elif (resp.status == 200 and got == {"len": len(expect),
                                                              "sha": hashlib.sha256(expect).hexdigest()}):
                            intact += 1
                        else:
                            bad.append(f"{'json' if as_json else 'raw'} {len(body)} B: {resp.status} {str(got)[:80]}")
                except Exception as exc:
                    bad.append(f"{'json' if as_json else 'raw'} {len(body)} B: {type(exc).__name__}: {exc}"[:160])

            started = time.monotonic()
            for size in json_sizes:
                await send(size, True)
            for size in raw_sizes:
                await send(size, False)
            bodies_s = time.monotonic() - started
            oversized_json_ok = all(not (s > limit and f"json {s} B" in " ".join(bad)) for s in json_sizes)

            legit_latency: list[float] = []
            legit_failures: list[str] = []
            stop = asyncio.Event()

            async def legit() -> None:
                while not stop.is_set():
                    t0 = time.perf_counter()
                    try:
                        async with http.post(base, json={"blob": "ok"},
                                             timeout=aiohttp.ClientTimeout(total=5)) as resp:
                            if resp.status != 200:
                                legit_failures.append(f"status {resp.status}")
                            await resp.read()
                    except Exception as exc:
                        legit_failures.append(f"{type(exc).__name__}: {exc}"[:120])
                    legit_latency.append(time.perf_counter() - t0)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.1)

            legit_task = asyncio.create_task(legit())
            ends = await asyncio.gather(*(hostile(port, "idle_body" if i % 2 == 0 else "slow_header")
                                          for i in range(hostiles)))
            stop.set()
            await legit_task
        await client.shutdown_async()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(engine.channels.wait_idle(), 5.0)
        left = len(engine.channels)
    report.info("bodies sent", len(json_sizes) + len(raw_sizes),
                detail=f"JSON up to {max(json_sizes):,} B, raw up to {max(raw_sizes):,} B; {bodies_s:.1f} s")
    report.check("bodies neither intact nor 413", len(bad), not bad, "0", detail="; ".join(bad[:3]))
    report.info("bodies intact / refused 413", f"{intact} / {refused}")
    report.check("JSON past the limit refused", "yes" if oversized_json_ok else "no", oversized_json_ok, "413")
    for kind in ("idle_body", "slow_header"):
        mine = [e for i, e in enumerate(ends) if (i % 2 == 0) == (kind == "idle_body")]
        not_cut = [e for e in mine if e[0] == "still open" or e[1] > CUTOFF_S]
        worst = max((e[1] for e in mine), default=0.0)
        report.check(f"{kind} clients not cut off", len(not_cut), not not_cut, f"0 within {CUTOFF_S:g} s",
                     detail=f"of {len(mine)}; slowest ended after {worst:.1f} s; ends seen: "
                     + ", ".join(sorted({e[0] for e in mine})))
    report.check("legit requests failed during attack", len(legit_failures), not legit_failures and bool(legit_latency),
                 "0", detail=f"of {len(legit_latency)}; " + "; ".join(legit_failures[:2]))
    report.at_most("legit max latency during attack", round(max(legit_latency, default=99) * 1000, 1), 1000, "ms")
    report.check("channels left in engine", left, left == 0, "0")
    return report
