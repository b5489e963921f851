"""Calls made while the engine restarts wait for their function to come back instead of failing at once.

After a restart every worker reconnects on its own backoff; a caller back before its callee had every sync call it
queued during the outage answered ``function_not_found`` at once (an attack: calls with a 10 s timeout failed 1 s
after the restart, the callee back 0.5 s later, and neither call ever ran). Now a call started while reconnecting, or
in the settling window after a reconnect, is sent again until its function is back (``iii.reconnect_retry``); one
whose own timeout ends first fails with the ``function_not_found`` it was answered (it did not run)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any

import pytest

from iii import InitOptions, register_worker
from iii.errors import InvocationError
from iii.iii import III
from tests.conftest import EngineProcess
from tests.integration.sdk.conftest import FAST_RECONNECT
from tests.polling import until

NOT_FOUND_LOGGED = "was not found just after the reconnect"


def _in_thread(call: Callable[[], Any]) -> Future[Any]:
    future: Future[Any] = Future()

    def run() -> None:
        try:
            future.set_result(call())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return future


async def _served(client: III, function_id: str) -> None:
    """Until the engine lists ``function_id`` (a registration is sent, not acknowledged)."""
    deadline = asyncio.get_running_loop().time() + 10
    while not any(f.function_id == function_id for f in await client.list_functions_async()):
        assert asyncio.get_running_loop().time() < deadline, f"{function_id} was never registered"
        await asyncio.sleep(0.02)


async def _killed(served: EngineProcess, caller: III) -> None:
    served.process.kill()
    await served.process.wait()
    await until(lambda: not caller._conn.is_ready)


async def test_calls_made_during_a_restart_wait_for_their_callee_to_come_back(
        engine_process: Callable[..., Awaitable[EngineProcess]], caplog: pytest.LogCaptureFixture) -> None:
    served = await engine_process()
    runs: list[Any] = []
    caller = await asyncio.to_thread(register_worker, served.url,
                                     InitOptions(worker_name="caller", reconnection_config=FAST_RECONNECT))
    callee = await asyncio.to_thread(register_worker, served.url, InitOptions(worker_name="callee"))
    try:
        callee.register_function("late::f", lambda data: runs.append(data) or data)
        await _served(caller, "late::f")
        assert await asyncio.to_thread(caller.trigger, {"function_id": "late::f", "payload": "warm"}) == "warm"
        await asyncio.to_thread(callee.shutdown)  # away until this test brings it back
        await _killed(served, caller)
        with caplog.at_level(logging.INFO, logger="iii.reconnect_retry"):
            sync = _in_thread(lambda: caller.trigger({"function_id": "late::f", "payload": "sync",
                                                      "timeout_ms": 20_000}))
            made = asyncio.ensure_future(caller.trigger_async({"function_id": "late::f", "payload": "async",
                                                               "timeout_ms": 20_000}))
            await until(lambda: caller._retry.active and len(caller._calls) == 2)  # both queued, unsent
            await engine_process("--port", str(served.port))
            await until(lambda: NOT_FOUND_LOGGED in caplog.text, 15)  # answered function_not_found at least once
            assert not sync.done() and not made.done()
            callee = await asyncio.to_thread(register_worker, served.url, InitOptions(worker_name="callee-again"))
            callee.register_function("late::f", lambda data: runs.append(data) or data)
            assert await asyncio.wrap_future(sync) == "sync"
            assert await made == "async"
        assert sorted(runs) == ["async", "sync", "warm"]  # each once
        assert not caller._retry.active  # nothing left remembered
    finally:
        await asyncio.to_thread(callee.shutdown)
        await asyncio.to_thread(caller.shutdown)


async def test_a_call_whose_timeout_ends_first_fails_with_function_not_found(
        engine_process: Callable[..., Awaitable[EngineProcess]]) -> None:
    served = await engine_process()
    caller = await asyncio.to_thread(register_worker, served.url,
                                     InitOptions(worker_name="caller", reconnection_config=FAST_RECONNECT))
    try:
        await _killed(served, caller)
        await engine_process("--port", str(served.port))
        await until(lambda: caller._conn.is_ready, 15)
        started = asyncio.get_running_loop().time()
        with pytest.raises(InvocationError) as caught:  # in the window: waits its timeout, not a TimeoutError
            await caller.trigger_async({"function_id": "never::there", "payload": {}, "timeout_ms": 800})
        assert caught.value.code == "function_not_found"
        assert asyncio.get_running_loop().time() - started >= 0.7
        assert not caller._retry.active
    finally:
        await asyncio.to_thread(caller.shutdown)


async def test_without_a_reconnect_a_missing_function_fails_at_once(
        engine_process: Callable[..., Awaitable[EngineProcess]]) -> None:
    served = await engine_process()
    caller = await asyncio.to_thread(register_worker, served.url, InitOptions(worker_name="caller"))
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(InvocationError) as caught:
            await caller.trigger_async({"function_id": "never::there", "payload": {}, "timeout_ms": 20_000})
        assert caught.value.code == "function_not_found"
        assert asyncio.get_running_loop().time() - started < 5
        assert caller._retry.until == 0.0 and not caller._retry.active
    finally:
        await asyncio.to_thread(caller.shutdown)
