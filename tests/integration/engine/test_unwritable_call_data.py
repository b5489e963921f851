"""A call whose data no frame can hold (data the engine made itself: a published message or a stream trigger's event
wrapping a value, too deep for JSON once the frame's own level is counted) fails with ``serialization_error`` naming
why, and nothing else is disturbed. Before, the encode's ValueError escaped: a trigger's call ended its task as an
unretrieved exception, never made and never logged as a failed trigger (a subscriber's call, fired without a wait,
was logged)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest

from iii.wire import dumps, loads
from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.base import EngineError
from iii_engine.modules.http.api import RestApiModule
from tests.integration.engine_streams.helpers import Recorder, Worker, registered, trigger_active
from tests.json_values import nested

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


async def test_a_function_whose_metadata_no_listing_holds_is_registered_without_it_and_listings_go_on(
        caplog: pytest.LogCaptureFixture) -> None:
    """Metadata 125 deep fits its registration's frame, but the function listings put it 4 levels deeper: kept, it
    made every engine::functions::list answer and functions-available push unreadable (past 128 levels), and the
    push, taken for unsent, was made again every second. The function is registered without it, said once."""
    config = EngineConfig(host="127.0.0.1", port=0, modules=[], functions_available_debounce_ms=20)
    async with Engine(config=config) as engine:
        listener, deep = await RawWorker.connect(engine.url), await RawWorker.connect(engine.url)
        try:
            await listener.register("sub::on")
            await listener.send({"type": "registertrigger", "id": "sub", "trigger_type": "engine::functions-available",
                                 "function_id": "sub::on", "config": {}})
            push = await listener.expect("invokefunction", function_id="sub::on")
            await deep.register("deep::f", metadata={"m": nested(124)})
            await deep.register("fits::f", metadata={"m": nested(123)})
            while not {"deep::f", "fits::f"} <= {f["function_id"] for f in push["data"]["functions"]}:
                await listener.send({"type": "invocationresult", "invocation_id": push["invocation_id"],
                                     "function_id": "sub::on", "result": None})
                push = await listener.expect("invokefunction", function_id="sub::on")
            listed = await listener.result_of("engine::functions::list", {})
            for functions in (push["data"]["functions"], listed["functions"]):
                metadata = {f["function_id"]: f["metadata"] for f in functions}
                assert (metadata["deep::f"], metadata["fits::f"]) == (None, {"m": nested(123)})
            loads(dumps(push))  # within the levels our SDK reads
            assert caplog.text.count("registered without its metadata") == 1
            assert (f"worker {deep.worker_id}: function deep::f registered without its metadata: nested too deep for "
                    "the function listings (at most 124 levels)") in caplog.text
        finally:
            await listener.close()
            await deep.close()


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
            # a handler's own serialization_error (its result had no JSON form, say) is the function's failure: a
            # 500, as any other; it was a 400 (the client's fault) by its code alone (found by the attack)
            async with httpx.AsyncClient(base_url=module.base_url, timeout=20) as client:
                request = asyncio.create_task(client.post("/plain", json={"a": 1}))
                call = await worker.expect("invokefunction", function_id="h")
                await worker.send({"type": "invocationresult", "invocation_id": call["invocation_id"],
                                   "function_id": "h",
                                   "error": {"code": "serialization_error", "message": "my result had a set"}})
                response = await request
                assert response.status_code == 500
                assert response.json()["error"] == "my result had a set"
        finally:
            await worker.close()


async def test_a_trigger_whose_config_no_listing_holds_is_not_registered_and_the_listing_stays_readable(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    """engine::triggers::list puts a config 4 levels deeper: one 125 deep made it unreadable for every SDK worker."""
    worker = await RawWorker.connect(engine.url)
    try:
        await worker.register("f")
        for trigger_id, levels in (("deep", 124), ("fits", 123)):
            await worker.send({"type": "registertrigger", "id": trigger_id, "function_id": "f",
                               "trigger_type": "engine::functions-available", "config": {"x": nested(levels)}})
        await worker.sync()
        answer = await worker.call("engine::triggers::list", {"include_internal": True})
        loads(dumps(answer))  # within the levels our SDK reads
        assert [t["id"] for t in answer["result"]["triggers"]] == ["fits"]
        assert (f"worker {worker.worker_id}: trigger deep not registered: its config nests deeper than 124 levels, "
                "too deep for engine::triggers::list") in caplog.text
    finally:
        await worker.close()


async def test_registrations_dropping_deep_metadata_are_logged_in_a_burst(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    """One worker re-registering a function with deep metadata wrote a warning per frame (8,500 lines a second)."""
    worker = await RawWorker.connect(engine.url)
    try:
        for _ in range(30):
            await worker.register("deep::f", metadata={"m": nested(124)})
        await worker.sync()
        said = [r.getMessage() for r in caplog.records if "registered without its metadata" in r.getMessage()]
        one_by_one = [line for line in said if line.startswith(f"worker {worker.worker_id}: function deep::f")]
        counted = [line for line in said if line.startswith("triggers: ")]  # (the engine's registration notes)
        assert (len(one_by_one), len(counted)) == (10, 1)
        assert ", 1 functions registered without a field too deep for the function listings" in counted[0]
    finally:
        await worker.close()


async def test_a_queued_job_whose_call_no_frame_holds_goes_to_the_dlq_at_once(
        caplog: pytest.LogCaptureFixture) -> None:
    """Before, each of its attempts failed the same way after its backoff, then it was dead-lettered: no retry of the
    same data can be written. A job the worker can read still runs."""
    settings = {"queue_configs": {"q": {"max_retries": 5, "backoff_ms": 60_000}}}
    config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec("modules::queue::QueueModule", settings)])
    async with Engine(config=config) as engine:
        worker = await Worker.connect(engine.url)
        try:
            seen = Recorder(answer="ok")
            await worker.register("h", seen)
            await registered(engine, "h")
            queue = engine.module("queue")
            await queue.enqueue("q", "h", nested(128))  # type: ignore[union-attr]
            await queue.enqueue("q", "h", nested(127))  # type: ignore[union-attr]
            assert await seen.wait_for(1) == [nested(127)]
            page = await until_dead(engine)
            [letter] = page["messages"]
            assert letter["error"] == f"serialization_error: {UNWRITABLE}"
            assert letter["job"]["attempts"] == 1  # no backoff waited, no further attempt
            # a page holding it is still readable over a worker's socket: the letter's data is left out of it (one
            # such letter made the whole page a serialization_error); the letter keeps it
            listed = await worker.result("engine::queue::dlq_messages", {"topic": "q"})
            [shown] = listed["messages"]
            assert shown["job"]["data"] is None and shown["job"]["id"] == letter["job"]["id"]
            assert "nests deeper than 123 levels" in shown["data_omitted"]
            [kept] = await queue.store.dlq_page("__fn_queue::q", 0, 10)  # type: ignore[union-attr]
            assert kept.job.data == nested(128)
            assert "moved to the DLQ at once (attempt 1 of 5)" in caplog.text
            assert len(seen.payloads) == 1
        finally:
            await worker.close()


async def until_dead(engine: Engine) -> dict[str, Any]:
    for _ in range(500):  # in process: the page holds the letter's data, which a frame cannot
        page: dict[str, Any] = await engine.invoke("engine::queue::dlq_messages", {"topic": "q"})
        if page["messages"]:
            return page
        await asyncio.sleep(0.01)
    raise AssertionError("the job never reached the DLQ")


async def test_many_unwritable_jobs_are_logged_in_a_burst(caplog: pytest.LogCaptureFixture) -> None:
    """Found by the attack: 10,000 such jobs wrote 10,000 warnings in a second."""
    settings = {"queue_configs": {"q": {"max_retries": 5, "concurrency": 10}}}
    config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec("modules::queue::QueueModule", settings)])
    async with Engine(config=config) as engine:
        worker = await Worker.connect(engine.url)
        try:
            await worker.register("h", Recorder(answer="ok"))
            await registered(engine, "h")
            queue = engine.module("queue")
            for _ in range(40):
                await queue.enqueue("q", "h", nested(128))  # type: ignore[union-attr]
            for _ in range(500):
                page = await engine.invoke("engine::queue::dlq_messages", {"topic": "q", "limit": 100})
                if page["total"] == 40:
                    break
                await asyncio.sleep(0.01)
            assert page["total"] == 40
        finally:
            await worker.close()
    lines = [r.getMessage() for r in caplog.records if "moved to the DLQ at once" in r.getMessage()]
    assert sum(line.startswith("queue __fn_queue::q: job ") for line in lines) == 10
    counted = [re.search(r"(\d+) job\(s\) moved to the DLQ at once, their calls unwritable, not logged", line)
               for line in lines]
    assert sum(int(m.group(1)) for m in counted if m) == 30, lines  # the rest, counted (the first at once)
    assert len(lines) <= 13
