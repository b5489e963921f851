"""A call whose data no frame can hold (data the engine made itself: a published message or a stream trigger's event
wrapping a value, too deep for JSON once the frame's own level is counted) fails with ``serialization_error`` naming
why, and nothing else is disturbed. Before, the encode's ValueError escaped: a trigger's call ended its task as an
unretrieved exception, never made and never logged as a failed trigger (a subscriber's call, fired without a wait,
was logged)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from iii.wire import dumps
from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.base import EngineError
from iii_engine.modules.http.api import RestApiModule
from tests.integration.engine_streams.helpers import Recorder, Worker, registered, trigger_active
from tests.json_values import nested
from tests.polling import until

from .raw import RawWorker

UNWRITABLE = "the call of h could not be written for its worker (JSON nested deeper than 128 levels)"



async def test_a_call_whose_data_no_frame_holds_fails_saying_why_and_the_worker_serves_on(
        caplog: pytest.LogCaptureFixture) -> None:
    config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec("modules::pubsub::PubSubModule")])
    async with Engine(config=config) as engine:
        await _serve_on(engine, caplog)


async def _serve_on(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    worker = await Worker.connect(engine.url)
    try:
        seen = Recorder(answer="ok")
        await worker.register("h", seen)
        await registered(engine, "h")
        # a trigger-fired call waiting for a place at that worker (it said worker_busy): an unwritable call, which
        # never took one, must not wake it (woken, it asked again at once and spent its tries; an event was lost)
        (callee,) = engine.workers.values()
        waiting = asyncio.get_running_loop().create_future()
        engine.invocations._slot_waiters.setdefault(callee.id, {})[waiting] = None
        with pytest.raises(EngineError) as caught:
            await engine.invoke("h", nested(128))  # the frame's "data" adds the 129th level
        assert (caught.value.code, caught.value.message) == ("serialization_error", UNWRITABLE)
        assert not waiting.done()
        del engine.invocations._slot_waiters[callee.id]
        assert await engine.invoke("h", nested(127)) == "ok"  # the deepest a frame holds

        subscribed = await worker.trigger("subscribe", "h", {"topic": "deep"})
        await trigger_active(engine, subscribed)
        await engine.invoke("publish", {"topic": "deep", "data": nested(128)})
        await engine.invoke("publish", {"topic": "deep", "data": "after"})
        assert (await seen.wait_for(2))[1:] == ["after"]
        assert f"trigger-fired call of h not made: serialization_error: {UNWRITABLE}" in caplog.text
        assert not engine.invocations.pending
    finally:
        await worker.close()


async def test_a_functions_available_push_no_frame_holds_is_logged_once_and_the_next_set_goes_out(
        caplog: pytest.LogCaptureFixture) -> None:
    """A function whose metadata nests 125 deep (its registration's frame holds it) is 4 levels deeper in the
    listeners' push. Before, that push was taken for one not sent, and made again every second for as long as the
    function stayed registered, a warning each time."""
    config = EngineConfig(host="127.0.0.1", port=0, modules=[], functions_available_debounce_ms=20)
    async with Engine(config=config) as engine:
        listener, deep = await RawWorker.connect(engine.url), await RawWorker.connect(engine.url)
        try:
            await listener.register("sub::on")
            await listener.send({"type": "registertrigger", "id": "sub", "trigger_type": "engine::functions-available",
                                 "function_id": "sub::on", "config": {}})
            first = await listener.expect("invokefunction", function_id="sub::on")
            await listener.send({"type": "invocationresult", "invocation_id": first["invocation_id"],
                                 "function_id": "sub::on", "result": None})
            await deep.register("deep::f", metadata={"m": nested(124)})
            await until(lambda: "functions-available call of sub::on not made" in caplog.text, 10)
            assert ("functions-available call of sub::on not made: serialization_error: the call of sub::on could not "
                    "be written for its worker (JSON nested deeper than 128 levels)") in caplog.text
            await deep.close()  # the deep function leaves: the next set is written and goes out
            after = await listener.expect("invokefunction", function_id="sub::on")
            assert "deep::f" not in {f["function_id"] for f in after["data"]["functions"]}
            assert caplog.text.count("functions-available call of sub::on not made") == 1
        finally:
            await listener.close()


async def test_a_stream_send_too_deep_for_its_trigger_calls_is_refused_before_they_are_made(
        caplog: pytest.LogCaptureFixture) -> None:
    """A send's event wraps its data 3 deep and a trigger's call 1 more: data 125 deep went to the socket clients
    while every trigger's call failed (and on SQL and Redis stores the send failed after its triggers were called)."""
    config = EngineConfig(host="127.0.0.1", port=0,
                          modules=[ModuleSpec("modules::stream::StreamModule", {"host": "127.0.0.1", "port": 0})])
    async with Engine(config=config) as engine:
        await _send_deep(engine, caplog)


async def _send_deep(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    worker = await Worker.connect(engine.url)
    try:
        seen = Recorder()
        await worker.register("on_send", seen)
        subscribed = await worker.trigger("stream", "on_send", {"stream_name": "deep", "group_id": "", "item_id": ""})
        await trigger_active(engine, subscribed)
        send = {"stream_name": "deep", "group_id": "g", "type": "t"}
        assert await worker.error("stream::send", {**send, "data": nested(125)}) == {
            "code": "STREAM_SEND_ERROR",
            "message": "data nests deeper than 124 levels: the events it goes into and the trigger calls they make "
                       "add 4, and JSON is read 128 deep at most"}
        await worker.result("stream::send", {**send, "data": nested(124)})
        assert [p["event"]["event"]["data"] for p in await seen.wait_for(1)] == [nested(124)]
        assert "serialization_error" not in caplog.text
    finally:
        await worker.close()


async def test_a_rest_request_whose_body_no_frame_holds_is_a_400_with_or_without_a_condition() -> None:
    """A JSON body 127 deep parses (128 levels), but the handler's payload puts it 2 levels deeper: the request was a
    500, and with a condition a 422 "condition not met", the condition never asked."""
    spec = ModuleSpec("modules::api::RestApiModule", {"host": "127.0.0.1", "port": 0})
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[spec])) as engine:
        module = engine.module("http_api")
        assert isinstance(module, RestApiModule)
        worker = await RawWorker.connect(engine.url)
        try:
            for function_id in ("h", "cond"):
                await worker.register(function_id)
            for path, extra in (("plain", {}), ("checked", {"condition_function_id": "cond"})):
                await worker.send({"type": "registertrigger", "id": path, "trigger_type": "http", "function_id": "h",
                                   "config": {"api_path": path, "http_method": "POST", **extra}})
            await worker.sync()
            async with httpx.AsyncClient(base_url=module.base_url, timeout=20) as client:
                for path, called in (("plain", "h"), ("checked", "cond")):
                    response = await client.post(f"/{path}", content=dumps(nested(127)),
                                                 headers={"Content-Type": "application/json"})
                    assert (response.status_code, response.json()) == (400, {
                        "code": "serialization_error",
                        "error": f"the call of {called} could not be written for its worker (JSON nested deeper "
                                 "than 128 levels)"})
            await worker.nothing_for(0.1)  # neither the handler nor the condition was called
        finally:
            await worker.close()
