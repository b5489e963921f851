"""A change nobody listens to builds no trigger payload (issue 10): stream::set/update/delete and state::set/update/
delete on a real engine make no change event for triggers while none is registered, and still deliver the same
payloads once one is."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iii.iii_types import TriggerInfo
from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.base import BuiltinFunction, InvocationContext
from iii_engine.modules.state import module as state_module
from iii_engine.modules.state.module import StateModule
from iii_engine.modules.stream import api as stream_api
from iii_engine.modules.stream.module import StreamModule

ITEM = {"stream_name": "s", "group_id": "g", "item_id": "i"}
INC = [{"type": "increment", "path": "n", "by": 1}]


@pytest.fixture
async def engine() -> Any:
    modules = [ModuleSpec("modules::stream::StreamModule", {"host": "127.0.0.1", "port": 0, "store_url": "memory://"}),
               ModuleSpec("modules::state::StateModule", {"store_url": "memory://"})]
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=modules)) as running:
        yield running


def _counting(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[tuple[Any, ...]]:
    built: list[tuple[Any, ...]] = []
    real = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        built.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return built


async def _changes(engine: Engine) -> list[Any]:
    answers = [await engine.invoke("stream::set", {**ITEM, "data": {"n": 0}}),
               await engine.invoke("stream::update", {**ITEM, "ops": INC}),
               await engine.invoke("stream::delete", dict(ITEM)),
               await engine.invoke("state::set", {"scope": "sc", "key": "k", "value": {"n": 0}}),
               await engine.invoke("state::update", {"scope": "sc", "key": "k", "ops": INC}),
               await engine.invoke("state::delete", {"scope": "sc", "key": "k"})]
    return answers


async def test_no_trigger_no_payload(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    stream_events = _counting(monkeypatch, stream_api, "make_event")
    state_events = _counting(monkeypatch, state_module, "state_event")
    answers = await _changes(engine)
    assert answers == [{"old_value": None, "new_value": {"n": 0}}, {"old_value": {"n": 0}, "new_value": {"n": 1}},
                       {"old_value": {"n": 1}}, {"old_value": None, "new_value": {"n": 0}},
                       {"old_value": {"n": 0}, "new_value": {"n": 1}}, {"n": 1}]
    assert (stream_events, state_events) == ([], [])  # before: one of each per change (3 + 3)


async def test_registered_triggers_get_every_change(engine: Engine) -> None:
    got: list[Any] = []
    done = asyncio.Event()

    async def handler(data: Any, ctx: InvocationContext) -> None:
        got.append(data)
        if len(got) == 6:
            done.set()

    engine.register_function(BuiltinFunction("test::changes", handler))
    stream = engine.module("StreamModule") or next(m for m in engine.modules.values() if isinstance(m, StreamModule))
    state = next(m for m in engine.modules.values() if isinstance(m, StateModule))
    assert isinstance(stream, StreamModule) and stream.functions is not None
    await stream.functions.triggers.register(TriggerInfo(id="t1", trigger_type="stream", function_id="test::changes",
                                                         config={"stream_name": "s"}))
    await state.triggers.register(TriggerInfo(id="t2", trigger_type="state", function_id="test::changes",
                                              config={"scope": "sc"}))
    await _changes(engine)
    await asyncio.wait_for(done.wait(), 10)
    stream_got = sorted((e["event"]["type"], str(e["event"]["data"])) for e in got if e["type"] == "stream")
    state_got = sorted((e["event_type"], str(e["old_value"]), str(e["new_value"])) for e in got if e["type"] == "state")
    assert stream_got == [("create", "{'n': 0}"), ("delete", "{'n': 1}"), ("update", "{'n': 1}")]
    assert state_got == [("state:created", "None", "{'n': 0}"), ("state:deleted", "{'n': 1}", "None"),
                         ("state:updated", "{'n': 0}", "{'n': 1}")]
