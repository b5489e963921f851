"""A custom stream served with get and set only (as the reference SDK's create_stream does): the engine composes
its updates (custom get → ops → custom set under the item's lock), and a set or delete of the item that arrives
meanwhile goes after the update instead of being overwritten by it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iii_engine import Engine
from tests.polling import until

from .helpers import Worker, registered, stream_module

pytestmark = pytest.mark.our_engine("composes custom stream updates in our engine")

KEY = {"stream_name": "twoop", "group_id": "g", "item_id": "i"}


@pytest.mark.parametrize("write", ["set", "delete"])
async def test_a_write_during_a_composed_update_is_not_lost(engine: Engine, write: str) -> None:
    """Before, the write reached the worker between the update's get and its set, was acknowledged, and was then
    overwritten by the update's result computed from the older value."""
    worker = await Worker.connect(engine.url)
    items: dict[str, Any] = {"i": {"n": 1}}
    read, gate = asyncio.Event(), asyncio.Event()

    async def get(data: Any) -> Any:
        value = items.get(data["item_id"])
        read.set()
        await gate.wait()  # a slow backend: answers what it read, later
        return value

    async def set_(data: Any) -> Any:
        old = items.get(data["item_id"])
        items[data["item_id"]] = data["data"]
        return {"old_value": old, "new_value": data["data"]}

    async def delete(data: Any) -> Any:
        return {"old_value": items.pop(data["item_id"], None)}

    await worker.register("stream::get(twoop)", get)
    await worker.register("stream::set(twoop)", set_)
    await worker.register("stream::delete(twoop)", delete)
    await registered(engine, "stream::delete(twoop)")
    update = asyncio.ensure_future(worker.result("stream::update", {**KEY, "ops": [{"type": "increment",
                                                                                    "path": "n", "by": 1}]}))
    await read.wait()
    if write == "set":
        other = asyncio.ensure_future(worker.result("stream::set", {**KEY, "data": {"n": 100}}))
    else:
        other = asyncio.ensure_future(worker.result("stream::delete", KEY))
    locks = stream_module(engine).functions._locks  # type: ignore[union-attr]
    # the write either reached the worker inside the update (before) or waits for the update's lock (now)
    await until(lambda: items.get("i") != {"n": 1} or locks._locks[("twoop", "g", "i")][1] == 2)
    gate.set()
    assert (await update) == {"old_value": {"n": 1}, "new_value": {"n": 2}}
    await other
    assert items.get("i") == ({"n": 100} if write == "set" else None)  # the later write stands
    await worker.close()
