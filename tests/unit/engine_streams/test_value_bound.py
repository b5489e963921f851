"""``ValueBound``: concurrent updates of one item that each fit the value limit but together would not are refused
once the ones in flight leave no room, while an atomic store still gets those that fit together (group commit)."""

from __future__ import annotations

import asyncio
from typing import Any

from iii.stream import StreamGetInput
from iii.stream_ops import parse_ops
from iii_engine.modules.stream.api import ValueBound
from iii_engine.modules.stream.locks import KeyedLocks
from iii_streams import MemoryStream
from tests.polling import until


async def test_concurrent_updates_of_one_item_count_what_those_in_flight_add() -> None:
    release = asyncio.Event()
    inside = 0

    class Gated(MemoryStream):
        async def update(self, input: Any, **options: Any) -> Any:
            nonlocal inside
            inside += 1
            await release.wait()
            return await super().update(input)

    store = Gated()
    bound = ValueBound(4096 + 2 * 100)
    assert bound.limit == 100
    locks = KeyedLocks()

    def grow(field: str) -> Any:  # alone: {"a":"xxx..."}, 48 bytes of JSON
        return bound.update(locks, store, "s", "g", "i", parse_ops([{"type": "set", "path": field,
                                                                      "value": "x" * 40}]))

    first = asyncio.create_task(grow("a"))
    second = asyncio.create_task(grow("b"))
    await until(lambda: inside == 2)  # both fit beside each other (48 + 48) and reach the store together
    try:
        await asyncio.wait_for(grow("c"), 5)  # 48 more: 144 with the two in flight (passed: it waits in the store)
    except ValueError as exc:
        message = str(exc)
    else:
        raise AssertionError("a third concurrent update fitted")
    expected = "the updated value, with what 2 concurrent update(s) of it in flight add, is 144 bytes"
    assert message.startswith(expected), message
    release.set()
    await asyncio.gather(first, second)
    value = await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i"))
    assert sorted(value) == ["a", "b"]
    assert len(str(value)) <= 100
    assert bound._pending == {}  # nothing left counted once the updates are done
