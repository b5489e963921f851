"""A control message over the engine's ``max_message_size`` fails that one call, not the worker's connection.

Our engine names its limit in the control upgrade's response (``X-III-Max-Message-Size``,
docs/protocol.md#message-size-extension); the SDK refuses a call whose message is over it (sync, async, void,
enqueue) with ``message_too_large``, and answers a handler result over it with a ``result_not_sent`` error,
so the engine never closes the connection with 1009 and the other calls on it go on. Before, the engine closed the
connection: every call in flight on it failed with a bare "Connection to the engine was lost", and the invocations
the worker served ended as ``invocation_stopped``. Against an engine that names no limit (``production_mode``, the
production engine) nothing is refused client-side, and the calls the 1009 close fails say why.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
import websockets

from iii import TriggerAction
from iii.connection import Connection
from iii.errors import ConnectionLostError, InvocationError
from iii.iii import III
from iii_engine import Engine
from tests.services import skip_on_external_engine

from .conftest import SMALL_LIMIT, MakeWorkerAt, ServedOnThread, small_limit_engine, small_limit_served, wait_until

LIMIT = SMALL_LIMIT
MAX_MESSAGE_SIZE_HEADER = "X-III-Max-Message-Size"  # (spelled out: it is the wire's, not a name of ours to follow)


@pytest.fixture(params=[False, True], ids=["ours", "production_mode"])
def served(request: pytest.FixtureRequest) -> Iterator[ServedOnThread[Engine]]:
    with small_limit_served(request.param) as engine:
        yield engine


@pytest.fixture
def ours() -> Iterator[ServedOnThread[Engine]]:
    with small_limit_served() as engine:
        yield engine


class Slow:
    """A handler that holds its invocation until released: a call in flight while something else happens."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, data: Any) -> Any:
        self.started.set()
        assert self.release.wait(10)
        return {"slow": data}


def _setup(served: ServedOnThread[Engine], workers: MakeWorkerAt) -> tuple[III, III, Slow]:
    callee, caller = workers(served.url, "callee"), workers(served.url, "caller")
    slow = Slow()
    callee.register_function("slow", slow)
    callee.register_function("echo", lambda data: data)
    callee.register_function("big", lambda data: "x" * (LIMIT + 10))
    # (registrations are never acknowledged: the engine's table is the only place to see them arrive)
    wait_until(lambda: {"slow", "echo", "big"} <= set(served.engine.registry.functions))
    assert caller.trigger({"function_id": "echo", "payload": 1, "timeout_ms": 10_000}) == 1
    return callee, caller, slow


def _in_flight(pool: ThreadPoolExecutor, caller: III, slow: Slow) -> Future[Any]:
    call = pool.submit(caller.trigger, {"function_id": "slow", "payload": 7, "timeout_ms": 10_000})
    assert slow.started.wait(10)
    return call


def test_our_engine_names_its_limit_on_the_control_socket_only_outside_production_mode(
        served: ServedOnThread[Engine]) -> None:
    async def headers() -> list[str]:
        async with websockets.connect(served.url) as ws:
            assert ws.response is not None
            return ws.response.headers.get_all(MAX_MESSAGE_SIZE_HEADER)

    production = served.engine.config.channels.production_mode
    assert asyncio.run(headers()) == ([] if production else [str(LIMIT)])


def test_an_oversized_call_fails_alone_with_the_size_the_limit_and_the_advice(
        ours: ServedOnThread[Engine], workers: MakeWorkerAt) -> None:
    _, caller, slow = _setup(ours, workers)
    worker_id = caller.worker_id
    with ThreadPoolExecutor(1) as pool:
        call = _in_flight(pool, caller, slow)
        big = "x" * LIMIT  # the payload alone fits; the message with its envelope does not
        for action in (None, TriggerAction.Void(), TriggerAction.Enqueue(queue="q")):
            with pytest.raises(InvocationError) as refused:
                caller.trigger({"function_id": "echo", "payload": big, "action": action})
            assert refused.value.code == "message_too_large"
            message = refused.value.message
            assert f"{LIMIT:,} bytes" in message and "channel" in message and "'echo'" in message
            named = re.search(r"its message is ([0-9,]+) bytes", message)
            assert named is not None and int(named[1].replace(",", "")) > len(big)

        async def from_another_loop() -> None:
            with pytest.raises(InvocationError) as refused:
                await caller.trigger_async({"function_id": "echo", "payload": "\u00e9" * (LIMIT // 2)})
            assert refused.value.code == "message_too_large"  # under LIMIT characters, over LIMIT bytes

        asyncio.run(from_another_loop())
        slow.release.set()
        assert call.result(10) == {"slow": 7}  # the call in flight was not touched
    assert caller.worker_id == worker_id  # the same connection
    fits = "\u00e9" * (LIMIT // 2 - 100)  # 2 bytes a character: just under the limit, sent and answered
    assert caller.trigger({"function_id": "echo", "payload": fits, "timeout_ms": 10_000}) == fits


def test_an_oversized_call_on_the_clients_own_loop_is_refused(
        ours: ServedOnThread[Engine], workers: MakeWorkerAt) -> None:
    callee, caller, _ = _setup(ours, workers)

    async def relay(data: Any) -> Any:  # runs on the callee's loop: trigger_async takes the loop's own path
        try:
            await callee.trigger_async({"function_id": "echo", "payload": "x" * LIMIT})
        except InvocationError as exc:
            return exc.code
        return "sent"

    callee.register_function("relay", relay)
    wait_until(lambda: "relay" in set(ours.engine.registry.functions))
    worker_id = callee.worker_id
    assert caller.trigger({"function_id": "relay", "payload": None, "timeout_ms": 10_000}) == "message_too_large"
    assert callee.worker_id == worker_id


def test_an_oversized_result_is_answered_with_an_error_and_the_callee_stays_connected(
        ours: ServedOnThread[Engine], workers: MakeWorkerAt) -> None:
    callee, caller, slow = _setup(ours, workers)
    worker_id = callee.worker_id
    with ThreadPoolExecutor(1) as pool:
        call = _in_flight(pool, caller, slow)  # an invocation the callee serves meanwhile
        with pytest.raises(InvocationError) as failed:
            caller.trigger({"function_id": "big", "payload": None, "timeout_ms": 10_000})
        assert failed.value.code == "result_not_sent"
        assert f"{LIMIT:,} bytes" in failed.value.message and "'big'" in failed.value.message
        slow.release.set()
        assert call.result(10) == {"slow": 7}
    assert callee.worker_id == worker_id


def test_without_a_named_limit_nothing_is_refused_and_the_1009_close_is_named(
        workers: MakeWorkerAt) -> None:
    with small_limit_served(production_mode=True) as served:
        _, caller, slow = _setup(served, workers)
        with ThreadPoolExecutor(1) as pool:
            call = _in_flight(pool, caller, slow)
            with pytest.raises(ConnectionLostError) as lost:  # sent as before: the engine closes the connection
                caller.trigger({"function_id": "echo", "payload": "x" * LIMIT, "timeout_ms": 10_000})
            slow.release.set()
            with pytest.raises(ConnectionLostError) as other:
                call.result(10)
        for error in (lost.value, other.value):
            assert error.message.endswith("the engine closed the connection: a message over its size limit (1009)")


async def test_a_call_queued_before_the_limit_was_known_fails_when_a_socket_with_a_smaller_one_flushes_it() -> None:
    skip_on_external_engine("needs our engine with a small max_message_size")
    engine = small_limit_engine()
    await engine.start()
    refused: asyncio.Future[tuple[str, int, int]] = asyncio.get_running_loop().create_future()
    ready = asyncio.Event()
    conn = Connection(engine.url, on_frame=lambda _raw: None, on_ready=ready.set,
                      on_oversized=lambda key, size, limit: refused.set_result((key, size, limit)))
    try:
        big = '{"type":"invokefunction","function_id":"f","invocation_id":"k","data":"%s"}' % ("x" * LIMIT)
        assert not await conn.send(big, "k")  # no socket yet: queued, unchecked
        await conn.start()
        key, size, limit = await asyncio.wait_for(refused, 10)
        assert (key, size, limit) == ("k", len(big), LIMIT)
        await asyncio.wait_for(ready.wait(), 10)
        assert conn.state == "connected" and conn.max_message_size == LIMIT
    finally:
        await conn.close()
        await engine.stop()
