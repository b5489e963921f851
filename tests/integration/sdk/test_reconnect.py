"""Connection loss: engine restarts, calls in flight, queued calls, rejected handshakes, a worker killed mid-call."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import Any

import pytest

from iii import ConnectionLostError, InitOptions, InvocationError
from iii.iii import III, register_worker

from .conftest import FAST_RECONNECT, EngineThread, Harness, MakeWorker, in_thread, reconnected, wait_until


def test_engine_restart_fails_sent_calls_and_re_registers(served: Harness, make_worker: MakeWorker) -> None:
    a, b = make_worker("a"), make_worker("b")
    release = threading.Event()
    a.register_function("r::hold", lambda data: release.wait(5) and "late")
    a.register_function("r::echo", lambda data: data)
    a.register_trigger({"type": "cron", "function_id": "r::echo", "config": {"expression": "0 0 1 1 * *"}})
    a.register_service({"id": "r"})
    served.wait_registered("r::hold", "r::echo")
    old_a, old_b = a.worker_id, b.worker_id
    call = in_thread(lambda: b.trigger({"function_id": "r::hold", "payload": {}}))
    served.wait_for(lambda: "r::hold" in served.calls_in_flight())
    served.restart()
    # S5: the call was sent on the lost connection, so it fails at once instead of timing out.
    with pytest.raises(ConnectionLostError) as info:
        call.result(10)
    assert info.value.code == "connection_lost"
    release.set()
    served.wait_registered("r::hold", "r::echo")
    served.wait_for(lambda: [t["function_id"] for t in served.worker_triggers()] == ["r::echo"])
    wait_until(lambda: reconnected(b, old_b))  # a call made before b noticed would fail with connection_lost
    assert b.trigger({"function_id": "r::echo", "payload": {"again": True}})["again"] is True
    assert a.worker_id not in (None, old_a)
    assert a.get_connection_state() == "connected"


def test_replay_order_after_restart(fake: EngineThread, make_fake_worker: MakeWorker) -> None:
    a = make_fake_worker("a")
    a.register_function("r::hold", lambda data: data)
    a.register_function("r::echo", lambda data: data)
    a.register_trigger({"type": "cron", "function_id": "r::echo", "config": {"expression": "* * * * * *"}})
    a.register_service({"id": "r"})
    fake.wait_registered("r::hold", "r::echo")
    fake.restart()
    fake.wait_registered("r::hold", "r::echo")
    frames = fake.worker(a).frames
    kinds = [f["type"] for f in frames]
    # Replay order: services, functions, triggers, then the worker metadata
    # (docs/protocol.md#reference-sdk-differences).
    assert kinds[:4] == ["registerservice", "registerfunction", "registerfunction", "registertrigger"]
    assert frames[4]["function_id"] == "engine::workers::register"


def test_calls_queued_while_disconnected_are_sent_only_if_still_pending(served: Harness) -> None:
    b = register_worker(served.url, InitOptions(worker_name="b", reconnection_config=FAST_RECONNECT))
    handled: list[Any] = []

    def record(data: Any) -> Any:
        handled.append(data)
        return {"got": data}

    try:
        b.register_function("self::f", record)
        served.wait_registered("self::f")
        served.stop()
        wait_until(lambda: b.get_connection_state() != "connected")  # from now on calls are queued
        expired = in_thread(lambda: b.trigger({"function_id": "self::f", "payload": "stale", "timeout_ms": 50}))
        with pytest.raises(TimeoutError):
            expired.result(5)
        kept = in_thread(lambda: b.trigger({"function_id": "self::f", "payload": "fresh"}))
        served.start()
        assert kept.result(10) == {"got": "fresh"}
        b.list_functions()  # one more round trip: a re-sent stale call would have been handled by now
        assert handled == ["fresh"]
    finally:
        b.shutdown()


def test_queued_stale_call_is_never_on_the_wire(fake: EngineThread) -> None:
    b = register_worker(fake.url, InitOptions(worker_name="b", reconnection_config=FAST_RECONNECT))
    try:
        b.register_function("self::f", lambda data: {"got": data})
        fake.wait_registered("self::f")
        fake.stop()
        wait_until(lambda: b.get_connection_state() != "connected")  # from now on calls are queued
        expired = in_thread(lambda: b.trigger({"function_id": "self::f", "payload": "stale", "timeout_ms": 50}))
        with pytest.raises(TimeoutError):
            expired.result(5)
        kept = in_thread(lambda: b.trigger({"function_id": "self::f", "payload": "fresh"}))
        fake.start()
        assert kept.result(10) == {"got": "fresh"}
        frames = fake.worker(b).frames
        payloads = [f["data"] for f in frames if f["type"] == "invokefunction" and f["function_id"] == "self::f"]
        assert payloads == ["fresh"]
    finally:
        b.shutdown()


def test_rejected_handshakes_keep_reconnecting(fake: EngineThread) -> None:
    fake.engine.reject_handshakes = 3
    client = register_worker(fake.url, InitOptions(reconnection_config=FAST_RECONNECT))
    try:
        assert client.get_connection_state() == "connected"
        assert fake.engine.rejected == 3
    finally:
        client.shutdown()


def test_max_retries_gives_up_with_connection_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    options = InitOptions(reconnection_config=type(FAST_RECONNECT)(initial_delay_ms=1, max_retries=2))
    with pytest.raises(ConnectionError, match="failed"):
        register_worker(f"ws://127.0.0.1:{port}", options)


WORKER = """
import sys, threading
from iii import register_worker
iii = register_worker(sys.argv[1])
iii.register_function("victim::hang", lambda data: threading.Event().wait())
print("ready", flush=True)
threading.Event().wait()
"""


def test_worker_killed_mid_call(served: Harness, make_worker: MakeWorker) -> None:
    b = make_worker("caller")
    proc = subprocess.Popen([sys.executable, "-c", WORKER, served.url], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "OTEL_ENABLED": "false"})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        served.wait_registered("victim::hang")
        call = in_thread(lambda: b.trigger({"function_id": "victim::hang", "payload": {}}))
        served.wait_for(lambda: "victim::hang" in served.calls_in_flight())
        proc.kill()
        with pytest.raises(InvocationError) as info:
            call.result(10)
        assert info.value.code == "invocation_stopped"
        assert info.value.message in (  # the production engine's words (the fake's), or ours naming function and cause
            "Invocation stopped",
            "Invocation of victim::hang stopped: its callee's worker disconnected before answering; the call may "
            "have run")
        assert b.get_connection_state() == "connected"  # only the callee went away
    finally:
        proc.kill()
        proc.wait(5)


def test_async_methods_from_a_foreign_loop_during_reconnect(served: Harness) -> None:
    import asyncio

    client = III(served.url, InitOptions(reconnection_config=FAST_RECONNECT))
    try:
        async def main() -> Any:
            await asyncio.to_thread(client._wait_until_connected, 10)
            fns = await client.list_functions_async()
            await client.shutdown_async()
            return fns

        listed = {f.function_id for f in asyncio.run(main())}
        assert listed == {f for f in served.function_ids() if not f.startswith("engine::")}
        assert client.get_connection_state() == "disconnected"
    finally:
        client.shutdown()
