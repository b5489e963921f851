"""Built-in results handed over already encoded (EncodedResult) and the registry's cached listing replies."""

from __future__ import annotations

import json
from typing import Any

import websockets

from iii.protocol.worker_session import WorkerSession
from iii.wire import dumps, loads
from iii_engine import Engine, EngineConfig
from iii_engine.modules.base import BuiltinFunction, EncodedResult, EngineError
from iii_engine.registry import FunctionEntry, Registry, TriggerEntry

VALUE = {"functions": [{"function_id": "a", "metadata": {"big": 2**70, "s": "é\u2028"}}], "n": None}


async def _engine_with(value: Any) -> Engine:
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[]))
    await engine.start()

    async def encoded(data: Any, ctx: Any) -> Any:
        if data == "fail":
            raise EngineError("boom", "it broke")
        return EncodedResult(dumps(value))

    engine.register_function(BuiltinFunction("t::encoded", encoded))
    return engine


async def test_a_worker_gets_the_encoded_result_spliced_into_the_usual_frame() -> None:
    engine = await _engine_with(VALUE)
    try:
        async with websockets.connect(engine.url, compression=None) as ws:
            await ws.recv()  # workerregistered
            iid = "8d1c3b4e-0f6a-4c39-9c55-2f1f3f0f5a11"
            await ws.send(dumps({"type": "invokefunction", "invocation_id": iid, "function_id": "t::encoded",
                                 "data": None}))
            frame = await ws.recv()
            assert frame == WorkerSession.result(iid, "t::encoded", VALUE, None)  # byte for byte the usual frame
            assert json.loads(frame)["result"] == json.loads(dumps(VALUE))
            await ws.send(dumps({"type": "invokefunction", "invocation_id": iid, "function_id": "t::encoded",
                                 "data": "fail"}))
            failed = loads(await ws.recv())
            assert failed["error"]["code"] == "boom" and "result" not in failed
    finally:
        await engine.stop()


async def test_in_process_callers_get_a_decoded_copy() -> None:
    engine = await _engine_with(VALUE)
    try:
        first = await engine.invoke("t::encoded", None)
        assert first == VALUE
        first["functions"].clear()  # a private copy: the next call is unaffected
        assert await engine.invoke("t::encoded", None) == VALUE
        started = await engine.start_invocation("t::encoded", None)
        assert await started.future == (VALUE, None)
    finally:
        await engine.stop()


def test_listing_json_is_cached_until_the_table_changes() -> None:
    reg = Registry()
    reg.add_function(FunctionEntry("a::f", "w1", metadata={"k": [1, 2]}))
    reg.add_function(FunctionEntry("engine::x", None))
    text = reg.function_listing_json(False)
    assert text is not None and reg.function_listing_json(False) is text  # encoded once
    assert loads(text) == {"functions": reg.function_infos(False)}
    assert loads(reg.function_listing_json(True) or "")["functions"] == reg.function_infos(True)
    reg.add_function(FunctionEntry("b::g", "w2"))
    changed = reg.function_listing_json(False)
    assert changed is not text and [f["function_id"] for f in loads(changed or "")["functions"]] == ["a::f", "b::g"]
    reg.drop_owned_function("b::g", "w2")
    assert loads(reg.function_listing_json(False) or "") == loads(text)
    reg.remove_function("a::f")
    assert loads(reg.function_listing_json(False) or "") == {"functions": []}


def test_trigger_listing_json_follows_the_trigger_table() -> None:
    reg = Registry()
    reg.store_trigger(TriggerEntry("t1", "http", "a::f", {"api_path": "x"}, "w1"))
    text = reg.trigger_listing_json(False)
    assert text is not None and reg.trigger_listing_json(False) is text
    assert loads(text) == {"triggers": reg.trigger_infos(False)}
    reg.discard_trigger("t1")
    assert loads(reg.trigger_listing_json(False) or "") == {"triggers": []}


def test_a_listing_without_a_json_form_is_not_cached() -> None:
    reg = Registry()
    reg.add_function(FunctionEntry("a::f", "w1", metadata={"bad": float("nan")}))
    assert reg.function_listing_json(False) is None
