"""Behaviour items of the reference contract (docs/protocol.md#reference-sdk-differences) and
docs/protocol.md#sdk-improvements fixes not covered by the other SDK tests."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import threading
import uuid
from typing import Any

import pytest
import websockets
from pydantic import BaseModel

import iii.iii as client_module
from iii import InitOptions, TriggerConfig, TriggerHandler
from iii.iii import register_worker

from .conftest import FAST_RECONNECT, EngineThread, Harness, MakeWorker, reconnected, wait_until
from .test_connection import Recorder


def test_register_worker_raises_connection_error_after_the_wait(
    fake: EngineThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue #8: no longer "returns a disconnected client anyway" (README: raises ConnectionError).
    monkeypatch.setattr(client_module, "_REFERENCE_CONNECT_WAIT_S", 0.3)
    fake.engine.reject_handshakes = 10**9
    with pytest.raises(ConnectionError, match=f"cannot reach the engine at {fake.url} within 0.3 s"):
        register_worker(fake.url, InitOptions(reconnection_config=FAST_RECONNECT))


def test_worker_metadata_defaults(fake: EngineThread, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANG", "de_DE.UTF-8")
    client = register_worker(fake.url, InitOptions(reconnection_config=FAST_RECONNECT))
    try:
        frames = fake.worker(client).frames
        (meta,) = [f for f in frames if f.get("function_id") == "engine::workers::register"]
        assert "invocation_id" not in meta and meta["action"] == {"type": "void"}
        data = meta["data"]
        assert isinstance(data.pop("version"), str)
        assert data == {
            "runtime": "python",
            "name": f"{platform.node()}:{os.getpid()}",
            "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
            "pid": os.getpid(),
            "telemetry": {"language": "de_DE", "project_name": None, "framework": None, "amplitude_api_key": None},
        }
    finally:
        client.shutdown()


async def test_an_empty_error_object_counts_as_success(served: Harness, make_worker: MakeWorker) -> None:
    caller = await asyncio.to_thread(make_worker, "caller")
    async with websockets.connect(served.url) as provider:
        await provider.send(json.dumps({"type": "registerfunction", "id": "raw::five"}))
        await asyncio.to_thread(served.wait_registered, "raw::five")
        call = asyncio.ensure_future(caller.trigger_async({"function_id": "raw::five", "payload": {}}))
        while True:
            msg = json.loads(await asyncio.wait_for(provider.recv(), 10))
            if msg.get("type") == "invokefunction":
                break
        await provider.send(json.dumps({"type": "invocationresult", "invocation_id": msg["invocation_id"],
                                        "function_id": "raw::five", "result": 5, "error": {}}))
        # No exception either way. The fake forwards both keys; our engine forwards only a non-null error, so
        # the caller sees {"error": {}} without a result, which is success with None
        # (docs/protocol.md#production-behaviour-our-sdk-copes-with T13).
        expected = {"fake": 5, "real": None}[served.kind]
        assert await asyncio.wait_for(call, 10) == expected


def test_invocation_without_id_runs_and_is_not_answered(fake: EngineThread, make_fake_worker: MakeWorker) -> None:
    a = make_fake_worker("a")
    ran = threading.Event()

    async def note(data: Any) -> str:
        ran.set()
        return "nobody reads this"

    a.register_function("ff::note", note)
    fake.wait_registered("ff::note")
    worker = fake.worker(a)
    fake.send_to(a, {"type": "invokefunction", "function_id": "ff::note", "data": {}})
    assert ran.wait(5)
    a.list_functions()  # one more round trip on the same socket, after the handler finished
    assert not [f for f in worker.frames if f["type"] == "invocationresult"]


def test_incoming_frames_larger_than_one_mebibyte(served: Harness, make_worker: MakeWorker) -> None:
    a, b = make_worker("a"), make_worker("b")
    a.register_function("big::echo", lambda data: data)
    served.wait_registered("big::echo")
    # the reference's client library would drop the connection at 1 MiB (docs/protocol.md#sdk-improvements S13)
    size = 3 * 2**20
    # Both directions are big: the invocation reaching a, and the result reaching b.
    assert len(b.trigger({"function_id": "big::echo", "payload": "x" * size})) == size
    assert a.get_connection_state() == b.get_connection_state() == "connected"


class _Quiet(TriggerHandler[Any]):
    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        return None

    async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
        return None


def test_trigger_types_are_replayed_first(fake: EngineThread, make_fake_worker: MakeWorker) -> None:
    a = make_fake_worker("a")
    a.register_function("rt::fn", lambda data: data)
    a.register_trigger_type({"id": "rt::type", "description": "replayed"}, _Quiet())
    fake.wait_registered("rt::fn")
    fake.wait_for(lambda: "rt::type" in fake.engine.trigger_types)
    old = a.worker_id
    fake.restart()
    fake.wait_for(lambda: "rt::type" in fake.engine.trigger_types and "rt::fn" in fake.engine.functions)
    assert a.worker_id != old
    kinds = [f["type"] for f in fake.worker(a).frames]
    assert kinds[:2] == ["registertriggertype", "registerfunction"]


def test_functions_available_unsubscribe_keeps_the_function(served: Harness, make_worker: MakeWorker) -> None:
    a = make_worker("a")
    unsubscribe = a.on_functions_available(lambda functions: None)
    served.wait_for(lambda: len(served.worker_triggers()) == 1)
    (trigger,) = served.worker_triggers()
    assert trigger["trigger_type"] == "engine::functions-available" and trigger["config"] == {}
    assert trigger["function_id"].startswith("iii.on_functions_available.")
    unsubscribe()
    served.wait_for(lambda: not served.worker_triggers())
    assert trigger["function_id"] in served.function_ids()


async def test_telemetry_frames_share_the_worker_socket() -> None:
    recorder = Recorder()
    async with websockets.serve(recorder.handle, "127.0.0.1", 0) as server:
        recorder.server = server
        client = await asyncio.to_thread(register_worker, recorder.url, InitOptions(worker_name="tel"))
        try:
            with pytest.raises(ValueError, match="OTLP, MTRC or LOGS"):
                client.send_telemetry(b"JUNK{}")
            client.send_telemetry(b"OTLP{}")
            await recorder.wait_for(lambda: b"OTLP{}" in recorder.frames)
            assert recorder.connections == 1  # docs/protocol.md#sdk-improvements S12: no second telemetry socket
        finally:
            await client.shutdown_async()


async def test_telemetry_is_the_only_frame_a_full_outbound_queue_may_drop() -> None:
    """Behind a slow engine the queue fills: telemetry (best effort) is sent droppable, nothing else is."""
    recorder = Recorder()
    async with websockets.serve(recorder.handle, "127.0.0.1", 0) as server:
        recorder.server = server
        client = await asyncio.to_thread(register_worker, recorder.url, InitOptions(worker_name="tel"))
        sent: list[tuple[object, bool]] = []
        original = client._conn.send_soon

        def recording(frame: str | bytes, key: str | None = None, *, droppable: bool = False) -> None:
            sent.append((frame, droppable))
            original(frame, key, droppable=droppable)

        client._conn.send_soon = recording  # type: ignore[method-assign]
        try:
            client.send_telemetry(b"OTLP{}")
            client.register_function("tel::f", lambda data: data)
            await recorder.wait_for(lambda: b"OTLP{}" in recorder.frames
                                    and any("tel::f" in str(f) for f in recorder.frames))
            assert [droppable for frame, droppable in sent if frame == b"OTLP{}"] == [True]
            assert [droppable for frame, droppable in sent if "tel::f" in str(frame)] == [False]
        finally:
            await client.shutdown_async()


async def test_a_pong_is_the_other_frame_a_full_outbound_queue_may_drop() -> None:
    """An engine flooding pings while it does not read must not grow the queue without end: pongs go droppable."""
    async def handle(ws: Any) -> None:
        async for raw in ws:
            if "pong::f" in str(raw):  # registered after the recording below is in place
                await ws.send('{"type":"ping"}')

    async with websockets.serve(handle, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        client = await asyncio.to_thread(register_worker, url, InitOptions(worker_name="pong"))
        sent: list[tuple[object, bool]] = []
        original = client._conn.send_soon
        answered = asyncio.Event()
        loop = asyncio.get_running_loop()

        def recording(frame: str | bytes, key: str | None = None, *, droppable: bool = False) -> None:
            sent.append((frame, droppable))
            original(frame, key, droppable=droppable)
            if frame == '{"type":"pong"}':
                loop.call_soon_threadsafe(answered.set)

        client._conn.send_soon = recording  # type: ignore[method-assign]
        try:
            client.register_function("pong::f", lambda data: data)
            await asyncio.wait_for(answered.wait(), 10)
            assert [droppable for frame, droppable in sent if frame == '{"type":"pong"}'] == [True]
        finally:
            await client.shutdown_async()


def test_unregister_trigger_type_is_not_replayed(served: Harness, make_worker: MakeWorker) -> None:
    a = make_worker("a")
    a.register_trigger_type({"id": "gone::type", "description": "short-lived"}, _Quiet())
    served.wait_for(lambda: "gone::type" in served.worker_trigger_types())
    a.unregister_trigger_type({"id": "gone::type"})
    served.wait_for(lambda: "gone::type" not in served.worker_trigger_types())  # E3 on our engine
    a.register_function("after::restart", lambda data: data)
    served.restart()
    served.wait_registered("after::restart")
    a.list_functions()  # barrier: the whole replay of the new connection is in
    assert "gone::type" not in served.worker_trigger_types()


def test_unregister_trigger_type_frame(fake: EngineThread, make_fake_worker: MakeWorker) -> None:
    a = make_fake_worker("a")
    a.register_trigger_type({"id": "gone::type", "description": "short-lived"}, _Quiet())
    a.unregister_trigger_type({"id": "gone::type"})
    fake.wait_for(lambda: "gone::type" not in fake.engine.trigger_types)
    assert {"type": "unregistertriggertype", "id": "gone::type"} in fake.worker(a).frames
    old = a.worker_id
    fake.restart()
    wait_until(lambda: reconnected(a, old))
    assert all(f["type"] != "registertriggertype" for f in fake.worker(a).frames)


def test_list_triggers_include_internal_and_ids_are_uuid4(served: Harness, make_worker: MakeWorker) -> None:
    a = make_worker("a")
    a.register_trigger({"type": "cron", "function_id": "engine::noop", "config": {"expression": "0 0 1 1 * *"}})
    served.wait_for(lambda: len(served.worker_triggers()) == 1)
    assert [t for t in a.list_triggers() if t.function_id == "engine::noop"] == []
    (listed,) = [t for t in a.list_triggers(include_internal=True) if t.function_id == "engine::noop"]
    assert uuid.UUID(listed.id).version == 4


def test_list_triggers_sends_include_internal(fake: EngineThread, make_fake_worker: MakeWorker) -> None:
    a = make_fake_worker("a")
    a.list_triggers()
    a.list_triggers(include_internal=True)
    calls = [f["data"] for f in fake.worker(a).frames if f.get("function_id") == "engine::triggers::list"]
    assert calls == [{"include_internal": False}, {"include_internal": True}]


class Point(BaseModel):
    x: int


def test_handlers_get_raw_json_even_when_annotated(served: Harness, make_worker: MakeWorker) -> None:
    a, b = make_worker("a"), make_worker("b")

    def kind(data: Point) -> str:
        return type(data).__name__

    a.register_function("raw::kind", kind)
    served.wait_registered("raw::kind")
    assert b.trigger({"function_id": "raw::kind", "payload": {"x": 1}}) == "dict"
