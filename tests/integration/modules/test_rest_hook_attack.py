"""Attack on the REST API's call hook (``Started.hook``) and the folded ``_handle``: every way a worker's call can end
while REST requests wait for it (a client leaving as the result comes, a deadline as the result comes, the engine's
stop, a worker leaving and coming back, a thousand at once) answers each request exactly once and leaves nothing
behind; and the hook itself: one that raises, one set after the call ended, a call ended twice."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
import websockets

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.invocations import Started
from iii_engine.modules.http.api import _DEADLINE, RestApiModule
from iii_engine.modules.http.channels import channel_url
from tests.integration.engine.raw import RawWorker
from tests.integration.modules.test_http_api import answer, worker_with_route

pytestmark = pytest.mark.our_engine("configures the REST API module and reads its pending table")


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


async def _start(stack: AsyncExitStack, default_timeout: int = 20_000, limit: int = 1024,
                 invocation_timeout_ms: int | None = None) -> tuple[Engine, RestApiModule]:
    spec = ModuleSpec("modules::api::RestApiModule", {"host": "127.0.0.1", "port": 0,
                                                      "default_timeout": default_timeout,
                                                      "concurrency_request_limit": limit})
    config = EngineConfig(host="127.0.0.1", port=0, modules=[spec], invocation_timeout_ms=invocation_timeout_ms)
    engine = await stack.enter_async_context(Engine(config=config))
    module = engine.module("http_api")
    assert isinstance(module, RestApiModule), engine.unavailable_modules
    return engine, module


async def _until(check: Callable[[], bool], what: str, wait: float = 10) -> None:
    """Poll ``check`` each loop pass (the engine's clean-up is spread over its own tasks; no event says "all
    done"), failing with ``what`` after ``wait`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while not check():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.01)


async def _nothing_left(engine: Engine, module: RestApiModule) -> None:
    await _until(lambda: not engine.invocations.pending and not module._races and module.in_flight == 0
                 and len(engine.channels) == 0 and not module._background,
                 f"left behind: pending={len(engine.invocations.pending)} races={len(module._races)} "
                 f"in_flight={module.in_flight} channels={len(engine.channels)} background={len(module._background)}")


def _answering(worker: RawWorker, delay: Callable[[], float] | None = None) -> asyncio.Task[None]:
    """A task answering every call the worker gets with ``{"n": <the request's n>}`` (after ``delay()`` s)."""

    async def reply(frame: dict[str, Any]) -> None:
        if delay is not None:
            await asyncio.sleep(delay())
        await answer(worker, frame, {"status_code": 200, "body": {"n": frame["data"]["query_params"]["n"]}})

    async def serve() -> None:
        replies: set[asyncio.Task[None]] = set()
        async for raw in worker.ws:
            frame = json.loads(raw)
            if frame.get("type") == "invokefunction":
                task = asyncio.ensure_future(reply(frame))
                replies.add(task)
                task.add_done_callback(replies.discard)

    return asyncio.ensure_future(serve())


async def _raw_get(port: int, target: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A GET on a connection of its own (httpx's pool is far slower than the engine at a thousand at once)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def _raw_response(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[int, Any]:
    """The status and JSON body of the one response on a ``Connection: close`` connection; the connection must
    then be at its end (one answer only)."""
    raw = await asyncio.wait_for(reader.read(), 20)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.count(b"HTTP/1.1 ") == 1 and body.count(b"HTTP/1.1 ") == 0, raw[:300]
    return int(head.split(b" ", 2)[1]), json.loads(body)


async def test_a_thousand_concurrent_requests_each_get_their_own_answer(stack: AsyncExitStack) -> None:
    engine, module = await _start(stack)
    worker = await worker_with_route(engine, "echo", "echo")
    baseline = len(asyncio.all_tasks())
    connections = await asyncio.gather(*(_raw_get(module.port, f"/echo?n={n}") for n in range(1000)))
    invoked = [await worker.expect("invokefunction", wait=20) for _ in range(1000)]
    assert len(engine.invocations.pending) == 1000 and module.in_flight == 1000  # all of them at once
    for frame in reversed(invoked):  # answered in the reverse order of their arrival
        await answer(worker, frame, {"status_code": 200, "body": {"n": frame["data"]["query_params"]["n"]}})
    responses = await asyncio.gather(*(_raw_response(*connection) for connection in connections))
    assert responses == [(200, {"n": str(n)}) for n in range(1000)]
    assert engine.invocations.stray_results == 0
    await _nothing_left(engine, module)
    await _until(lambda: len(asyncio.all_tasks()) <= baseline,
                 f"tasks: {len(asyncio.all_tasks())} after, {baseline} before")


async def test_a_deadline_as_the_result_comes_answers_once_either_way(stack: AsyncExitStack) -> None:
    # default_timeout 60 ms, answers 40-80 ms after the call: many results come as the sweep ends their request
    engine, module = await _start(stack, default_timeout=60)
    worker = await worker_with_route(engine, "edge", "edge")
    rng = random.Random(7)
    server = _answering(worker, lambda: rng.uniform(0.04, 0.08))
    client = await stack.enter_async_context(httpx.AsyncClient(base_url=module.base_url, timeout=20))
    responses = await asyncio.gather(*(client.get("/edge", params={"n": str(n)}) for n in range(200)))
    kinds = {"ok": 0, "timeout": 0}
    for n, response in enumerate(responses):
        if response.status_code == 200:
            assert response.json() == {"n": str(n)}
            kinds["ok"] += 1
        else:
            assert (response.status_code, response.json()) == (504, {"error": "Request timed out"})
            kinds["timeout"] += 1
    assert kinds["ok"] + kinds["timeout"] == 200
    await _nothing_left(engine, module)
    server.cancel()


async def test_a_client_leaving_as_its_result_comes_leaves_nothing_behind(stack: AsyncExitStack) -> None:
    engine, module = await _start(stack)
    worker = await worker_with_route(engine, "gone", "gone")
    host, port = "127.0.0.1", module.port
    for n in range(20):
        _, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET /gone?n={n} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        invoked = await worker.expect("invokefunction")
        assert invoked["data"]["query_params"] == {"n": str(n)}
        # the close and the result at once (half the rounds one first, half the other)
        if n % 2:
            writer.transport.abort()
            await answer(worker, invoked, {"status_code": 200, "body": {"n": n}})
        else:
            await answer(worker, invoked, {"status_code": 200, "body": {"n": n}})
            writer.transport.abort()
    await _nothing_left(engine, module)
    # the module still answers
    client = await stack.enter_async_context(httpx.AsyncClient(base_url=module.base_url, timeout=20))
    pending = asyncio.ensure_future(client.get("/gone", params={"n": "last"}))
    invoked = await worker.expect("invokefunction")
    await answer(worker, invoked, {"status_code": 201, "body": "last"})
    assert (await pending).status_code == 201
    await _nothing_left(engine, module)


async def test_the_engine_s_stop_answers_a_hundred_requests_in_flight_once(stack: AsyncExitStack) -> None:
    spec = ModuleSpec("modules::api::RestApiModule", {"host": "127.0.0.1", "port": 0, "default_timeout": 20_000})
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[spec]))
    await engine.start()
    stopped = False
    try:
        module = engine.module("http_api")
        assert isinstance(module, RestApiModule)
        worker = await worker_with_route(engine, "silent", "silent")
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=module.base_url, timeout=20,
                                                                   limits=limits))
        requests = [asyncio.ensure_future(client.get("/silent")) for _ in range(100)]
        for _ in range(100):
            await worker.expect("invokefunction")
        assert len(engine.invocations.pending) == 100
        loop = asyncio.get_running_loop()
        began = loop.time()
        await asyncio.wait_for(engine.stop(), 15)
        stopped = True
        took = loop.time() - began
        outcomes = await asyncio.wait_for(asyncio.gather(*requests, return_exceptions=True), 10)
        assert took < 5, f"stop took {took:.1f} s"
        answered = [o for o in outcomes if isinstance(o, httpx.Response)]
        assert [r.status_code for r in answered] == [503] * 100, outcomes[:3]
        assert not engine.invocations.pending and not module._races and module.in_flight == 0
        await worker.close()
    finally:
        if not stopped:
            await engine.stop()


async def test_a_worker_leaving_mid_calls_and_coming_back(stack: AsyncExitStack) -> None:
    engine, module = await _start(stack)
    client = await stack.enter_async_context(httpx.AsyncClient(base_url=module.base_url, timeout=20))
    for round_ in range(3):
        worker = await worker_with_route(engine, "flaky", "flaky", trigger_id=f"t{round_}")
        requests = [asyncio.ensure_future(client.get("/flaky", params={"n": str(n)})) for n in range(30)]
        invoked = [await worker.expect("invokefunction") for _ in range(30)]
        for frame in invoked[:10]:  # a third answered, the rest cut by the leave
            await answer(worker, frame, {"status_code": 200, "body": {"n": frame["data"]["query_params"]["n"]}})
        for n in range(10):
            response = await asyncio.wait_for(requests[int(invoked[n]["data"]["query_params"]["n"])], 10)
            assert response.json() == {"n": invoked[n]["data"]["query_params"]["n"]}
        await worker.close()
        rest = [await asyncio.wait_for(requests[int(f["data"]["query_params"]["n"])], 10) for f in invoked[10:]]
        stopped = ("Invocation of flaky stopped: its callee's worker disconnected before answering; the call may "
                   "have run")
        assert [(r.status_code, r.json()["error"]) for r in rest] == [(500, stopped)] * 20
        await _nothing_left(engine, module)


# -- the hook itself, on a real engine's calls ---------------------------------------------------------------


async def _started_call(engine: Engine, worker: RawWorker, function_id: str) -> tuple[Started, dict[str, Any]]:
    started = await engine.invocations.start(function_id, {"x": 1})
    return started, await worker.expect("invokefunction", function_id=function_id)


async def _worker_with(engine: Engine, *function_ids: str) -> RawWorker:
    worker = await RawWorker.connect(engine.url)
    for function_id in function_ids:
        await worker.register(function_id)
    await worker.sync()
    return worker


async def test_a_hook_set_after_the_call_ended_is_not_left_waiting(stack: AsyncExitStack) -> None:
    engine, _ = await _start(stack)
    worker = await _worker_with(engine, "late::hook")
    started, invoked = await _started_call(engine, worker, "late::hook")
    await answer(worker, invoked, {"ok": True})
    await asyncio.wait_for(asyncio.shield(started.future), 5)
    called: list[int] = []
    # Either the hook is not arranged (the caller falls back to the future's done callback, which runs), or it
    # is called: a waiter must not be left with a hook that never comes.
    if started.hook(lambda: called.append(1)):
        assert called == [1], "hook arranged on an ended call and never called"
    assert started.future.result() == ({"ok": True}, None)


async def test_a_call_ended_twice_calls_its_hook_once(stack: AsyncExitStack) -> None:
    engine, _ = await _start(stack, invocation_timeout_ms=100)
    worker = await _worker_with(engine, "twice::ended")
    for way in ("result-then-abandon", "abandon-then-result", "timeout-then-result"):
        started, invoked = await _started_call(engine, worker, "twice::ended")
        calls: list[str] = []
        ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def hook(calls: list[str] = calls, way: str = way, ended: asyncio.Future[None] = ended) -> None:
            calls.append(way)
            if not ended.done():
                ended.set_result(None)

        assert started.hook(hook)
        if way == "result-then-abandon":
            await answer(worker, invoked, {"r": 1})
            await asyncio.wait_for(ended, 5)
            started.abandon()
            assert started.future.result() == ({"r": 1}, None)
        elif way == "abandon-then-result":
            started.abandon()
            await answer(worker, invoked, {"r": 2})
            await worker.sync()
            assert started.future.result() == (None, None)
        else:
            await asyncio.wait_for(ended, 5)  # the engine's invocation timeout
            await answer(worker, invoked, {"r": 3})
            await worker.sync()
            assert started.future.result()[1]["code"] == "invocation_timeout"
        assert calls == [way], calls
    assert not engine.invocations.pending


async def test_a_raising_hook_does_not_stop_the_worker_s_other_calls_ending(stack: AsyncExitStack) -> None:
    engine, _ = await _start(stack)
    worker = await _worker_with(engine, "raise::a", "raise::b")
    first, _ = await _started_call(engine, worker, "raise::a")
    second, _ = await _started_call(engine, worker, "raise::b")

    def broken() -> None:
        raise RuntimeError("a broken hook")

    first.hook(broken)
    second.hook(broken)
    worker_id = worker.worker_id
    await worker.close()  # both calls end with the worker's leave (halt_worker), each hook raising
    await _until(lambda: first.future.done() and second.future.done(), "a call left unsettled by another's hook")
    assert first.future.result()[1]["code"] == "invocation_stopped"
    assert second.future.result()[1]["code"] == "invocation_stopped"
    await _until(lambda: worker_id not in engine.workers, "the worker's clean-up stopped at a raising hook")
    assert not engine.invocations.pending



# -- the answers _handle makes itself now (before: _dispatch's) carry the origin's CORS headers -------------------


async def test_every_answer_of_a_routed_call_carries_the_cors_headers(stack: AsyncExitStack) -> None:
    spec = ModuleSpec("modules::api::RestApiModule", {"host": "127.0.0.1", "port": 0, "default_timeout": 300,
                                                      "cors": {"allowed_origins": ["https://app.example"]}})
    engine = await stack.enter_async_context(Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[spec])))
    module = engine.module("http_api")
    assert isinstance(module, RestApiModule), engine.unavailable_modules
    worker = await worker_with_route(engine, "cors", "cors")
    client = await stack.enter_async_context(httpx.AsyncClient(
        base_url=module.base_url, timeout=20, headers={"Origin": "https://app.example"}))

    async def through(method: str, reply: Callable[[dict[str, Any]], Any] | None) -> httpx.Response:
        call = asyncio.ensure_future(client.request(method, "/cors"))
        invoked = await worker.expect("invokefunction")
        if reply is not None:
            await reply(invoked)
        return await asyncio.wait_for(call, 10)

    async def streamed(invoked: dict[str, Any]) -> None:
        async with websockets.connect(channel_url(engine.url, invoked["data"]["response"])) as writer:
            await writer.send(json.dumps({"type": "set_status", "status_code": 206}))
            await writer.send(b"part")
        await answer(worker, invoked)

    seen = {
        "result": await through("GET", lambda f: answer(worker, f, {"status_code": 201, "body": {"a": 1}})),
        "error": await through("GET", lambda f: answer(worker, f, error={"code": "bad", "message": "no"})),
        "deadline": await through("GET", None),  # 504 after default_timeout
        "streamed": await through("GET", streamed),
    }
    seen["unknown path"] = await client.get("/nowhere")
    seen["wrong method"] = await client.delete("/cors")
    statuses = {name: response.status_code for name, response in seen.items()}
    assert statuses == {"result": 201, "error": 500, "deadline": 504, "streamed": 206, "unknown path": 404,
                        "wrong method": 404}
    missing = [name for name, response in seen.items()
               if response.headers.get("Access-Control-Allow-Origin") not in ("*", "https://app.example")]
    assert missing == [], missing
    await _nothing_left(engine, module)


@pytest.mark.parametrize("order", ["result-then-deadline", "deadline-then-result", "result-then-stop"])
async def test_a_result_and_the_deadline_in_the_same_loop_pass_answer_once(stack: AsyncExitStack,
                                                                             order: str) -> None:
    engine, module = await _start(stack)
    worker = await worker_with_route(engine, "same", "same")
    client = await stack.enter_async_context(httpx.AsyncClient(base_url=module.base_url, timeout=20))
    call = asyncio.ensure_future(client.get("/same"))
    invoked = await worker.expect("invokefunction")
    (race,) = module._races
    result = {"status_code": 200, "body": {"won": "result"}}
    # Both in one callback: nothing runs between them, as when the sweep and the worker's frame share a pass.
    if order == "result-then-deadline":
        engine.invocations._finish(invoked["invocation_id"], result, None)
        race.interrupt(_DEADLINE)
    elif order == "deadline-then-result":
        race.interrupt(_DEADLINE)
        engine.invocations._finish(invoked["invocation_id"], result, None)
    else:
        engine.invocations._finish(invoked["invocation_id"], result, None)
        stopping = asyncio.ensure_future(module.stop())
    response = await asyncio.wait_for(call, 10)
    # One answer, whichever won (a result in before the stop's pass is answered: 200 since the hook, 503 before)
    expected = {"result-then-deadline": {200, 504}, "deadline-then-result": {504}, "result-then-stop": {200, 503}}
    assert response.status_code in expected[order], response.text
    if response.status_code == 200:
        assert response.json() == {"won": "result"}
    if order == "result-then-stop":
        await asyncio.wait_for(stopping, 10)
    await _nothing_left(engine, module)
