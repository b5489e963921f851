"""A REST request waiting for its worker's result is woken by the call itself as it ends (``Started.hook``), and a
built-in's call through its future: every way a call ends still answers the request as it did, and leaves nothing
behind (no pending call, no race, no channel)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.base import BuiltinFunction, CallNotSent, InvocationContext
from iii_engine.modules.http.api import RestApiModule
from iii_engine.registry import FunctionEntry
from tests.integration.engine.raw import RawWorker
from tests.integration.modules.test_http_api import answer, worker_with_route

pytestmark = pytest.mark.our_engine("configures the REST API module and reads our relay")


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


async def _start(stack: AsyncExitStack, invocation_timeout_ms: int | None = None,
                 default_timeout: int = 20_000) -> tuple[Engine, RestApiModule, httpx.AsyncClient]:
    spec = ModuleSpec("modules::api::RestApiModule", {"host": "127.0.0.1", "port": 0,
                                                      "default_timeout": default_timeout})
    config = EngineConfig(host="127.0.0.1", port=0, modules=[spec], invocation_timeout_ms=invocation_timeout_ms)
    engine = await stack.enter_async_context(Engine(config=config))
    module = engine.module("http_api")
    assert isinstance(module, RestApiModule), engine.unavailable_modules
    client = await stack.enter_async_context(httpx.AsyncClient(base_url=module.base_url, timeout=20))
    return engine, module, client


def _nothing_left(engine: Engine, module: RestApiModule) -> None:
    assert engine.invocations.pending == {}
    assert not module._races and module.in_flight == 0
    assert len(engine.channels) == 0


async def test_a_worker_s_result_answers_the_request(stack: AsyncExitStack) -> None:
    engine, module, client = await _start(stack)
    worker = await worker_with_route(engine, "json", "json")
    for n in range(3):  # the hook of one call must not answer the next
        pending = asyncio.ensure_future(client.get("/json", params={"n": str(n)}))
        invoked = await worker.expect("invokefunction")
        assert invoked["data"]["query_params"] == {"n": str(n)}
        await answer(worker, invoked, {"status_code": 201, "body": {"n": n}})
        response = await pending
        assert (response.status_code, response.json()) == (201, {"n": n})
    _nothing_left(engine, module)


@pytest.mark.parametrize("silent", ["handler", "condition"])
async def test_the_engine_s_invocation_timeout_is_the_request_s_504(stack: AsyncExitStack, silent: str) -> None:
    # A condition that timed out did not decide: before, it counted as "condition not met" (422, skipped: true).
    engine, module, client = await _start(stack, invocation_timeout_ms=200)
    worker = await _route(engine, "silent", silent)
    started = time.monotonic()
    response = await client.get("/silent")  # the worker never answers; default_timeout is 20 s
    assert (response.status_code, response.json()) == (504, {"error": "Request timed out"})
    assert time.monotonic() - started < 10
    assert (await worker.expect("invokefunction"))["function_id"] == ("guard" if silent == "condition" else "silent")
    _nothing_left(engine, module)


async def test_a_condition_nobody_serves_is_500_as_a_handler_nobody_serves(stack: AsyncExitStack) -> None:
    # Its worker away (restarting): no decision was made, where it was told "condition not met" (422, skipped: true).
    engine, module, client = await _start(stack)
    await worker_with_route(engine, "guarded", "guarded", condition_function_id="guard")  # "guard": nobody's
    response = await client.get("/guarded")
    assert (response.status_code, response.json()["error"]) == (500, "Function guard not found")
    _nothing_left(engine, module)


async def _route(engine: Engine, path: str, called: str) -> RawWorker:
    """A worker serving route ``path`` with its handler (``called`` "handler"), or also with a condition, ``guard``
    (``called`` "condition"): the function the test's request calls first."""
    if called == "handler":
        return await worker_with_route(engine, path, path)
    worker = await worker_with_route(engine, path, path, condition_function_id="guard")
    await worker.register("guard")
    await worker.sync()
    return worker


@pytest.mark.parametrize("leaver", ["handler", "condition"])
async def test_a_worker_leaving_mid_call_is_500_invocation_stopped(stack: AsyncExitStack, leaver: str) -> None:
    # A condition whose worker left did not decide: before, its stopped call counted as "condition not met" (422,
    # skipped: true).
    engine, module, client = await _start(stack)
    worker = await _route(engine, "leaver", leaver)
    called = "guard" if leaver == "condition" else "leaver"
    pending = asyncio.ensure_future(client.get("/leaver"))
    assert (await worker.expect("invokefunction"))["function_id"] == called
    await worker.close()
    response = await asyncio.wait_for(pending, 10)
    assert response.status_code == 500
    assert response.json()["error"] == (
        f"Invocation of {called} stopped: its callee's worker disconnected before answering; the call may have run")
    _nothing_left(engine, module)


async def test_a_route_to_a_built_in_is_answered_through_its_task(stack: AsyncExitStack) -> None:
    engine, module, client = await _start(stack)

    async def built_in(data: Any, ctx: InvocationContext) -> Any:
        return {"status_code": 202, "body": {"path": data["path"], "method": data["method"]}}

    engine.registry.add_function(FunctionEntry("test::built_in", builtin=BuiltinFunction("test::built_in", built_in)))
    worker = await worker_with_route(engine, "unused", "placeholder")  # a connection to register the trigger with
    await worker.send({"type": "registertrigger", "id": "t-built-in", "trigger_type": "http",
                       "function_id": "test::built_in", "config": {"api_path": "built-in"}})
    await worker.sync()
    for _ in range(2):
        response = await client.get("/built-in")
        assert (response.status_code, response.json()) == (202, {"path": "built-in", "method": "GET"})
    _nothing_left(engine, module)


async def test_a_worker_too_busy_to_run_the_handler_is_a_503_to_retry(stack: AsyncExitStack,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    # Our SDK refuses an invocation past its max_invocations with worker_busy: the handler never ran, so the client
    # is told to come back (503, Retry-After), not that the handler failed (500), and nothing is logged per request.
    engine, module, client = await _start(stack)
    worker = await worker_with_route(engine, "busy", "busy")
    pending = asyncio.ensure_future(client.get("/busy"))
    invoked = await worker.expect("invokefunction")
    message = "'busy' was not run: this worker is running as many invocations as it may at once (1, max_invocations)"
    await answer(worker, invoked, error={"code": "worker_busy", "message": message})
    response = await pending
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json() == {"error": message, "code": "worker_busy"}
    assert not [r for r in caplog.records if "HTTP handler failed" in r.getMessage()]
    _nothing_left(engine, module)


async def test_a_worker_too_busy_to_run_the_route_s_condition_is_a_503_too(stack: AsyncExitStack) -> None:
    # The condition did not decide: before, its busy refusal counted as "condition not met" (422, skipped: true).
    engine, module, client = await _start(stack)
    worker = await worker_with_route(engine, "guarded", "guarded", condition_function_id="guard")
    await worker.register("guard")
    await worker.sync()
    pending = asyncio.ensure_future(client.get("/guarded"))
    invoked = await worker.expect("invokefunction")
    assert invoked["function_id"] == "guard"
    message = "'guard' was not run: this worker is running as many invocations as it may at once (1, max_invocations)"
    await answer(worker, invoked, error={"code": "worker_busy", "message": message})
    response = await pending
    assert (response.status_code, response.headers.get("Retry-After")) == (503, "1")
    assert response.json() == {"error": message, "code": "worker_busy"}
    _nothing_left(engine, module)


async def test_a_route_s_condition_never_sent_to_its_worker_is_a_503_too(stack: AsyncExitStack) -> None:
    # Its worker left before the call reached it (CallNotSent: nothing ran). Before, condition_passes took the error
    # for "condition not met": 422 with skipped: true, where a retry would have been served.
    engine, module, client = await _start(stack)
    worker = await worker_with_route(engine, "guarded", "guarded", condition_function_id="guard")
    await worker.register("guard")
    await worker.sync()
    call = engine.invocations.call
    words = "Invocation of guard stopped: its callee's worker disconnected before the call was sent to it; the call " \
            "did not run"

    async def left_unsent(function_id: str, data: Any, **kwargs: Any) -> Any:
        if function_id == "guard":  # (how the engine ends such a call: test_queue_callee_left_unsent.py)
            raise CallNotSent("invocation_stopped", words)
        return await call(function_id, data, **kwargs)

    engine.invocations.call = left_unsent  # type: ignore[method-assign]
    response = await client.get("/guarded")
    assert (response.status_code, response.headers.get("Retry-After")) == (503, "1")
    assert response.json() == {"error": words, "code": "invocation_stopped"}
    _nothing_left(engine, module)
