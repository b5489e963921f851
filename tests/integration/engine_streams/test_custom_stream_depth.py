"""A worker's custom stream is held to the stores' depth rule: a value nested past ``MAX_VALUE_DEPTH`` (125) is
refused before the worker is asked to write it, and a worker's answer holding such a value is refused with an error
that says the worker kept the change, since its change event could be written for no subscriber and no trigger.
Before, the engine passed such a value to the worker, published its event and called its triggers, whose calls all
failed with ``serialization_error``."""

from __future__ import annotations

from typing import Any

import pytest

from iii_engine import Engine
from iii_engine.modules.base import BuiltinFunction, EngineError
from iii_streams.errors import MAX_VALUE_DEPTH
from tests.json_values import nested

from .helpers import Recorder, Worker, registered

pytestmark = pytest.mark.our_engine("serves a custom stream through our engine")

KEY = {"stream_name": "cust", "group_id": "g", "item_id": "i"}
DEEPEST = nested(MAX_VALUE_DEPTH)
TOO_DEEP = nested(MAX_VALUE_DEPTH + 1)


async def _worker(engine: Engine, handlers: dict[str, Any]) -> Worker:
    worker = await Worker.connect(engine.url)
    for function_id, handler in handlers.items():
        await worker.register(function_id, handler)
        await registered(engine, function_id)
    return worker


async def test_a_set_too_deep_is_refused_before_the_worker_is_asked(engine: Engine) -> None:
    setter = Recorder({"old_value": None, "new_value": DEEPEST})
    worker = await _worker(engine, {"stream::set(cust)": setter})
    assert (await worker.result("stream::set", {**KEY, "data": DEEPEST}))["new_value"] == DEEPEST
    error = await worker.error("stream::set", {**KEY, "data": TOO_DEEP})
    assert error["code"] == "STREAM_SET_ERROR"
    assert "data nests deeper than 125 levels" in error["message"]
    assert len(setter.payloads) == 1  # only the first reached the worker
    await worker.close()


@pytest.mark.parametrize(("op", "field", "code"), [("set", "new_value", "STREAM_SET_ERROR"),
                                                   ("update", "new_value", "STREAM_UPDATE_ERROR"),
                                                   ("delete", "old_value", "STREAM_DELETE_ERROR")])
async def test_an_answer_too_deep_for_its_event_is_refused_and_no_event_goes_out(
        engine: Engine, op: str, field: str, code: str) -> None:
    answer = {"old_value": None, "new_value": None, field: TOO_DEEP}
    handler = Recorder(answer)
    watcher = Recorder()
    worker = await _worker(engine, {f"stream::{op}(cust)": handler, "watch": watcher})
    await worker.trigger("stream", "watch", {"stream_name": "cust"})
    payload: dict[str, Any] = {**KEY, "data": 1} if op == "set" else (
        {**KEY, "ops": [{"type": "set", "path": "", "value": 1}]} if op == "update" else dict(KEY))
    error = await worker.error(f"stream::{op}", payload)
    assert error["code"] == code, error
    assert error["message"].startswith(f"stream::{op}(cust) answered a change whose event cannot be sent"), error
    assert f"{field} nests deeper than 125 levels" in error["message"]
    assert len(handler.payloads) == 1
    # an event the worker's stream can carry still goes out, and it is the only one the trigger sees
    handler.answer = {"old_value": None, "new_value": 2, "old_value" if op == "delete" else "new_value": 2}
    await worker.result(f"stream::{op}", payload)
    [event] = await watcher.wait_for(1)
    assert event["event"]["data"] == 2, event
    await worker.close()


async def test_a_composed_update_is_refused_before_the_custom_set_when_a_value_is_too_deep(engine: Engine) -> None:
    getter = Recorder({"a": 1})
    setter = Recorder({"old_value": None, "new_value": None})
    worker = await _worker(engine, {"stream::get(cust)": getter, "stream::set(cust)": setter})
    # the result too deep (an in-process caller: a worker's frame cannot carry an op value this deep)
    with pytest.raises(EngineError) as caught:
        await engine.invoke("stream::update", {**KEY, "ops": [{"type": "set", "path": "b", "value": DEEPEST}]})
    assert caught.value.code == "STREAM_UPDATE_ERROR"
    assert "the updated value nests deeper than 125 levels" in caught.value.message
    # the item's current value too deep for the answer that carries it (kept by an earlier version, say): refused
    # before anything changes, where the change was made and its caller then told serialization_error
    getter.answer = {"a": nested(MAX_VALUE_DEPTH)}
    error = await worker.error("stream::update", {**KEY, "ops": [{"type": "set", "path": "b", "value": 1}]})
    assert error["code"] == "STREAM_UPDATE_ERROR"
    assert "the item's current value nests deeper than 125 levels" in error["message"]
    assert setter.payloads == []
    await worker.close()


async def test_a_value_with_no_json_form_is_the_streams_error(engine: Engine) -> None:
    """An in-process caller's value (a set) or custom function's answer (bytes): the stream function's error code,
    where it was internal_error with a logged traceback."""
    async def answer_bytes(data: Any, ctx: Any) -> Any:
        return {"old_value": None, "new_value": b"raw"}

    worker = await _worker(engine, {"stream::set(cust)": Recorder({"old_value": None, "new_value": 1})})
    with pytest.raises(EngineError) as caught:
        await engine.invoke("stream::set", {**KEY, "data": {1, 2}})
    assert caught.value.code == "STREAM_SET_ERROR"
    engine.register_function(BuiltinFunction("stream::update(cust)", answer_bytes))
    with pytest.raises(EngineError) as caught:
        await engine.invoke("stream::update", {**KEY, "ops": [{"type": "set", "path": "b", "value": 1}]})
    assert caught.value.code == "STREAM_UPDATE_ERROR"
    assert "stream::update(cust) answered a change whose event cannot be sent" in caught.value.message
    await worker.close()
