"""The reference SDK (its own interpreter, in a subprocess) using our engine's state module: ``state::set/get/
delete/list`` and a ``state`` trigger filtered by scope and key whose payload its ``StateEventData`` validates."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from tests.fixtures.refworker import ref_worker

pytestmark = [pytest.mark.interop]

STATE = r'''
from iii.state import StateEventData

scope = sys.argv[2]

async def on_change(data):
    event = StateEventData.model_validate(data)  # the reference model must accept our payload
    emit("changed", event_type=event.event_type.value, scope=event.scope, key=event.key,
         old_value=event.old_value, new_value=event.new_value, raw=data)

iii.register_function("ref.state.on_change", on_change)
iii.register_trigger({"type": "state", "function_id": "ref.state.on_change", "config": {"scope": scope, "key": "k1"}})
iii.list_functions()

def call(fid, **payload):
    return lambda: iii.trigger({"function_id": fid, "payload": payload})

attempt("set-new", call("state::set", scope=scope, key="k1", value={"n": 1}))
attempt("set-again", call("state::set", scope=scope, key="k1", value={"n": 2}))
attempt("set-other-key", call("state::set", scope=scope, key="k2", value={"n": 3}))
attempt("set-other-scope", call("state::set", scope=scope + "-x", key="k1", value={"n": 4}))
attempt("get", call("state::get", scope=scope, key="k1"))
attempt("get-missing", call("state::get", scope=scope, key="nope"))
attempt("list", call("state::list", scope=scope))
attempt("delete", call("state::delete", scope=scope, key="k1"))
attempt("get-deleted", call("state::get", scope=scope, key="k1"))
serve()
'''


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    spec = ModuleSpec("modules::state::StateModule")
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[spec])) as running:
        yield running


async def test_state_functions_and_filtered_trigger(engine_url: str, tmp_path: Path) -> None:
    scope = f"ref-{uuid.uuid4().hex[:8]}"
    async with ref_worker(tmp_path, engine_url, STATE, scope) as worker:
        assert (await worker.event("set-new"))["result"] == {"old_value": None, "new_value": {"n": 1}}
        assert (await worker.event("set-again"))["result"] == {"old_value": {"n": 1}, "new_value": {"n": 2}}
        assert (await worker.event("get"))["result"] == {"n": 2}
        assert (await worker.event("get-missing")) == {"event": "get-missing", "ok": True, "result": None}
        listed = await worker.event("list")
        assert sorted(item["n"] for item in listed["result"]) == [2, 3]
        assert (await worker.event("delete"))["result"] == {"n": 2}  # the old value itself
        assert (await worker.event("get-deleted"))["result"] is None

        changes = await worker.events("changed", 3)
        assert [(c["event_type"], c["old_value"], c["new_value"]) for c in changes] == [
            ("state:created", None, {"n": 1}),
            ("state:updated", {"n": 1}, {"n": 2}),
            ("state:deleted", {"n": 2}, None),
        ]
        assert changes[1]["raw"] == {"type": "state", "event_type": "state:updated", "scope": scope, "key": "k1",
                                     "old_value": {"n": 1}, "new_value": {"n": 2}}
        # k2 and the other scope were written before the delete whose event arrived last: the filter held.
        assert {(c["scope"], c["key"]) for c in changes} == {(scope, "k1")}
        assert worker.seen("changed") == []
