"""Control socket framing (docs/protocol.md#framing, docs/protocol.md#connection-lifecycle,
docs/protocol.md#engine-improvements E1): what the engine accepts, drops and answers."""

from __future__ import annotations

import json
import logging
import uuid

import pytest
import websockets
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from iii_engine import Engine, EngineConfig

from .raw import RawWorker

pytestmark = [pytest.mark.timeout(20), pytest.mark.our_engine("engine-core test: our socket's E1 limits")]


async def test_workerregistered_arrives_first_with_a_uuid4(engine: Engine) -> None:
    worker = await RawWorker.connect(engine.url)
    assert uuid.UUID(worker.worker_id).version == 4
    assert worker.worker_id in engine.workers
    await worker.close()


async def test_each_connection_gets_a_new_worker_id(engine: Engine) -> None:
    a = await RawWorker.connect(engine.url)
    b = await RawWorker.connect(engine.url)
    assert a.worker_id != b.worker_id
    await a.close()
    await b.close()


async def test_ping_message_gets_pong_and_websocket_ping_is_answered(engine: Engine) -> None:
    worker = await RawWorker.connect(engine.url)
    await worker.send({"type": "ping"})
    assert await worker.recv() == {"type": "pong"}
    latency = await (await worker.ws.ping())
    assert latency >= 0
    await worker.close()


async def test_blank_pong_and_telemetry_frames_are_ignored(engine: Engine) -> None:
    worker = await RawWorker.connect(engine.url)
    await worker.send_raw("")
    await worker.send_raw("   \n")
    await worker.send({"type": "pong"})
    await worker.send({"type": "workerregistered", "worker_id": "x"})
    await worker.send_raw(b"OTLP" + b'{"resourceSpans":[]}')
    await worker.send_raw(b"MTRC{}")
    await worker.send_raw(b"LOGS{}")
    await worker.sync()
    state = engine.workers[worker.worker_id]
    assert state.telemetry_frames == 3
    assert state.dropped_frames == 0
    await worker.nothing_for(0.05)
    await worker.close()


async def test_binary_json_frames_are_protocol_messages(engine: Engine) -> None:
    worker = await RawWorker.connect(engine.url)
    await worker.send_raw(json.dumps({"type": "registerfunction", "id": "bin::fn"}).encode())
    invocation_id = str(uuid.uuid4())
    await worker.send_raw(json.dumps({"type": "invokefunction", "invocation_id": invocation_id,
                                      "function_id": "engine::functions::list", "data": {}}).encode())
    frame = await worker.expect("invocationresult", invocation_id=invocation_id)
    assert [f["function_id"] for f in frame["result"]["functions"]] == ["bin::fn"]
    await worker.close()


GARBAGE = [
    ("not json at all", "invalid JSON"),
    ("[1, 2, 3]", "must be a JSON object"),
    ('{"no_type": 1}', "missing or non-string 'type'"),
    ('{"type": "teleport"}', "unknown message type 'teleport'"),
    ('{"type": "registerfunction"}', "registerfunction: id"),
    ('{"type": "registertriggertype", "id": "t"}', "description"),
    ('{"type": "registertrigger", "id": "t", "trigger_type": "x", "function_id": "f"}', "config"),
    ('{"type": "registerservice", "id": "s", "name": null}', "'name' must not be null"),
    ('{"type": "invocationresult", "invocation_id": "nope", "function_id": "f"}', "is not a UUID"),
    ('{"type": "invokefunction", "function_id": "f", "invocation_id": "nope", "data": 1}', "is not a UUID"),
    ('{"type": "invokefunction", "function_id": 5, "data": 1}', "function_id"),
]


@pytest.mark.parametrize(("raw", "reason"), GARBAGE)
async def test_garbage_is_logged_and_dropped_while_others_are_served(
        engine: Engine, raw: str, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    bad = await RawWorker.connect(engine.url)
    good = await RawWorker.connect(engine.url)
    await good.register("good::echo")
    await good.sync()
    with caplog.at_level(logging.WARNING, logger="iii_engine"):
        await bad.send_raw(raw)
        await bad.sync()  # still connected and still read in order
    assert engine.workers[bad.worker_id].dropped_frames == 1
    assert any(bad.worker_id in r.getMessage() and reason in r.getMessage() for r in caplog.records), \
        [r.getMessage() for r in caplog.records]
    # the bad worker is unharmed and the engine still routes between workers
    await bad.send({"type": "invokefunction", "invocation_id": str(uuid.uuid4()), "function_id": "good::echo",
                    "data": {"x": 1}})
    request = await good.serve_one({"ok": True})
    assert request["data"]["x"] == 1
    frame = await bad.expect("invocationresult")
    assert frame["result"] == {"ok": True}
    await bad.nothing_for(0.05)  # nothing was sent back for the garbage
    await bad.close()
    await good.close()


async def test_broken_invoke_with_valid_id_gets_invalid_message(engine: Engine) -> None:
    worker = await RawWorker.connect(engine.url)
    invocation_id = str(uuid.uuid4())
    await worker.send({"type": "invokefunction", "invocation_id": invocation_id, "function_id": "f"})  # no data
    frame = await worker.expect("invocationresult", invocation_id=invocation_id)
    assert frame["function_id"] == "f"
    assert frame["error"]["code"] == "invalid_message"
    assert "data" in frame["error"]["message"]
    await worker.close()


async def test_huge_frame_closes_only_that_connection_with_1009(caplog: pytest.LogCaptureFixture) -> None:
    config = EngineConfig(host="127.0.0.1", port=0, modules=[], max_message_size=64 * 1024)
    async with Engine(config=config) as engine:
        big = await RawWorker.connect(engine.url)
        other = await RawWorker.connect(engine.url)
        with caplog.at_level(logging.WARNING, logger="iii_engine"):
            await big.send({"type": "registerfunction", "id": "x", "description": "a" * 100_000})
            with pytest.raises(ConnectionClosedError) as info:
                await big.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        assert any("1009" in r.getMessage() for r in caplog.records)
        assert await other.result_of("engine::functions::list", {}) == {"functions": []}
        await other.close()


async def test_other_paths_are_404_and_bad_channel_queries_400(engine: Engine) -> None:
    base = engine.url
    with pytest.raises(InvalidStatus) as info:
        await websockets.connect(base + "/elsewhere")
    assert info.value.response.status_code == 404
    for query in ("", "?key=k", "?dir=read", "?key=k&dir=sideways"):
        with pytest.raises(InvalidStatus) as info:
            await websockets.connect(f"{base}/ws/channels/{uuid.uuid4()}{query}")
        assert info.value.response.status_code == 400, query
    with pytest.raises(InvalidStatus) as info:
        await websockets.connect(f"{base}/ws/channels/{uuid.uuid4()}?key=k&dir=read")
    assert info.value.response.status_code == 404  # unknown channel


async def test_the_engine_never_pings_workers(engine: Engine) -> None:
    worker = await RawWorker.connect(engine.url, ping_interval=None)
    assert engine._listener._server is not None
    connection = next(iter(engine._listener._server.connections))
    assert connection.ping_interval is None
    await worker.close()
