"""REST API module: requests per second and streamed download throughput, against a raw aiohttp baseline.

Baselines, measured in the same run with the same client:
  * requests: a bare aiohttp server answering the same JSON directly (the ceiling of the HTTP layer alone);
    the engine path adds an invocation to a worker and two per-request channels.
  * requests through a bare relay: an aiohttp handler that sends the request object to the same worker over one
    WebSocket and answers with its result (no routing, channels or bounds): the ceiling of any design that runs
    the handler in a worker, since that worker shares this process and its CPU is counted too.
  * download: a bare aiohttp server streaming the same bytes in 64 KiB chunks; the engine path carries them
    worker -> channel relay -> REST API -> client.

Each round measures raw, then engine, for both workloads; the ratios are per round, reported as median and spread,
by wall-clock rate and by CPU time per request / per 64 KiB chunk (the whole process: client, server and worker
share one loop, so the CPU ratio is what the same core would deliver and is far less noisy on a shared machine).

With ``--gc`` each round also measures raw and engine JSON requests under the cyclic-collector settings the
``iii-engine`` command applies once started (iii_engine.gc_policy: start-up objects frozen, young generation every
10,000 allocations), undone after each of those measurements; both sides run under them, so the ratio stays fair.

Usage: .venv/bin/python bench/http_api.py [--requests N] [--concurrency C] [--mib M] [--rounds R] [--gc]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import websockets
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a plain script: use the checkout

from iii.wire import dumps, loads
from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.http.channels import channel_url

CHUNK = 64 * 1024
ANSWER = {"status_code": 200, "body": {"ok": True}}


async def raw_server(size: int) -> tuple[web.AppRunner, str]:
    block = b"x" * CHUNK

    async def json_route(request: web.Request) -> web.Response:
        return web.json_response(ANSWER["body"])

    async def download(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for start in range(0, size, CHUNK):
            await response.write(block[: min(CHUNK, size - start)])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/json", json_route)
    app.router.add_get("/download", download)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def bare_relay() -> tuple[web.AppRunner, Any, str, str]:
    """An aiohttp server whose one route forwards each request to a worker over one WebSocket and answers with its
    result: the least work an HTTP-to-worker design can do (the floor of the engine's JSON path)."""
    waiting: dict[str, asyncio.Future[Any]] = {}
    sockets: list[Any] = []
    counter = iter(range(1 << 62))

    async def control(ws: Any) -> None:
        sockets.append(ws)
        await ws.send(dumps({"type": "workerregistered", "worker_id": "bench"}))
        async for raw in ws:
            frame = loads(raw)
            kind = frame.get("type")
            if kind == "ping":
                await ws.send(dumps({"type": "pong"}))
            elif kind == "invocationresult":
                future = waiting.pop(frame["invocation_id"], None)
                if future is not None:
                    future.set_result(frame.get("result"))

    async def handle(request: web.BaseRequest) -> web.Response:
        invocation_id = f"i{next(counter)}"
        future = asyncio.get_running_loop().create_future()
        waiting[invocation_id] = future
        data = {"path_params": {}, "query_params": dict(request.query),
                "headers": {k.lower(): v for k, v in request.headers.items()}, "path": "json", "method": "GET",
                "body": None, "trigger": {"type": "http", "path": "json", "method": "GET"}}
        await sockets[0].send(dumps({"type": "invokefunction", "invocation_id": invocation_id,
                                     "function_id": "bench.json", "data": data}))
        result = await future
        return web.Response(body=dumps(result["body"]).encode(), content_type="application/json")

    ws_server = await websockets.serve(control, "127.0.0.1", 0, compression=None)
    runner = web.ServerRunner(web.Server(handle), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    ws_port = next(iter(ws_server.sockets)).getsockname()[1]
    return runner, ws_server, f"ws://127.0.0.1:{ws_port}", f"http://127.0.0.1:{runner.addresses[0][1]}"


async def worker(engine_url: str, size: int) -> asyncio.Task[None]:
    """A raw worker: answers ``bench.json`` with JSON and ``bench.download`` by streaming ``size`` bytes."""
    ws = await websockets.connect(engine_url, compression=None, max_size=None)
    await ws.recv()
    for fid, path in (("bench.json", "json"), ("bench.download", "download")):
        await ws.send(dumps({"type": "registerfunction", "id": fid}))
        await ws.send(dumps({"type": "registertrigger", "id": f"t-{fid}", "trigger_type": "http",
                             "function_id": fid, "config": {"api_path": path}}))
    await ws.send(dumps({"type": "ping"}))
    while loads(await ws.recv()).get("type") != "pong":
        pass
    block = b"x" * CHUNK

    async def stream(frame: dict[str, Any]) -> None:
        async with websockets.connect(channel_url(engine_url, frame["data"]["response"]), compression=None) as out:
            for start in range(0, size, CHUNK):
                await out.send(block[: min(CHUNK, size - start)])
        await ws.send(dumps({"type": "invocationresult", "invocation_id": frame["invocation_id"],
                             "function_id": frame["function_id"]}))

    async def serve() -> None:
        tasks = set()
        async for raw in ws:
            frame = loads(raw)
            if frame.get("type") != "invokefunction":
                continue
            if frame["function_id"] == "bench.json":
                await ws.send(dumps({"type": "invocationresult", "invocation_id": frame["invocation_id"],
                                     "function_id": frame["function_id"], "result": ANSWER}))
            else:
                task = asyncio.ensure_future(stream(frame))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    return asyncio.ensure_future(serve())


async def requests_per_s(session: aiohttp.ClientSession, url: str, total: int, concurrency: int) -> float:
    remaining = total

    async def one_client() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            async with session.get(url) as response:
                assert response.status == 200, response.status
                await response.read()

    start = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return total / (time.perf_counter() - start)


async def download_mb_s(session: aiohttp.ClientSession, url: str, size: int) -> float:
    start = time.perf_counter()
    got = 0
    async with session.get(url) as response:
        async for chunk in response.content.iter_chunked(CHUNK):
            got += len(chunk)
    assert got == size, (got, size)
    return size / (time.perf_counter() - start) / 1e6


async def timed(run: Any, units: float) -> tuple[float, float]:
    """``(rate, CPU microseconds per unit)`` of one measurement (CPU of this whole process: client included)."""
    cpu = time.process_time()
    rate = await run
    return rate, (time.process_time() - cpu) / units * 1e6


def summary(label: str, raw: list[tuple[float, float]], engine: list[tuple[float, float]], unit: str) -> str:
    """Median and spread of the per-round ratios, by wall-clock rate and by CPU per unit (less noisy)."""
    rate = [e[0] / r[0] for r, e in zip(raw, engine, strict=True)]
    cpu = [r[1] / e[1] for r, e in zip(raw, engine, strict=True)]
    return (f"{label:<22} raw {statistics.median(r[0] for r in raw):8.1f}{unit}  engine "
            f"{statistics.median(e[0] for e in engine):8.1f}{unit}  ratio {statistics.median(rate):.2f} "
            f"[{min(rate):.2f}-{max(rate):.2f}]   CPU/unit raw {statistics.median(r[1] for r in raw):6.0f} us  "
            f"engine {statistics.median(e[1] for e in engine):6.0f} us  CPU ratio {statistics.median(cpu):.2f} "
            f"[{min(cpu):.2f}-{max(cpu):.2f}]")


@contextlib.contextmanager
def engine_gc() -> Any:
    """The collector settings of the iii-engine command for the duration of one measurement."""
    from iii_engine.gc_policy import tune_gc

    saved = gc.get_threshold()
    tune_gc({})
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)


async def main(total: int, concurrency: int, mib: int, rounds: int, tuned_gc: bool = False) -> None:
    size = mib * 1024 * 1024
    runner, raw_url = await raw_server(size)
    spec = ModuleSpec("modules::api::RestApiModule", {"host": "127.0.0.1", "port": 0})
    raw_json: list[tuple[float, float]] = []
    engine_json: list[tuple[float, float]] = []
    relay_json: list[tuple[float, float]] = []
    raw_dl: list[tuple[float, float]] = []
    engine_dl: list[tuple[float, float]] = []
    raw_gc: list[tuple[float, float]] = []
    engine_gc_json: list[tuple[float, float]] = []
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[spec])) as engine:
        module = engine.module("http_api")
        api_url = getattr(module, "base_url", "")
        serving = await worker(engine.url, size)
        relay_runner, relay_ws, relay_ws_url, relay_url = await bare_relay()
        relay_serving = await worker(relay_ws_url, size)
        async with aiohttp.ClientSession() as session:
            await requests_per_s(session, f"{api_url}/json", 50, 4)  # warm-up
            await requests_per_s(session, f"{relay_url}/json", 50, 4)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            for _ in range(rounds):  # interleaved, so load from elsewhere hits both sides alike
                raw_json.append(await timed(requests_per_s(session, f"{raw_url}/json", total, concurrency), total))
                engine_json.append(await timed(requests_per_s(session, f"{api_url}/json", total, concurrency),
                                               total))
                relay_json.append(await timed(requests_per_s(session, f"{relay_url}/json", total, concurrency),
                                              total))
                if tuned_gc:
                    with engine_gc():
                        raw_gc.append(await timed(requests_per_s(session, f"{raw_url}/json", total, concurrency),
                                                  total))
                    with engine_gc():
                        engine_gc_json.append(await timed(
                            requests_per_s(session, f"{api_url}/json", total, concurrency), total))
                chunks = size / CHUNK
                raw_dl.append(await timed(download_mb_s(session, f"{raw_url}/download", size), chunks))
                engine_dl.append(await timed(download_mb_s(session, f"{api_url}/download", size), chunks))
            growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
        lingering = len(engine.channels)
        serving.cancel()
        relay_serving.cancel()
        relay_ws.close()
        await relay_runner.cleanup()
    await runner.cleanup()
    print(f"{rounds} interleaved rounds; JSON: {total} requests at concurrency {concurrency}; download: {mib} MiB "
          f"in 64 KiB chunks; ratio = engine / raw aiohttp (higher is better), median [min-max]")
    print(summary("JSON requests", raw_json, engine_json, "/s"))
    print(summary("JSON, bare relay (floor)", raw_json, relay_json, "/s"))
    print(summary("JSON, engine / floor", relay_json, engine_json, "/s"))
    print(summary(f"download {mib} MiB", raw_dl, engine_dl, " MB/s"))
    if tuned_gc:
        print(summary("JSON, both tuned GC", raw_gc, engine_gc_json, "/s"))
        print(summary("JSON, engine tuned/not", engine_json, engine_gc_json, "/s"))
    print(f"max RSS grew {growth:.0f} MB over the rounds; channels still held by the relay after the run: {lingering}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--gc", action="store_true", help="also measure JSON requests under iii-engine's GC settings")
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.concurrency, args.mib, args.rounds, args.gc))
