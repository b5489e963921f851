"""Listener routing, UUID checks, result frames and the worker module's channel creation."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from iii.protocol.worker_session import WorkerSession
from iii_engine import Engine, EngineConfig
from iii_engine.invocations import is_uuid
from iii_engine.modules.base import EngineError
from iii_engine.server import ChannelRoute, route_request


def test_route_request() -> None:
    assert route_request("/") is None
    assert route_request("/?token=1") is None
    assert route_request("/ws/channels/c1?key=a%2Fb&dir=write") == ChannelRoute("c1", "a/b", "write")
    assert route_request("/ws/channels/c1?key=k")[0] == 400  # type: ignore[index]
    assert route_request("/ws/channels/?key=k&dir=read") == (404, "Not Found\n")
    assert route_request("/ws/channels/a/b?key=k&dir=read") == (404, "Not Found\n")
    assert route_request("/health") == (404, "Not Found\n")


def test_uuid_forms() -> None:
    value = uuid.uuid4()
    assert is_uuid(str(value)) and is_uuid(str(value).upper()) and is_uuid(value.hex)
    assert not is_uuid("") and not is_uuid(None) and not is_uuid("123")


def test_result_frame_omits_null_result() -> None:
    result_frame = WorkerSession.result
    assert json.loads(result_frame("i", "f", None, None)) == {"type": "invocationresult", "invocation_id": "i",
                                                               "function_id": "f"}
    assert json.loads(result_frame("i", "f", 0, None))["result"] == 0
    frame = json.loads(result_frame("i", "f", 1, {"code": "c", "message": "m"}, "tp", "bg"))
    assert "result" not in frame and frame["error"]["code"] == "c" and frame["traceparent"] == "tp"


@pytest.mark.parametrize(("given", "expected"), [({}, 64), ({"buffer_size": None}, 64), ({"buffer_size": 0}, 1),
                                                 ({"buffer_size": 5000}, 1024), ({"buffer_size": 10}, 10)])
async def test_channels_create_clamps_and_delegates(given: dict[str, Any], expected: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int | None, str | None]] = []

    def create(buffer_size: int | None, owner: str | None, max_bytes: int | None = None) -> dict[str, Any]:
        calls.append((buffer_size, owner))
        return {"writer": {}, "reader": {}}

    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as engine:
        monkeypatch.setattr(engine.channels, "create", create)
        assert await engine.invoke("engine::channels::create", given) == {"writer": {}, "reader": {}}
    assert calls == [(expected, None)]


async def test_builtin_exceptions_become_internal_errors() -> None:
    from iii_engine.modules.base import BuiltinFunction, InvocationContext

    async def broken(data: Any, ctx: InvocationContext) -> Any:
        raise RuntimeError("kaput")

    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as engine:
        engine.register_function(BuiltinFunction("broken", broken))
        with pytest.raises(EngineError) as info:
            await engine.invoke("broken", {})
    assert info.value.code == "internal_error" and "kaput" in info.value.message
