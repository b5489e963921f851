"""``ValueBound``: the store checks the bound (``update_parsed(..., max_bytes=limit)``), atomically with its write:
64 concurrent updates of one item of which only some fit leave exactly those, refused with the engine's message,
and the engine reads nothing first (before: one ``store.get`` per update, an extra round trip: Redis 64 concurrent
increments of one item fell from 14-15.5k/s to 5.8-7.5k/s). A store whose own ``update_parsed`` takes no
``max_bytes`` is bounded as exactly (the engine reads, under its item lock); one whose ``update`` alone is its own
(the base class's default path) keeps one item's concurrent updates together and within the bound."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iii.stream import StreamGetInput
from iii.stream_ops import Op, parse_ops
from iii.wire import dumps
from iii_engine.modules.stream.api import ValueBound, takes_max_bytes
from iii_engine.modules.stream.locks import KeyedLocks
from iii_streams import MemoryStream

ENTRY = 13  # "a07":"xxxxx", and a comma before each one but the first
LIMIT = 2 + ENTRY + (ENTRY + 1) * 9  # {…} of exactly 10 entries: 141 bytes


class Counted(MemoryStream):
    """Counts its reads."""

    reads = 0

    async def get(self, input: StreamGetInput, **options: Any) -> Any:
        self.reads += 1
        return await super().get(input, **options)


class OwnUpdateParsed(Counted):
    """A store written before ``max_bytes``: its update_parsed takes no keyword; it yields while it works."""

    async def update_parsed(self, stream_name: str, group_id: str, item_id: str, ops: list[Op]) -> Any:
        await asyncio.sleep(0)
        return await MemoryStream.update_parsed(self, stream_name, group_id, item_id, ops)


class OwnUpdate(Counted):
    """A store whose update() alone is its own (its update_parsed is the base class's default path)."""

    inside = 0
    most = 0  # the most update() calls under way at once

    async def update(self, input: Any, **options: Any) -> Any:
        self.inside += 1
        self.most = max(self.most, self.inside)
        await asyncio.sleep(0)  # other updates may run meanwhile: their read must not come before this write
        try:
            return await super().update(input, **options)
        finally:
            self.inside -= 1


def _grow(i: int) -> list[Op]:
    return parse_ops([{"type": "set", "path": f"a{i:02d}", "value": "x" * 5}])


@pytest.mark.parametrize("kind", [Counted, OwnUpdateParsed])
async def test_concurrent_updates_past_the_bound_are_refused_exactly(kind: type[Counted]) -> None:
    store = kind()
    bound = ValueBound(4096 + 2 * LIMIT)
    assert bound.limit == LIMIT
    locks = KeyedLocks()

    async def grow(i: int) -> Any:
        try:
            return await bound.update(locks, store, "s", "g", "i", _grow(i))
        except ValueError as exc:
            return exc

    answers = await asyncio.wait_for(asyncio.gather(*(grow(i) for i in range(64))), 10)
    refused = [a for a in answers if isinstance(a, ValueError)]
    assert len(refused) == 54, answers
    assert all(str(exc).startswith(f"the updated value is {LIMIT + ENTRY + 1} bytes of JSON, over the {LIMIT} bytes "
                                   "a value may take (half of the engine's max_message_size") for exc in refused)
    value = await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i"))
    assert len(value) == 10 and len(dumps(value)) == LIMIT
    assert len(locks) == 0


async def test_the_default_path_keeps_concurrent_updates_together_and_within_the_bound() -> None:
    """A store whose update() alone is its own: one item's updates still reach it together (an atomic store may
    commit them as one), each measured beside what the others under way add, so none passes the bound."""
    store = OwnUpdate()
    bound = ValueBound(4096 + 2 * LIMIT)

    async def grow(i: int) -> Any:
        try:
            return await bound.update(KeyedLocks(), store, "s", "g", "i", _grow(i))
        except ValueError as exc:
            return exc

    answers = await asyncio.wait_for(asyncio.gather(*(grow(i) for i in range(64))), 10)
    applied = [a for a in answers if not isinstance(a, ValueError)]
    assert store.most == len(applied) > 1  # all that passed were in update() at once
    value = await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i"))
    assert len(dumps(value)) <= LIMIT and len(value) == len(applied)
    assert all("concurrent update(s) of it add, is" in str(a) for a in answers if isinstance(a, ValueError))
    assert store.__dict__["_bounded_flights"] == {}  # nothing left counted once they are done
    # one at a time, it fills the bound to the byte
    for i in range(64, 128):
        if isinstance(await grow(i), ValueError):
            break
    value = await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i"))
    assert len(value) == 10 and len(dumps(value)) == LIMIT


async def test_the_engine_reads_nothing_before_a_store_that_takes_max_bytes() -> None:
    store = Counted()
    bound = ValueBound(4096 + 2 * LIMIT)
    for i in range(3):
        await bound.update(KeyedLocks(), store, "s", "g", "i", _grow(i))
    assert store.reads == 0  # before: one get per update
    assert takes_max_bytes(store.update_parsed) and not takes_max_bytes(OwnUpdateParsed().update_parsed)
    assert takes_max_bytes(OwnUpdate().update_parsed)  # the base class's default path, which takes it


async def test_state_set_encodes_its_value_once_and_takes_no_lock_on_a_direct_store(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``state::set``'s bound costs no second encode (measured on orjson's bytes: the store encodes the value to
    write it) and no lock context where no update of the engine's reads and then writes (the store checks
    ``max_bytes`` and applies updates atomically). Before: two encodes and one ``KeyedLocks.join`` per set
    (in-process, memory store, 50 at a time: 115-117k/s -> 85-88k/s; a 1 MB non-ASCII value 439-451/s ->
    316-333/s). A store that is not direct still joins the item's lock."""
    from iii.protocol import codec
    from iii_engine import Engine, EngineConfig, ModuleSpec
    from iii_engine.modules.state.module import StateModule

    value = {"text": "é" * 1000, "n": [1, 2]}
    encodes: list[Any] = []
    real_dumps = codec.dumps

    def counted_dumps(encoded: Any) -> str:
        inner = encoded
        while isinstance(inner, list) and len(inner) == 1:
            inner = inner[0]  # (dumps_within wraps the value in lists to check its depth)
        if inner is value:
            encodes.append(encoded)
        return real_dumps(encoded)

    joins: list[Any] = []
    real_join = KeyedLocks.join

    def counted_join(self: KeyedLocks, key: Any) -> Any:
        joins.append(key)
        return real_join(self, key)

    monkeypatch.setattr(codec, "dumps", counted_dumps)
    monkeypatch.setattr(KeyedLocks, "join", counted_join)
    config = EngineConfig(host="127.0.0.1", port=0,
                          modules=[ModuleSpec("modules::state::StateModule", {"store_url": "memory://"})])
    async with Engine(config=config) as engine:
        answer = await engine.invoke("state::set", {"scope": "sc", "key": "k", "value": value})
        assert answer == {"old_value": None, "new_value": value}
        assert await engine.invoke("state::get", {"scope": "sc", "key": "k"}) == value
        assert (len(encodes), joins) == (1, [])  # the store's own encode only; before: 2 and one join
        state = next(m for m in engine.modules.values() if isinstance(m, StateModule))
        assert state.values.direct(Counted()) and not state.values.direct(OwnUpdateParsed())
        state.store = OwnUpdateParsed()  # the engine reads and writes its updates under the item's lock
        await engine.invoke("state::set", {"scope": "sc", "key": "k", "value": value})
        assert len(joins) == 1 and joins[0][1:] == ("sc", "k")
        limit = state.values.limit
        with pytest.raises(Exception, match=r"SET_ERROR|over the") as refused:  # the bound still holds
            await engine.invoke("state::set", {"scope": "sc", "key": "k", "value": "é" * (limit // 2)})
        assert str(limit) in str(refused.value)
