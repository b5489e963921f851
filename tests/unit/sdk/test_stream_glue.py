"""The ``create_stream`` handlers without an engine (docs/protocol.md#sdk-improvements S7, S8)."""

from __future__ import annotations

import asyncio
import builtins
from typing import Any

from iii.stream import (
    IStream,
    StreamDeleteInput,
    StreamDeleteResult,
    StreamGetInput,
    StreamListGroupsInput,
    StreamListInput,
    StreamSetInput,
    StreamSetResult,
    StreamUpdateInput,
    StreamUpdateResult,
)
from iii.stream_glue import StreamFunctions, stream_functions

KEY = {"stream_name": "s", "group_id": "g", "item_id": "1"}


class LazyStream(IStream[Any]):
    """Answers ``None`` wherever the interface allows it; ``update`` optionally native."""

    def __init__(self, native_update: bool = False) -> None:
        self.items: dict[str, Any] = {}
        self.native_update = native_update
        self.gets = 0

    async def get(self, input: StreamGetInput) -> Any:
        self.gets += 1
        await asyncio.sleep(0)  # let concurrent updates interleave if the lock were missing
        return self.items.get(input.item_id)

    async def set(self, input: StreamSetInput) -> StreamSetResult[Any] | None:
        self.items[input.item_id] = input.data
        return None

    async def delete(self, input: StreamDeleteInput) -> StreamDeleteResult:
        self.items.pop(input.item_id, None)
        return None  # type: ignore[return-value]  # a sloppy backend, as S8 anticipates

    async def list(self, input: StreamListInput) -> builtins.list[Any]:
        return builtins.list(self.items.values())

    async def list_groups(self, input: StreamListGroupsInput) -> builtins.list[str]:
        return ["g"]

    async def update(self, input: StreamUpdateInput) -> StreamUpdateResult[Any] | None:
        if self.native_update:
            return StreamUpdateResult(old_value=None, new_value={"native": True})
        return None


def test_ids_are_the_six_operations() -> None:
    assert list(stream_functions("todos", LazyStream())) == [
        f"stream::{op}(todos)" for op in ("get", "set", "delete", "list", "list_groups", "update")
    ]


async def test_none_from_set_and_delete_becomes_a_result_object() -> None:
    handlers = StreamFunctions(LazyStream())
    assert await handlers.set({**KEY, "data": {"n": 1}}) == {"new_value": {"n": 1}}
    assert await handlers.delete(KEY) == {"old_value": None}


async def test_native_update_result_keeps_none_fields() -> None:
    handlers = StreamFunctions(LazyStream(native_update=True))
    assert await handlers.update({**KEY, "ops": []}) == {"old_value": None, "new_value": {"native": True}}


async def test_composed_update_is_serialised_per_item_and_forgets_its_locks() -> None:
    stream = LazyStream()
    stream.items["1"] = {"n": 0}
    handlers = StreamFunctions(stream)
    op = {"type": "increment", "path": "n", "by": 1}
    results = await asyncio.gather(*(handlers.update({**KEY, "ops": [op]}) for _ in range(20)))
    assert sorted(r["new_value"]["n"] for r in results) == list(range(1, 21))
    assert stream.items["1"] == {"n": 20}
    assert handlers._locks == {}
