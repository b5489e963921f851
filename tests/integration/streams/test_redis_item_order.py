"""RedisStream orders writes per item, not per hash: a set or delete of one item does not wait behind the update of
another item that keeps losing its compare-and-set to another process, and alternating sets of some items and
updates of others go out as two runs, not one round trip per alternation.

Before: every set of the hash queued behind the contended update (sets of a neighbour item took 0.7-3.6 s at worst,
``hol2.py``), and 64 alternating set/update calls on one hash took one script each (5,700-7,500 ops/s).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from iii.stream import StreamDeleteInput, StreamGetInput, StreamSetInput, StreamUpdateInput, UpdateIncrement
from iii_streams import RedisStream
from tests.integration.streams.sent_commands import record_script_calls
from tests.integration.streams.test_redis_write_order import store
from tests.polling import until

pytestmark = pytest.mark.redis


__all__ = ["store"]  # the fixture (a store on a key prefix and channel of its own), shared with the write-order tests


def _item(item_id: str) -> dict[str, str]:
    return {"stream_name": "s", "group_id": "g", "item_id": item_id}


async def test_writes_of_other_items_pass_a_contended_update(store: RedisStream,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    key = store.layout.key("s", "g")
    contended = True
    rivals = 0
    real_write_batch = store._write_batch

    async def racing(key_: str, batch: Sequence[Any], read: dict[str, Any]) -> Any:
        nonlocal rivals
        if contended and any(update.item_id == "x" for update in batch):
            # another process writes x between this batch's read and its compare-and-set: the batch loses
            rivals += 1
            await store.client.hset(key, "x", f'{{"n": {1000 + rivals}}}')
        return await real_write_batch(key_, batch, read)

    monkeypatch.setattr(store, "_write_batch", racing)
    await store.set(StreamSetInput(**_item("x"), data={"n": 0}))
    update = asyncio.ensure_future(store.update(StreamUpdateInput(**_item("x"),
                                                                  ops=[UpdateIncrement(path="n", by=1)])))
    await until(lambda: store.update_conflicts >= 2)
    set_x = asyncio.ensure_future(store.set(StreamSetInput(**_item("x"), data={"n": -1})))  # waits for the update
    # the writes of y and z go out while the update of x still loses its races
    for n in range(5):
        first = await asyncio.wait_for(store.set(StreamSetInput(**_item("y"), data=n)), 5)
        assert first.old_value == (None if n == 0 else n - 1)
    gone = await asyncio.wait_for(store.delete(StreamDeleteInput(**_item("y"))), 5)
    assert gone.old_value == 4
    sets = [store.set(StreamSetInput(**_item(f"z{n}"), data=n)) for n in range(20)]
    assert [r.old_value for r in await asyncio.wait_for(asyncio.gather(*sets), 5)] == [None] * 20
    assert not update.done() and not set_x.done()  # the later set of x keeps its place behind the update
    contended = False
    updated = await asyncio.wait_for(update, 10)
    assert updated.new_value == {"n": 1001 + rivals}
    assert (await asyncio.wait_for(set_x, 10)).old_value == {"n": 1001 + rivals}
    assert await store.get(StreamGetInput(**_item("x"))) == {"n": -1}


async def test_alternating_sets_and_updates_of_other_items_are_two_runs(
        store: RedisStream, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = record_script_calls(monkeypatch)
    ops = [UpdateIncrement(path="n", by=1)]
    writes = [store.update(StreamUpdateInput(**_item(f"b{n}"), ops=ops)) if n % 2
              else store.set(StreamSetInput(**_item(f"a{n}"), data=n)) for n in range(64)]
    results = await asyncio.gather(*writes)
    assert [r.new_value for r in results] == [{"n": 1} if n % 2 else n for n in range(64)]
    # a lone set in its caller's task, then the 63 waiting ones: one writes script and one compare-and-set
    assert len(calls) <= 6, calls
