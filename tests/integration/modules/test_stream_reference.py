"""The reference SDK (its own interpreter, in a subprocess) using our engine's streams the way its integration
tests do: ``stream::set/get/delete/list`` on the engine's store, and a custom stream registered with
``create_stream`` to which the engine routes ``stream::get/set/delete/list`` of that name."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from tests.fixtures.refworker import ref_worker

pytestmark = [pytest.mark.interop]

STREAMS = r'''
from iii.stream import IStream, StreamDeleteResult, StreamSetResult

plain, custom = sys.argv[2], sys.argv[3]

class DictStream(IStream):
    """Every call is reported, so the test sees the engine routed it here."""

    def __init__(self):
        self.items = {}

    async def get(self, input):
        emit("custom", op="get", stream=input.stream_name, item=input.item_id)
        return self.items.get((input.group_id, input.item_id))

    async def set(self, input):
        emit("custom", op="set", stream=input.stream_name, item=input.item_id)
        old = self.items.get((input.group_id, input.item_id))
        self.items[(input.group_id, input.item_id)] = input.data
        return StreamSetResult(old_value=old, new_value=input.data)

    async def delete(self, input):
        emit("custom", op="delete", stream=input.stream_name, item=input.item_id)
        return StreamDeleteResult(old_value=self.items.pop((input.group_id, input.item_id), None))

    async def list(self, input):
        emit("custom", op="list", stream=input.stream_name, item=None)
        return [v for (g, _), v in sorted(self.items.items()) if g == input.group_id]

    async def list_groups(self, input):
        return sorted({g for g, _ in self.items})

    async def update(self, input):
        return None

iii.create_stream(custom, DictStream())
iii.list_functions()

def call(fid, **payload):
    return lambda: iii.trigger({"function_id": fid, "payload": payload})

for label, name in (("plain", plain), ("custom", custom)):
    attempt(f"{label}-set", call("stream::set", stream_name=name, group_id="g", item_id="a", data={"v": 1}))
    attempt(f"{label}-set-again", call("stream::set", stream_name=name, group_id="g", item_id="a", data={"v": 2}))
    attempt(f"{label}-set-b", call("stream::set", stream_name=name, group_id="g", item_id="b", data={"v": 3}))
    attempt(f"{label}-get", call("stream::get", stream_name=name, group_id="g", item_id="a"))
    attempt(f"{label}-list", call("stream::list", stream_name=name, group_id="g"))
    attempt(f"{label}-delete", call("stream::delete", stream_name=name, group_id="g", item_id="a"))
    attempt(f"{label}-get-deleted", call("stream::get", stream_name=name, group_id="g", item_id="a"))
emit("done")
serve()
'''


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    spec = ModuleSpec("modules::stream::StreamModule", {"host": "127.0.0.1", "port": 0})
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[spec])) as running:
        yield running


@pytest.mark.parametrize("label", ["plain", "custom"])
async def test_stream_functions_on_the_store_and_a_custom_stream(engine_url: str, tmp_path: Path, label: str) -> None:
    plain, custom = f"ref-plain-{uuid.uuid4().hex[:8]}", f"ref-custom-{uuid.uuid4().hex[:8]}"
    async with ref_worker(tmp_path, engine_url, STREAMS, plain, custom) as worker:
        assert (await worker.event(f"{label}-set"))["result"] == {"old_value": None, "new_value": {"v": 1}}
        again = await worker.event(f"{label}-set-again")
        assert again["result"] == {"old_value": {"v": 1}, "new_value": {"v": 2}}
        assert (await worker.event(f"{label}-set-b"))["ok"]
        assert (await worker.event(f"{label}-get"))["result"] == {"v": 2}
        assert sorted(v["v"] for v in (await worker.event(f"{label}-list"))["result"]) == [2, 3]
        assert (await worker.event(f"{label}-delete"))["result"] == {"old_value": {"v": 2}}
        assert (await worker.event(f"{label}-get-deleted"))["result"] is None

        await worker.event("done")  # every call of the script has been made
        calls = [(c["op"], c["stream"], c["item"]) for c in worker.seen("custom")]
        # Only the custom stream reached the worker, each operation once and in order, with its full input.
        assert calls == [("set", custom, "a"), ("set", custom, "a"), ("set", custom, "b"), ("get", custom, "a"),
                         ("list", custom, None), ("delete", custom, "a"), ("get", custom, "a")]
