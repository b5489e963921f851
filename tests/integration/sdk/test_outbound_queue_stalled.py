"""The outbound queue's byte bound holds while the socket is up but the engine has stopped reading (SIGSTOP): frames
the socket cannot take at once wait in the counted queue for one writer, instead of each sender writing its frame into
the socket's buffer before waiting for it to drain.

Before: 200 concurrent calls of 1 MiB behind a SIGSTOPped engine put 205 MB into the socket's write buffer (client
RSS 44 -> 457 MB), none refused, the queue's count at 0."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from iii import ConnectionLostError, InitOptions, TriggerAction, register_worker
from iii.connection import MAX_QUEUE_BYTES, OUTBOUND_QUEUE_FULL
from iii.iii import III
from tests.conftest import EngineProcess
from tests.integration.sdk.conftest import FAST_RECONNECT
from tests.integration.sdk.test_outbound_queue_bytes import MiB, _on_client_loop
from tests.polling import until

T = TypeVar("T")


def _in_loop(client: III, coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """``coro`` run on the client's own loop, where ``trigger_async`` sends through ``Connection.send`` (called from
    another loop it is handed over and queued)."""
    return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, client._loop))


def _outbound_bytes(client: III) -> tuple[int, int]:
    """(bytes counted in the queue, bytes in the socket's write buffer)."""
    conn = client._conn
    ws = conn._ws
    assert ws is not None and conn.is_ready
    return conn._held_bytes, ws.transport.get_write_buffer_size()


async def _pair(served: EngineProcess, seen: list[int]) -> tuple[III, III]:
    callee = await asyncio.to_thread(register_worker, served.url, InitOptions(worker_name="callee"))
    caller: III | None = None
    try:
        def echo(data: dict[str, Any]) -> int:
            seen.append(data["i"])
            return len(data["p"])

        callee.register_function("stalled::echo", echo)
        # a round trip on the callee's socket, behind its registration: the engine has it before the caller calls (the
        # caller's call on its own socket once came first, and failed with function_not_found, in CI)
        await callee.list_functions_async()
        caller = await asyncio.to_thread(register_worker, served.url,
                                         InitOptions(worker_name="caller", reconnection_config=FAST_RECONNECT))
        assert await caller.trigger_async({"function_id": "stalled::echo", "payload": {"p": "x", "i": -1}}) == 1
    except BaseException:
        # the tests' try/finally starts after _pair: a failure here left both clients reconnecting to the killed
        # engine for the rest of the run, their "Connection to ... failed" warnings landing in later tests
        if caller is not None:
            await asyncio.to_thread(caller.shutdown)
        await asyncio.to_thread(callee.shutdown)
        raise
    seen.clear()
    return callee, caller


async def test_concurrent_calls_to_a_stopped_engine_stay_within_the_byte_bound(
        engine_process: Callable[..., Awaitable[EngineProcess]]) -> None:
    served = await engine_process()
    seen: list[int] = []
    callee, caller = await _pair(served, seen)
    payload = "x" * MiB
    count = 90  # 90 MiB: past the 64 MiB bound
    calls: list[asyncio.Future[Any]] = []
    served.process.send_signal(signal.SIGSTOP)
    try:
        calls += [_in_loop(caller, caller.trigger_async(
            {"function_id": "stalled::echo", "payload": {"p": payload, "i": i}, "timeout_ms": 60_000}))
            for i in range(count)]
        # (the kernel's socket buffers take a few MiB: not every call past 64 is refused)
        await until(lambda: sum(task.done() for task in calls) >= 10)
        # Every call was handed to the client's loop before (its queue is FIFO), and its refusal came back.
        held, buffered = await _on_client_loop(caller, lambda: _outbound_bytes(caller))
        # The queue holds at most the bound; the socket's buffer the frame being written and the one before it.
        assert held <= MAX_QUEUE_BYTES and buffered <= 3 * MiB, (held, buffered)
        refused = [task.exception() for task in calls if task.done()]
        assert len(refused) >= count - MAX_QUEUE_BYTES // MiB - 10, len(refused)
        for error in refused:
            assert isinstance(error, ConnectionLostError), error
            assert error.code == OUTBOUND_QUEUE_FULL, error.code  # not connection_lost: the socket is up
            assert error.message.startswith("The call to 'stalled::echo' was never sent: the outbound queue is full ("
                                            ), error.message
            assert f"at most {MAX_QUEUE_BYTES:,})" in error.message, error.message
        # A fire-and-forget call past the bound is refused too, naming its function (3 MiB: past it whatever the
        # queue holds, within a MiB of the bound).
        void = await asyncio.gather(_in_loop(caller, caller.trigger_async(
            {"function_id": "stalled::echo", "payload": {"p": payload * 3}, "action": TriggerAction.Void()})),
            return_exceptions=True)
        assert isinstance(void[0], ConnectionLostError) and void[0].code == OUTBOUND_QUEUE_FULL, void
        assert void[0].message.startswith("The call to 'stalled::echo' was never sent: the outbound queue is full"), \
            void[0].message
        served.process.send_signal(signal.SIGCONT)
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)
        answered = sorted(i for i, result in enumerate(results) if result == MiB)
        # Every call not refused was delivered once, and answered.
        assert len(answered) + len(refused) == count, results
        assert sorted(seen) == answered
    finally:
        served.process.send_signal(signal.SIGCONT)
        await asyncio.to_thread(caller.shutdown)
        await asyncio.to_thread(callee.shutdown)
        await asyncio.gather(*calls, return_exceptions=True)
        served.process.kill()


async def test_fire_and_forget_calls_in_a_loop_wait_for_the_engine_instead_of_being_refused(
        engine_process: Callable[..., Awaitable[EngineProcess]]) -> None:
    served = await engine_process()
    seen: list[int] = []
    callee, caller = await _pair(served, seen)
    payload = "x" * MiB
    count = 100  # past the bound: one sender waits for each of its frames to be written, as it waited before
    sent: list[int] = []

    async def producer() -> None:
        for i in range(count):
            await caller.trigger_async({"function_id": "stalled::echo", "payload": {"p": payload, "i": i},
                                        "action": TriggerAction.Void()})
            sent.append(i)

    task: asyncio.Future[None] | None = None
    served.process.send_signal(signal.SIGSTOP)
    try:
        task = _in_loop(caller, producer())
        ws = caller._conn._ws
        assert ws is not None
        await until(lambda: ws.transport.get_write_buffer_size() > 0)  # the kernel's buffers are full
        held, buffered = await _on_client_loop(caller, lambda: _outbound_bytes(caller))
        assert not task.done() and held <= 2 * MiB and buffered <= 3 * MiB, (len(sent), held, buffered)
        served.process.send_signal(signal.SIGCONT)
        await asyncio.wait_for(task, 30)
        await until(lambda: len(seen) == count)
        assert seen == list(range(count))  # all of them, once each, in order
    finally:
        served.process.send_signal(signal.SIGCONT)
        if task is not None:
            task.cancel()
        await asyncio.to_thread(caller.shutdown)
        await asyncio.to_thread(callee.shutdown)
        served.process.kill()
