"""Attack Q-R: the SDK's connection life cycle (reconnects, re-registration, calls across outages).

Each test reproduces one fault found by attacking a worker whose engine stalls, dies or comes back; each failed on
the code before its fix.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest

from iii import ConnectionLostError, InitOptions, InvocationError, ReconnectionConfig, TriggerAction
from iii.errors import ShuttingDownError
from iii.iii import III, MAX_QUEUE_SIZE, register_worker

from .conftest import FAST_RECONNECT, EngineThread, in_thread, reconnected, wait_until


def _stall_then_cut(fake: EngineThread, client: III) -> Any:
    """Make ``client``'s socket back up (the engine stops reading and an 8 MiB fire-and-forget call fills the
    buffers), so frames sent from now on stay in the SDK's outbound queue; returns a function that then cuts the
    connection as a killed engine would (no close handshake) and waits until the client noticed."""
    worker = fake.worker(client)

    async def pause() -> None:
        worker.ws.transport.pause_reading()

    fake.run(pause())
    big = {"function_id": "f", "payload": "x" * (8 << 20), "action": TriggerAction.Void()}
    threading.Thread(target=client.trigger, args=(big,), daemon=True).start()
    wait_until(lambda: client._conn._ws is not None and client._conn._ws.transport.get_write_buffer_size() > 0)

    def cut() -> None:
        old = client.worker_id

        async def abort() -> None:
            worker.ws.transport.abort()

        fake.run(abort())
        wait_until(lambda: client.get_connection_state() != "connected" or reconnected(client, old))
        return None

    return cut


def _frame_with(client: III, text: str) -> str | bytes | None:
    """The first queued frame containing ``text`` (None when there is none)."""
    return next((frame for frame, _ in client._conn._backlog if text in str(frame)), None)


def test_a_trigger_unregistered_during_an_outage_stays_unregistered(fake: EngineThread, client: III) -> None:
    # Before: a registration frame still queued when the socket died was sent again after the next connection's
    # replay; the unregister made during the outage was not (the replay covers it), so the trigger came back.
    client.register_function("f", lambda data: data)
    fake.wait_registered("f")
    cut = _stall_then_cut(fake, client)
    first = client.register_trigger({"type": "cron", "function_id": "f", "config": {"expression": "* * * * * *"}})
    second = client.register_trigger({"type": "cron", "function_id": "f", "config": {"expression": "*/2 * * * * *"}})
    # The first one's frame is being written (the write waits for the stalled engine); the second is queued.
    wait_until(lambda: [frame for frame, _ in client._conn._backlog] == [_frame_with(client, "*/2")])
    old = client.worker_id
    cut()
    second.unregister()
    first.unregister()
    wait_until(lambda: reconnected(client, old))
    fake.wait_registered("f")
    client.list_functions()  # a round trip after the replay: anything queued before it has been handled
    assert fake.worker_triggers() == []
    assert [f["id"] for f in fake.worker(client).frames if f["type"] == "registerfunction"] == ["f"]


def test_calls_fail_at_once_when_reconnection_gave_up(fake: EngineThread) -> None:
    # Before: a call queued when reconnection gave up (max_retries), or made after, waited out its whole timeout for
    # a connection nothing would make, and a fire-and-forget call returned None as if it had been sent.
    retries = ReconnectionConfig(initial_delay_ms=20, max_delay_ms=50, jitter_factor=0.0, max_retries=2)
    client = register_worker(fake.url, InitOptions(worker_name="a", reconnection_config=retries))
    try:
        client.register_function("f", lambda data: data)
        fake.wait_registered("f")
        fake.stop()
        wait_until(lambda: client.get_connection_state() != "connected")
        queued = in_thread(lambda: client.trigger({"function_id": "f", "payload": 1, "timeout_ms": 60_000}))
        wait_until(lambda: client.get_connection_state() == "failed")
        with pytest.raises(ConnectionLostError, match=r"never sent: cannot reach the engine .*max_retries=2"):
            queued.result(5)
        started = time.monotonic()
        with pytest.raises(ConnectionLostError, match="never sent"):
            client.trigger({"function_id": "f", "payload": 2, "timeout_ms": 60_000})
        with pytest.raises(ConnectionLostError, match="never sent"):
            asyncio.run(client.trigger_async({"function_id": "f", "payload": 3, "timeout_ms": 60_000}))
        with pytest.raises(ConnectionLostError, match="reconnection to the engine gave up"):
            client.trigger({"function_id": "f", "payload": 4, "action": TriggerAction.Void()})
        assert time.monotonic() - started < 5
        # connect_async starts reconnecting again, and calls go through once connected.
        fake.start()
        asyncio.run(client.connect_async())
        assert client.trigger({"function_id": "f", "payload": 5}) == 5
    finally:
        client.shutdown()


@pytest.mark.parametrize("backed_up", [False, True], ids=["idle", "backed-up"])
def test_shutdown_is_bounded_when_the_engine_stalls(fake: EngineThread, backed_up: bool) -> None:
    # Before: the engine stopped reading (stalled, as under SIGSTOP), so it never answered the close: shutdown()
    # waited websockets' 10 s close timeout, twice (about 20 s) when the socket's buffers were full too.
    client = register_worker(fake.url, InitOptions(worker_name="a", reconnection_config=FAST_RECONNECT))
    worker = fake.worker(client)
    try:
        if backed_up:
            _stall_then_cut(fake, client)
        else:

            async def pause() -> None:
                worker.ws.transport.pause_reading()

            fake.run(pause())
        started = time.monotonic()
        client.shutdown()
        assert time.monotonic() - started < 5
        assert client.get_connection_state() == "disconnected"
    finally:
        client.shutdown()

        async def resume() -> None:  # the engine reads again, so it sees the connection gone and can stop
            worker.ws.transport.resume_reading()

        fake.run(resume())


def test_a_result_computed_after_its_connection_died_is_dropped_with_a_warning(
        fake: EngineThread, client: III, caplog: pytest.LogCaptureFixture) -> None:
    # Before: only a debug record said that a handler's finished work went nowhere.
    release = threading.Event()
    client.register_function("hold", lambda data: release.wait(10) and "done")
    fake.wait_registered("hold")
    caller = register_worker(fake.url, InitOptions(worker_name="caller", reconnection_config=FAST_RECONNECT))
    try:
        call = in_thread(lambda: caller.trigger({"function_id": "hold", "payload": {}}))
        fake.wait_for(lambda: "hold" in {route.function_id for route in fake.engine.routes.values()})
        worker = fake.worker(client)
        old = client.worker_id

        async def cut() -> None:
            worker.ws.transport.abort()

        with caplog.at_level(logging.WARNING, logger="iii.iii"):
            fake.run(cut())
            with pytest.raises(InvocationError, match="invocation_stopped"):
                call.result(5)
            wait_until(lambda: reconnected(client, old))
            release.set()
            wait_until(lambda: any("Dropped since the last warning" in r.getMessage() for r in caplog.records))
        [record] = [r for r in caplog.records if "Dropped since the last warning" in r.getMessage()]
        assert record.levelno == logging.WARNING and "latest: 'hold'" in record.getMessage()
        assert "1 result(s) of handlers that finished after it was lost" in record.getMessage()
    finally:
        caller.shutdown()


def _at_once(count: int, fn: Any) -> list[Any]:
    """Run ``fn()`` in ``count`` threads released together; their results."""
    barrier = threading.Barrier(count)
    results: list[Any] = []

    def run() -> None:
        barrier.wait(5)
        results.append(fn())

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == count
    return results


def test_on_functions_available_from_many_threads_keeps_one_trigger(fake: EngineThread, client: III) -> None:
    # Before: threads subscribing at once each registered a trigger (each callback then ran once per trigger on every
    # change), and the extra ones stayed after the last unsubscribe.
    def available() -> list[dict[str, Any]]:
        return [t for t in fake.worker_triggers() if t["trigger_type"] == "engine::functions-available"]

    for _ in range(5):
        unsubscribes = _at_once(8, lambda: client.on_functions_available(lambda functions: None))
        client.list_functions()  # a round trip: every registration sent before it has been handled
        assert len(available()) == 1
        _at_once(8, lambda pending=unsubscribes: pending.pop()())
        client.list_functions()
        assert available() == []


def test_a_fire_and_forget_call_waiting_for_room_fails_when_shutdown_discards_it(fake: EngineThread) -> None:
    # Before: shutdown ended the wait for room of a fire-and-forget call and discarded its frame, and the call
    # returned None as if sent.
    client = register_worker(fake.url, InitOptions(worker_name="a", reconnection_config=FAST_RECONNECT))
    try:
        fake.stop()
        wait_until(lambda: client.get_connection_state() != "connected")
        void = {"function_id": "f", "payload": 0, "action": TriggerAction.Void()}
        for _ in range(MAX_QUEUE_SIZE):  # fills the outbound queue
            client.trigger(void)
        waiting = in_thread(lambda: client.trigger(void))
        wait_until(lambda: len(client._conn._waiting) == 1)
        client.shutdown()
        with pytest.raises(ShuttingDownError):
            waiting.result(5)
    finally:
        client.shutdown()
