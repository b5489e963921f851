"""A custom stream served with get and set only: a set or delete already in flight when the engine starts a
composed update of its item is not overwritten by that update (R2).

Before, only a write that reached the engine during the update waited for it; one whose call to the worker was
still running when the update began landed between the update's get and set, was acknowledged, and was then
overwritten by the update's result computed from the older value.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iii_engine import Engine
from tests.polling import until

from .helpers import Worker, registered, stream_module

pytestmark = [pytest.mark.our_engine("composes custom stream updates in our engine"), pytest.mark.timeout(30)]

KEY = {"stream_name": "r2twoop", "group_id": "g", "item_id": "i"}


@pytest.mark.parametrize("write", ["set", "delete"])
async def test_a_write_in_flight_when_a_composed_update_begins_is_not_lost(engine: Engine, write: str) -> None:
    worker = await Worker.connect(engine.url)
    items: dict[str, Any] = {"i": {"n": 1}}
    writing, write_gate, read, read_gate = asyncio.Event(), asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def get(data: Any) -> Any:
        value = items.get(data["item_id"])
        read.set()
        await read_gate.wait()
        return value

    async def set_(data: Any) -> Any:
        if not writing.is_set():  # the first write is slow: its backend call is still running
            writing.set()
            await write_gate.wait()
        old = items.get(data["item_id"])
        items[data["item_id"]] = data["data"]
        return {"old_value": old, "new_value": data["data"]}

    async def delete(data: Any) -> Any:
        writing.set()
        await write_gate.wait()
        return {"old_value": items.pop(data["item_id"], None)}

    await worker.register("stream::get(r2twoop)", get)
    await worker.register("stream::set(r2twoop)", set_)
    await worker.register("stream::delete(r2twoop)", delete)
    await registered(engine, "stream::delete(r2twoop)")
    if write == "set":
        other = asyncio.ensure_future(worker.result("stream::set", {**KEY, "data": {"n": 100}}))
    else:
        other = asyncio.ensure_future(worker.result("stream::delete", KEY))
    await writing.wait()
    update = asyncio.ensure_future(worker.result("stream::update", {**KEY, "ops": [{"type": "increment",
                                                                                    "path": "n", "by": 1}]}))
    locks = stream_module(engine).functions._locks  # type: ignore[union-attr]
    # the update either read the old item already (before) or waits for the write (now)
    await until(lambda: read.is_set() or ("r2twoop", "g", "i") in locks._locks)
    write_gate.set()
    await other  # acknowledged
    read_gate.set()
    expected = {"n": 101} if write == "set" else {"n": 1}
    assert (await update)["new_value"] == expected
    assert items.get("i") == expected  # applied on top of the write: nothing lost
    await worker.close()
