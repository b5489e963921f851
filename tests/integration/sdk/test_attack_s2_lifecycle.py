"""Attack A-S2: today's SDK life-cycle fixes (queued registrations dropped on open, reconnection that gave up,
bounded shutdown, on_functions_available's lock, droppable pongs) attacked with flapping and stalled connections.

Each test reproduces one fault found by the attack and failed on the code before its fix.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from iii import InitOptions, TriggerAction
from iii.connection import Connection, Write
from iii.errors import ShuttingDownError
from iii.iii import III, register_worker

from .conftest import FAST_RECONNECT, EngineThread, reconnected, wait_until
from .test_connection import Recorder, recorder

__all__ = ["recorder"]  # the fixture, imported for pytest


async def test_a_callback_that_raises_on_open_does_not_end_reconnection(
        recorder: Recorder, caplog: pytest.LogCaptureFixture) -> None:
    # Before: an exception out of on_open (the replay raised "dictionary changed size during iteration" when a
    # thread registered meanwhile) ended the supervisor task: the socket stayed open, unused, and nothing ever
    # reconnected; the client sat "disconnected" for good.
    opened = 0

    async def on_open(write: Write) -> None:
        nonlocal opened
        opened += 1
        if opened == 1:
            raise RuntimeError("dictionary changed size during iteration")
        await write("replayed")

    conn = Connection(recorder.url, on_frame=lambda _raw: None, on_open=on_open, reconnection=FAST_RECONNECT)
    with caplog.at_level(logging.ERROR, logger="iii.connection"):
        await conn.start()
        try:
            await recorder.wait_for(lambda: "replayed" in recorder.frames)
            assert recorder.connections == 2 and conn.state == "connected"
        finally:
            await conn.close()
    assert any("dropping it and reconnecting" in r.getMessage() and r.exc_info for r in caplog.records)


def _cut(fake: EngineThread, client: III) -> None:
    """Cut ``client``'s socket as a killed engine would (no close handshake) and wait for its next connection."""
    old = client.worker_id
    assert old is not None
    worker = fake.engine.workers[old]

    async def abort() -> None:
        worker.ws.transport.abort()

    fake.run(abort())
    wait_until(lambda: reconnected(client, old), 10)


def test_functions_registered_from_a_thread_while_the_connection_flaps_all_reach_the_engine(
        fake: EngineThread, client: III) -> None:
    # Before: the replay walked the book while this thread wrote to it; the loop's replay raised, its supervisor
    # ended, and the client never reconnected (and the functions registered meanwhile never reached the engine).
    for n in range(3000):  # a replay long enough to be interrupted by the registering thread
        client.register_function(f"base{n}", lambda data: data)
    registered: list[str] = []
    stop = threading.Event()

    def register() -> None:
        while not stop.is_set() and len(registered) < 20_000:
            function_id = f"late{len(registered)}"
            client.register_function(function_id, lambda data: data)
            registered.append(function_id)

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    writer = threading.Thread(target=register, daemon=True)
    writer.start()
    try:
        for _ in range(4):
            _cut(fake, client)
    finally:
        stop.set()
        writer.join(10)
        sys.setswitchinterval(previous)
    fake.wait_registered(*registered[-100:], "base0")
    client.list_functions()  # a round trip: every registration sent before it was handled
    assert {f"base{n}" for n in range(3000)} | set(registered) <= fake.function_ids()


def test_a_result_finished_while_the_queue_is_full_reaches_its_caller(fake: EngineThread, client: III) -> None:
    # Before: a handler's result met a full outbound queue (the engine stalled; telemetry, pongs and registrations
    # filled it), waited for room like a fire-and-forget call, and after queue_wait (30 s) the wait failed inside the
    # invocation's task: the result was lost with no word, and its caller waited out its timeout. The queue's bound
    # and wait are cut to 3 frames and 0.2 s here.
    release = threading.Event()
    client.register_function("hold", lambda data: release.wait(10) and "done")
    fake.wait_registered("hold")
    caller = register_worker(fake.url, InitOptions(worker_name="caller", reconnection_config=FAST_RECONNECT))
    pool = ThreadPoolExecutor(2)
    try:
        call = pool.submit(caller.trigger, {"function_id": "hold", "payload": {}, "timeout_ms": 5_000})
        fake.wait_for(lambda: "hold" in {route.function_id for route in fake.engine.routes.values()})
        worker = fake.worker(client)
        conn = client._conn
        conn._max_queue, conn._queue_wait = 3, 0.2

        async def pause() -> None:
            worker.ws.transport.pause_reading()

        fake.run(pause())

        def fill() -> None:  # fire-and-forget calls until the socket's buffers are full
            while conn._ws is not None and conn._ws.transport.get_write_buffer_size() == 0:
                client.trigger({"function_id": "nobody", "payload": "x" * (256 << 10), "action": TriggerAction.Void()})

        pool.submit(fill).result(10)
        while len(conn._backlog) < 3:
            client.send_telemetry(b"OTLP{}")
            wait_until(lambda: conn._flusher is not None)
        release.set()
        wait_until(lambda: client._invoking == 0)  # the result was handed to the connection (or lost)
        assert any(b"invocationresult" in (f if isinstance(f, bytes) else f.encode()) for f, _ in conn._backlog)

        async def resume() -> None:
            worker.ws.transport.resume_reading()

        fake.run(resume())
        assert call.result(10) == "done"
    finally:
        release.set()
        pool.shutdown(wait=False)
        caller.shutdown()


def test_a_trigger_unregistered_while_the_recovery_sends_stays_unregistered(fake: EngineThread, client: III) -> None:
    # Before: after a reconnect, the recovery of registrations lost in the old connection's cleanup (T7) listed the
    # missing ones once and sent them one by one; a send that waited (a backed-up socket) let an unregister go out
    # first, and the stale registration sent after it brought the trigger back (a cron one fired on).
    client.register_function("f", lambda data: data)
    cron = {"type": "cron", "function_id": "f", "config": {"expression": "* * * * * *"}}
    client.register_trigger(cron)
    second = client.register_trigger(cron)
    fake.wait_for(lambda: len(fake.worker_triggers()) == 2)
    engine = fake.engine
    builtin = engine._builtin

    def cleanup_lost_them(worker: Any, function_id: str, data: Any) -> Any:
        # The old connection's cleanup deleted both triggers after the replay registered them again (T7).
        if function_id == "engine::triggers::list":
            engine.triggers.clear()
        return builtin(worker, function_id, data)

    engine._builtin = cleanup_lost_them  # type: ignore[method-assign]
    send = client._conn.send
    first_resent, go_on = threading.Event(), asyncio.Event()

    async def backed_up(frame: Any, key: str | None = None, **kw: Any) -> bool:
        if "registertrigger" in str(frame) and not first_resent.is_set():
            first_resent.set()
            await go_on.wait()  # as a write to a socket whose buffers are full
        return await send(frame, key, **kw)

    client._conn.send = backed_up  # type: ignore[method-assign]
    _cut(fake, client)
    assert first_resent.wait(10)
    engine._builtin = builtin  # type: ignore[method-assign]
    second.unregister()
    client._loop.call_soon_threadsafe(go_on.set)
    client.list_functions()  # a round trip: anything the recovery sent before it has been handled
    fake.wait_for(lambda: len(fake.worker_triggers()) >= 1)
    client.list_functions()
    assert len(fake.worker_triggers()) == 1


def test_after_shutdown_unregistering_is_quiet_and_registering_says_shutting_down(fake: EngineThread) -> None:
    # Before: once shutdown() had closed the private loop, an unregister (the usual clean-up after a `with` block,
    # or the last on_functions_available unsubscribe) raised RuntimeError "Event loop is closed", and so did a
    # registration, whose error did not say the client was shut down.
    with register_worker(fake.url, InitOptions(worker_name="a", reconnection_config=FAST_RECONNECT)) as client:
        client.register_function("f", lambda data: data)
        trigger = client.register_trigger({"type": "cron", "function_id": "f", "config": {"expression": "* * *"}})
        unsubscribe = client.on_functions_available(lambda functions: None)
    assert not client._bridge.alive
    trigger.unregister()
    unsubscribe()
    with pytest.raises(ShuttingDownError):
        client.register_function("g", lambda data: data)
    with pytest.raises(ShuttingDownError):
        client.register_trigger({"type": "cron", "function_id": "f", "config": {"expression": "* * *"}})
    with pytest.raises(ShuttingDownError):
        client.on_functions_available(lambda functions: None)
