"""Calls made while the engine restarts wait for their function to come back instead of failing at once.

After a restart every worker reconnects on its own backoff; a caller back before its callee had every sync call it
queued during the outage answered ``function_not_found`` at once (an attack: calls with a 10 s timeout failed 1 s
after the restart, the callee back 0.5 s later, and neither call ever ran). Now a call started while reconnecting, or
in the settling window after a reconnect, is sent again until its function is back (``iii.reconnect_retry``); one
whose own timeout ends first fails with the ``function_not_found`` it was answered (it did not run)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from iii import InitOptions, register_worker
from iii.errors import ConnectionLostError, InvocationError, ShuttingDownError
from iii.iii import III
from iii.iii_constants import MAX_QUEUE_SIZE
from tests.conftest import EngineProcess
from tests.integration.sdk.conftest import FAST_RECONNECT, in_thread
from tests.polling import until

NOT_FOUND_LOGGED = "was not found just after the reconnect"


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
            sync = in_thread(lambda: caller.trigger({"function_id": "late::f", "payload": "sync",
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


async def test_calls_refused_or_shut_down_while_reconnecting_are_forgotten_and_told(
        engine_process: Callable[..., Awaitable[EngineProcess]]) -> None:
    """Calls refused at the outbound queue's bound (1,000 frames) while reconnecting were left remembered: 10,000 of
    them turned the resending off for good. Calls waiting to be sent again at a shutdown got a bare
    ``CancelledError`` (or ``LoopStoppedError``) instead of ``ShuttingDownError``."""
    served = await engine_process()
    caller = await asyncio.to_thread(register_worker, served.url,
                                     InitOptions(worker_name="caller", reconnection_config=FAST_RECONNECT))
    try:
        await _killed(served, caller)
        calls = [asyncio.ensure_future(caller.trigger_async({"function_id": "gone::f", "payload": n,
                                                             "timeout_ms": 20_000}))
                 for n in range(MAX_QUEUE_SIZE + 10)]  # (from this loop, not the client's: _start_call's path)
        await until(lambda: sum(call.done() for call in calls) == 10)
        refused = [call.exception() for call in calls if call.done()]
        assert all(isinstance(exc, ConnectionLostError) and "never sent" in str(exc) for exc in refused), refused
        await until(lambda: len(caller._retry._frames) == len(caller._calls) == MAX_QUEUE_SIZE)
    finally:
        await asyncio.to_thread(caller.shutdown)
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(exc, (ShuttingDownError, ConnectionLostError)) for exc in outcomes), outcomes[-3:]
    assert not caller._retry.active


async def test_a_call_waiting_to_be_sent_again_at_shutdown_gets_shutting_down(
        engine_process: Callable[..., Awaitable[EngineProcess]], caplog: pytest.LogCaptureFixture) -> None:
    """Both kinds of caller: a sync ``trigger`` got ``LoopStoppedError`` ("the SDK's event loop thread stopped"), a
    ``trigger_async`` on the client's own loop (an async handler's) a bare ``CancelledError``."""
    served = await engine_process()
    caller = await asyncio.to_thread(register_worker, served.url,
                                     InitOptions(worker_name="caller", reconnection_config=FAST_RECONNECT))
    await _killed(served, caller)
    request = {"function_id": "gone::f", "payload": 1, "timeout_ms": 20_000}
    with caplog.at_level(logging.INFO, logger="iii.reconnect_retry"):
        sync = in_thread(lambda: caller.trigger(request))
        on_its_loop = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(caller.trigger_async(request),
                                                                           caller._loop))
        await until(lambda: len(caller._retry._frames) == 2)
        await engine_process("--port", str(served.port))
        await until(lambda: NOT_FOUND_LOGGED in caplog.text, 15)
    await asyncio.to_thread(caller.shutdown)
    for waiting in (asyncio.wrap_future(sync), on_its_loop):
        with pytest.raises(BaseException) as caught:
            await waiting
        assert type(caught.value) is ShuttingDownError, repr(caught.value)


async def test_calls_still_queued_when_the_connection_is_lost_wait_for_their_callee_too(
        engine_process: Callable[..., Awaitable[EngineProcess]], caplog: pytest.LogCaptureFixture) -> None:
    """Calls made before the loss but held in the outbound queue (a stalled engine's flow control) go out after the
    reconnect like those made during the outage; they were not remembered and failed ``function_not_found`` at once
    (25 of 40 calls of 300 KB)."""
    served = await engine_process()
    caller = await asyncio.to_thread(register_worker, served.url,
                                     InitOptions(worker_name="caller", reconnection_config=FAST_RECONNECT))
    runs: list[int] = []
    callee: III | None = None
    try:
        served.process.send_signal(signal.SIGSTOP)  # reads nothing more: the socket's buffers fill, then the queue
        pad = "x" * 300_000
        calls = [in_thread(lambda n=n: caller.trigger({"function_id": "late::g", "payload": {"n": n, "pad": pad},
                                                       "timeout_ms": 20_000}))
                 for n in range(40)]
        await until(lambda: len(caller._conn.queued_keys()) >= 5)  # some calls are held in the queue
        with caplog.at_level(logging.INFO, logger="iii.reconnect_retry"):
            served.process.kill()
            await served.process.wait()
            await until(lambda: not caller._conn.is_ready)
            queued = len(caller._conn.queued_keys())
            assert len(caller._retry._frames) == queued >= 5  # remembered as the connection went
            await engine_process("--port", str(served.port))
            await until(lambda: NOT_FOUND_LOGGED in caplog.text, 15)
        callee = await asyncio.to_thread(register_worker, served.url, InitOptions(worker_name="callee"))
        callee.register_function("late::g", lambda data: runs.append(data["n"]) or data["n"])
        outcomes = await asyncio.gather(*map(asyncio.wrap_future, calls), return_exceptions=True)
        succeeded = [outcome for outcome in outcomes if isinstance(outcome, int)]
        assert len(succeeded) >= queued, outcomes  # the queued ones all ran (those sent before may have been lost)
        assert all(isinstance(o, int) or isinstance(o, ConnectionLostError) for o in outcomes), outcomes
        assert sorted(runs) == sorted(set(runs))  # none twice
    finally:
        if callee is not None:
            await asyncio.to_thread(callee.shutdown)
        await asyncio.to_thread(caller.shutdown)
