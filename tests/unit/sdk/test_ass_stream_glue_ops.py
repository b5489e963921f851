"""``create_stream``'s update handler takes every op the engine accepts, and names a bad op plainly."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError

from iii.state import StateUpdateInput
from iii.stream import (
    StreamGetInput,
    StreamUpdateInput,
    StreamUpdateResult,
    UpdateDecrement,
    UpdateIncrement,
    UpdateMerge,
    UpdateRemove,
    UpdateSet,
)
from iii.stream_glue import StreamFunctions, stream_functions
from tests.unit.sdk.test_stream_glue import KEY, LazyStream


@pytest.mark.parametrize("merge", [{"type": "merge", "value": {"a": 1}},
                                   {"type": "merge", "path": None, "value": {"a": 1}}])
async def test_a_root_merge_without_a_path_is_applied(merge: dict[str, object]) -> None:
    """Before, the models (which require a string ``path``) refused it with seven pydantic errors, while the engine
    and every store apply it to the root."""
    stream = LazyStream()
    stream.items["1"] = {"n": 0}
    result = await StreamFunctions(stream).update({**KEY, "ops": [merge]})
    assert result == {"old_value": {"n": 0}, "new_value": {"n": 0, "a": 1}}
    assert stream.items["1"] == {"n": 0, "a": 1}


async def test_a_bad_op_is_named_by_its_position() -> None:
    stream = LazyStream()
    ops = [{"type": "set", "path": "a", "value": 1}, {"type": "increment", "path": "n", "by": "1"}]
    with pytest.raises(TypeError, match=r"update op #1 \(increment\): 'by' must be an integer, got str '1'"):
        await StreamFunctions(stream).update({**KEY, "ops": ops})
    assert stream.items == {}  # nothing applied


async def test_a_composed_update_of_a_missing_item_starts_from_an_empty_object() -> None:
    """Before, the ops were applied to ``None`` (ops other than a root set leave a non-object alone): the item was
    stored as ``null`` and ``new_value`` was ``null``, where the engine's store answers ``{"n": 1}``."""
    stream = LazyStream()
    result = await StreamFunctions(stream).update({**KEY, "ops": [{"type": "increment", "path": "n", "by": 1}]})
    assert result == {"old_value": None, "new_value": {"n": 1}}
    assert stream.items == {"1": {"n": 1}}


class GatedGet(LazyStream):
    """``get`` reads the item, then waits at a gate before answering (a slow backend)."""

    def __init__(self) -> None:
        super().__init__()
        self.read = asyncio.Event()
        self.gate = asyncio.Event()

    async def get(self, input: StreamGetInput) -> Any:
        value = self.items.get(input.item_id)
        self.read.set()
        await self.gate.wait()
        return value


@pytest.mark.parametrize("write", ["set", "delete"])
async def test_a_write_during_a_composed_update_is_not_overwritten_by_it(write: str) -> None:
    """Before, a set (or delete) that landed between a composed update's get and its set succeeded and was then
    overwritten by the update's result computed from the older value: lost, though it had been acknowledged."""
    stream = GatedGet()
    stream.items["1"] = {"n": 1}
    handlers = StreamFunctions(stream)
    update = asyncio.create_task(handlers.update({**KEY, "ops": [{"type": "increment", "path": "n", "by": 1}]}))
    await stream.read.wait()  # the update read {"n": 1} and waits at the gate
    if write == "set":
        other = asyncio.create_task(handlers.set({**KEY, "data": {"n": 100}}))
    else:
        other = asyncio.create_task(handlers.delete(KEY))
    stream.gate.set()  # the write's task was scheduled first: it runs as far as it can before the update goes on
    assert (await update)["new_value"] == {"n": 2}
    await other
    assert stream.items.get("1") == ({"n": 100} if write == "set" else None)  # the later write stands
    assert handlers._locks == {}


class HalfStream:
    async def get(self, input: Any) -> Any:
        return None

    list = None  # not callable


def test_an_object_that_is_not_a_stream_is_refused_when_served_naming_what_it_lacks() -> None:
    """Before, ``create_stream`` registered all six functions and each missing operation failed only when called,
    as an ``AttributeError`` in the caller's error."""
    with pytest.raises(TypeError, match=r"create_stream\('s'\): HalfStream is not a stream: no callable set, delete, "
                                        r"list, list_groups, update"):
        stream_functions("s", HalfStream())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="the stream name must be a string, got int"):
        stream_functions(7, LazyStream())  # type: ignore[arg-type]


class Recording(LazyStream):
    """A native update that tells ops apart by class, as a backend may."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[type] = []

    async def update(self, input: StreamUpdateInput) -> StreamUpdateResult[Any] | None:
        self.seen = [type(op) for op in input.ops]
        return StreamUpdateResult(old_value=None, new_value={})


ALL_OPS = [{"type": "set", "path": "a", "value": 1}, {"type": "merge", "path": "", "value": {"b": 2}},
           {"type": "increment", "path": "n", "by": 1}, {"type": "decrement", "path": "n", "by": 1},
           {"type": "remove", "path": "a"}]
ALL_CLASSES = [UpdateSet, UpdateMerge, UpdateIncrement, UpdateDecrement, UpdateRemove]


async def test_a_backend_gets_each_op_as_the_model_of_its_type() -> None:
    """Before, pydantic's smart union gave a merge as an ``UpdateSet`` and a decrement as an ``UpdateIncrement``
    (same fields): a backend dispatching on the class incremented where it was asked to decrement."""
    stream = Recording()
    await StreamFunctions(stream).update({**KEY, "ops": ALL_OPS})
    assert stream.seen == ALL_CLASSES
    assert [type(op) for op in StateUpdateInput(scope="s", key="k", ops=ALL_OPS).ops] == ALL_CLASSES  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        StreamUpdateInput.model_validate({**KEY, "ops": [{"type": "wat", "path": "a"}]})
