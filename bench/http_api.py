"""REST API module: requests per second and streamed download throughput, against a raw aiohttp baseline.

Baselines, measured in the same run with the same client:
  * requests: a bare aiohttp server answering the same JSON directly (the ceiling of the HTTP layer alone);
    the engine path adds an invocation to a worker and two per-request channels.
  * requests through a bare relay: an aiohttp handler that sends the request object to the same worker over one
    WebSocket and answers with its result (no routing, channels or bounds): the ceiling of any design that runs
    the handler in a worker, since that worker shares this process and its CPU is counted too.
  * download: a bare aiohttp server streaming the same bytes in 64 KiB chunks; the engine path carries them
    worker -> channel relay -> REST API -> client. Through the bare relay, the worker streams over a WebSocket of
    its own whose frames the handler writes to the response as they come: the floor of any design in which the
    bytes cross a worker's WebSocket (the second TCP hop, masking and frame handling are most of the cost).
    The engine's worker writes the same 64 KiB chunks twice over: as a raw
    ``websockets`` client (what the reference SDK does: the issue's row) and through our SDK's ``ChannelWriter``
    ("download, SDK writer": its fast send path; the 64 KiB writes stay 64 KiB frames, since the SDK splits
    writes at the engine's invited frame size but never joins them). The raw server's work is the same for both.

Each round measures raw, then engine, for both workloads; the ratios are per round, reported as median and spread,
by wall-clock rate and by CPU time per request / per 64 KiB chunk (the whole process: client, server and worker
share one loop, so the CPU ratio is what the same core would deliver and is far less noisy on a shared machine).

With ``--gc`` each round also measures raw and engine JSON requests under the cyclic-collector settings the
``iii-engine`` command applies once started (iii_engine.gc_policy: start-up objects frozen, young generation every
10,000 allocations), undone after each of those measurements; both sides run under them, so the ratio stays fair.

With ``--before DIR`` (an earlier checkout, e.g. ``git worktree add /tmp/wt 7c336e5``) a child process runs the
same rounds with that checkout's code, one round right after each of ours; each process measures its own CPU
against its own raw server, and the report adds its ratios and the engines' own numbers side by side.

With ``--instructions`` the JSON rows are measured instead by the instructions executed per request (valgrind's
cachegrind, no cache simulation: a run of ``--requests`` requests less one of none, each after the same set-up
and warm-up, divided by ``--requests``), for raw aiohttp, the engine and the bare relay, and with ``--before`` for
that checkout too. It is slow (about a minute per run, two runs at a time) but repeats to within about 0.3 %,
where CPU time on this shared machine wanders by 30 % from round to round: use it to tell a few per cent apart.
Needs ``valgrind`` (Debian's package).

Usage: .venv/bin/python bench/http_api.py [--requests N] [--concurrency C] [--mib M] [--rounds R] [--gc]
       [--before DIR] [--instructions]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import websockets
from aiohttp import web

# A plain script: use this checkout, or the one ``--checkout DIR`` names (the child ``--before`` starts).
sys.path.insert(0, str(Path(sys.argv[sys.argv.index("--checkout") + 1]).resolve() if "--checkout" in sys.argv
                       else Path(__file__).resolve().parents[1]))

from iii.channels import ChannelWriter
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


async def bare_relay() -> tuple[web.BaseRunner, Any, str, str]:
    """An aiohttp server that forwards each request to a worker over one WebSocket and answers with its result: the
    least work an HTTP-to-worker design can do (the floor of the engine's JSON path); ``/download`` has the worker
    stream over a WebSocket of its own, each frame written to the response as it comes (the floor of the
    download)."""
    waiting: dict[str, asyncio.Future[Any]] = {}
    streams: dict[str, tuple[asyncio.Future[Any], asyncio.Future[None]]] = {}
    sockets: list[Any] = []
    counter = iter(range(1 << 62))

    async def control(ws: Any) -> None:
        if ws.request.path.startswith("/ws/channels/"):  # the worker streaming a download: hand the socket over
            attached, done = streams.pop(ws.request.path.split("/")[3].split("?")[0])
            attached.set_result(ws)
            await done
            return
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

    async def download(request: web.BaseRequest) -> web.StreamResponse:
        # The worker's frames go straight from its socket to the response: no relay, queue or bounds.
        channel_id = f"c{next(counter)}"
        loop = asyncio.get_running_loop()
        attached: asyncio.Future[Any] = loop.create_future()
        done: asyncio.Future[None] = loop.create_future()
        streams[channel_id] = (attached, done)
        ref = {"channel_id": channel_id, "access_key": "k", "direction": "write"}
        await sockets[0].send(dumps({"type": "invokefunction", "invocation_id": f"i{next(counter)}",
                                     "function_id": "bench.download", "data": {"response": ref}}))
        ws = await attached
        response = web.StreamResponse()
        await response.prepare(request)
        try:
            async for message in ws:
                await response.write(message)
        finally:
            done.set_result(None)
        await response.write_eof()
        return response

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if request.path == "/download":
            return await download(request)
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
    for fid, path in (("bench.json", "json"), ("bench.download", "download"), ("bench.download_sdk", "download_sdk")):
        await ws.send(dumps({"type": "registerfunction", "id": fid}))
        await ws.send(dumps({"type": "registertrigger", "id": f"t-{fid}", "trigger_type": "http",
                             "function_id": fid, "config": {"api_path": path}}))
    await ws.send(dumps({"type": "ping"}))
    while loads(await ws.recv()).get("type") != "pong":
        pass
    block = b"x" * CHUNK

    async def stream(frame: dict[str, Any]) -> None:
        if frame["function_id"] == "bench.download_sdk":
            # Our SDK's writer: the same 64 KiB writes, sent through its fast path (iii.ws_fastpath).
            async with ChannelWriter(engine_url, frame["data"]["response"]) as writer:
                for start in range(0, size, CHUNK):
                    await writer.write(block[: min(CHUNK, size - start)])
        else:
            async with websockets.connect(channel_url(engine_url, frame["data"]["response"]),
                                          compression=None) as out:
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


Row = tuple[float, float]
Rows = dict[str, list[Row]]


async def setup(stack: contextlib.AsyncExitStack, size: int, relay: bool) -> dict[str, str]:
    """Start the raw server, the engine with its REST API and worker, and (``relay``) the bare relay and its
    worker; their base URLs by name (``raw``, ``api``, ``relay``)."""
    runner, raw_url = await raw_server(size)
    stack.push_async_callback(runner.cleanup)
    spec = ModuleSpec("modules::api::RestApiModule", {"host": "127.0.0.1", "port": 0})
    engine = await stack.enter_async_context(
        Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[spec])))
    urls = {"raw": raw_url, "api": getattr(engine.module("http_api"), "base_url", "")}
    serving = await worker(engine.url, size)
    stack.callback(serving.cancel)
    stack.callback(lambda: urls.__setitem__("lingering", str(len(engine.channels))))
    if relay:
        relay_runner, relay_ws, relay_ws_url, urls["relay"] = await bare_relay()
        stack.push_async_callback(relay_runner.cleanup)
        stack.callback(relay_ws.close)
        relay_serving = await worker(relay_ws_url, size)
        stack.callback(relay_serving.cancel)
    return urls


async def one_round(session: aiohttp.ClientSession, urls: dict[str, str], rows: Rows, total: int, concurrency: int,
                    size: int, tuned_gc: bool) -> None:
    """One interleaved round: raw, engine (and relay) JSON requests, the same under tuned GC, then downloads."""

    async def json(name: str, url: str) -> None:
        rows.setdefault(name, []).append(
            await timed(requests_per_s(session, f"{url}/json", total, concurrency), total))

    await json("raw_json", urls["raw"])
    await json("engine_json", urls["api"])
    if "relay" in urls:
        await json("relay_json", urls["relay"])
    if tuned_gc:
        with engine_gc():
            await json("raw_gc", urls["raw"])
        with engine_gc():
            await json("engine_gc", urls["api"])
    chunks = size / CHUNK
    rows.setdefault("raw_dl", []).append(await timed(download_mb_s(session, f"{urls['raw']}/download", size), chunks))
    rows.setdefault("engine_dl", []).append(
        await timed(download_mb_s(session, f"{urls['api']}/download", size), chunks))
    rows.setdefault("engine_dl_sdk", []).append(
        await timed(download_mb_s(session, f"{urls['api']}/download_sdk", size), chunks))
    if "relay" in urls:
        rows.setdefault("relay_dl", []).append(
            await timed(download_mb_s(session, f"{urls['relay']}/download", size), chunks))


async def serve_rounds(total: int, concurrency: int, mib: int, tuned_gc: bool) -> None:
    """The ``--before`` child: one round per line on stdin, its rows as one JSON line on stdout."""
    size = mib * 1024 * 1024
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as stack:
        urls = await setup(stack, size, relay=False)
        async with aiohttp.ClientSession() as session:
            await requests_per_s(session, f"{urls['api']}/json", 50, 4)  # warm-up
            print(dumps({"ready": True}), flush=True)
            while await loop.run_in_executor(None, sys.stdin.readline):
                rows: Rows = {}
                await one_round(session, urls, rows, total, concurrency, size, tuned_gc)
                print(dumps(rows), flush=True)


class Before:
    """The same bench run by another checkout's code in a child process, one round at a time on request, so
    its rounds interleave with ours (each process measures its own CPU, against its own raw server)."""

    def __init__(self, checkout: Path, argv: list[str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve-rounds", "--checkout", str(checkout), *argv],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.rows: Rows = {}
        assert loads(self._line()).get("ready")

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"--before child exited with {self.process.wait()}")
        return line

    async def round(self) -> None:
        """Run one round in the child (this process waits, idle) and keep its rows."""
        assert self.process.stdin is not None
        self.process.stdin.write("round\n")
        self.process.stdin.flush()
        line = await asyncio.get_running_loop().run_in_executor(None, self._line)
        for name, rows in loads(line).items():
            self.rows.setdefault(name, []).extend(tuple(row) for row in rows)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(30)


async def main(total: int, concurrency: int, mib: int, rounds: int, tuned_gc: bool = False,
               before: Path | None = None) -> None:
    size = mib * 1024 * 1024
    rows: Rows = {}
    child_args = ["--requests", str(total), "--concurrency", str(concurrency), "--mib", str(mib)]
    old = Before(before, child_args + (["--gc"] if tuned_gc else [])) if before is not None else None
    try:
        async with contextlib.AsyncExitStack() as stack:
            urls = await setup(stack, size, relay=True)
            async with aiohttp.ClientSession() as session:
                await requests_per_s(session, f"{urls['api']}/json", 50, 4)  # warm-up
                await requests_per_s(session, f"{urls['relay']}/json", 50, 4)
                before_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                for _ in range(rounds):  # interleaved, so load from elsewhere hits both sides alike
                    await one_round(session, urls, rows, total, concurrency, size, tuned_gc)
                    if old is not None:
                        await old.round()
                growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before_rss
    finally:
        if old is not None:
            old.close()
    print(f"{rounds} interleaved rounds; JSON: {total} requests at concurrency {concurrency}; download: {mib} MiB "
          f"in 64 KiB chunks; ratio = engine / raw aiohttp (higher is better), median [min-max]")
    print(summary("JSON requests", rows["raw_json"], rows["engine_json"], "/s"))
    print(summary("JSON, bare relay (floor)", rows["raw_json"], rows["relay_json"], "/s"))
    print(summary("JSON, engine / floor", rows["relay_json"], rows["engine_json"], "/s"))
    print(summary(f"download {mib} MiB", rows["raw_dl"], rows["engine_dl"], " MB/s"))
    print(summary("download, SDK writer", rows["raw_dl"], rows["engine_dl_sdk"], " MB/s"))
    print(summary("download, bare relay (floor)", rows["raw_dl"], rows["relay_dl"], " MB/s"))
    print(summary("download, engine / floor", rows["relay_dl"], rows["engine_dl"], " MB/s"))
    if tuned_gc:
        print(summary("JSON, both tuned GC", rows["raw_gc"], rows["engine_gc"], "/s"))
        print(summary("JSON, engine tuned/not", rows["engine_json"], rows["engine_gc"], "/s"))
    if old is not None:
        theirs = old.rows
        print(f"--before {before} (its own process, rounds interleaved with the above):")
        print(summary("  JSON requests", theirs["raw_json"], theirs["engine_json"], "/s"))
        print(summary(f"  download {mib} MiB", theirs["raw_dl"], theirs["engine_dl"], " MB/s"))
        print(summary("  download, SDK writer", theirs["raw_dl"], theirs["engine_dl_sdk"], " MB/s"))
        if tuned_gc:
            print(summary("  JSON, both tuned GC", theirs["raw_gc"], theirs["engine_gc"], "/s"))
        print("  new / before, engine alone (raw of each process as the yardstick: ratio of the ratios above is "
              "the fair one; these compare the engines' own numbers):")
        print(summary("  JSON, before -> new", theirs["engine_json"], rows["engine_json"], "/s"))
        print(summary("  download, before -> new", theirs["engine_dl"], rows["engine_dl"], " MB/s"))
        print(summary("  SDK writer, before -> new", theirs["engine_dl_sdk"], rows["engine_dl_sdk"], " MB/s"))
    print(f"max RSS grew {growth:.0f} MB over the rounds; channels still held by the relay after the run: "
          f"{urls.get('lingering')}")


async def load(target: str, total: int, concurrency: int) -> None:
    """The ``--instructions`` child: set up, warm up, then ``total`` JSON requests to ``target`` and exit."""
    async with contextlib.AsyncExitStack() as stack:
        urls = await setup(stack, CHUNK, relay=target == "relay")
        async with aiohttp.ClientSession() as session:
            await requests_per_s(session, f"{urls[target]}/json", 300, concurrency)
            if total:
                await requests_per_s(session, f"{urls[target]}/json", total, concurrency)


def instructions(checkout: Path, target: str, total: int, concurrency: int) -> float:
    """Instructions executed per JSON request to ``target`` by ``checkout``'s code (see ``--instructions``)."""

    def run(count: int) -> int:
        command = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                   sys.executable, __file__, "--load", target, "--requests", str(count), "--concurrency",
                   str(concurrency), "--checkout", str(checkout)]
        # a fixed hash seed: dict and set layouts, hence the work, repeat from run to run
        out = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"},
                             check=True).stderr
        found = re.search(r"I\s+refs:\s+([\d,]+)", out)
        if found is None:
            raise RuntimeError(f"no instruction count from valgrind: {out[-500:]}")
        return int(found.group(1).replace(",", ""))

    return (run(total) - run(0)) / total


def count_instructions(total: int, concurrency: int, before: Path | None) -> None:
    """The ``--instructions`` report: instructions per JSON request, and the ratios they give."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    checkouts = {"new": Path(__file__).resolve().parents[1]}
    if before is not None:
        checkouts["before"] = before.resolve()
    jobs = [(name, target) for name in checkouts for target in ("raw", "api", "relay")]
    with ThreadPoolExecutor(2) as pool:  # one valgrind per core
        counts = dict(zip(jobs, pool.map(lambda job: instructions(checkouts[job[0]], job[1], total, concurrency),
                                         jobs), strict=True))
    print(f"JSON requests at concurrency {concurrency}: instructions per request (a run of {total} less one of "
          f"none); ratio = raw / engine, as CPU time gives it")
    for name in checkouts:
        raw, api, relay = (counts[name, target] for target in ("raw", "api", "relay"))
        print(f"{name:<7} raw {raw:9.0f}  engine {api:9.0f}  floor {relay:9.0f}  engine ratio {raw / api:.3f}  "
              f"floor ratio {raw / relay:.3f}  engine / floor {relay / api:.3f}")
    if before is not None:
        print(f"engine, before -> new: {counts['before', 'api']:.0f} -> {counts['new', 'api']:.0f} "
              f"({counts['new', 'api'] / counts['before', 'api'] - 1:+.1%})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--gc", action="store_true", help="also measure JSON requests under iii-engine's GC settings")
    parser.add_argument("--before", type=Path, help="also run this earlier checkout's code (e.g. a `git worktree`) "
                                                    "in a child process, its rounds interleaved with ours")
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions per JSON request under valgrind instead (slow, but repeatable)")
    parser.add_argument("--checkout", type=Path, help=argparse.SUPPRESS)  # read before the imports (_checkout)
    parser.add_argument("--serve-rounds", action="store_true", help=argparse.SUPPRESS)  # the --before child
    parser.add_argument("--load", choices=("raw", "api", "relay"), help=argparse.SUPPRESS)  # --instructions' child
    args = parser.parse_args()
    if args.load:
        asyncio.run(load(args.load, args.requests, args.concurrency))
    elif args.instructions:
        count_instructions(args.requests, args.concurrency, args.before)
    elif args.serve_rounds:
        asyncio.run(serve_rounds(args.requests, args.concurrency, args.mib, args.gc))
    else:
        asyncio.run(main(args.requests, args.concurrency, args.mib, args.rounds, args.gc, args.before))
