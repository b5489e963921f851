"""``Backend.update_parsed`` (issue 10): every store of this package runs an update of already parsed ops from the
fields, with no ``StreamUpdateInput`` built, and it answers, stores and publishes exactly what ``update`` does;
a subclass overriding ``update`` alone still sees every update through it."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from iii.stream import StreamGetInput, StreamUpdateInput
from iii.stream_ops import parse_ops
from iii_streams import Backend, MemoryStream

OPS: list[dict[str, Any]] = [
    {"type": "increment", "path": "n", "by": 2}, {"type": "set", "path": "big", "value": 2**70},
    {"type": "merge", "path": "", "value": {"m": [1, {"x": None}]}}, {"type": "decrement", "path": "d", "by": 1}]


def _no_model(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("built a StreamUpdateInput")


async def test_update_parsed_is_update(store: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"parsed-{uuid.uuid4().hex[:8]}"
    ops = parse_ops(OPS)
    async with store.watch(stream_name=name) as events:
        by_model = [await store.update(StreamUpdateInput(stream_name=name, group_id="g", item_id="a", ops=OPS))
                    for _ in range(2)]
        with monkeypatch.context() as patched:
            patched.setattr(StreamUpdateInput, "model_construct", _no_model)
            patched.setattr(StreamUpdateInput, "__init__", _no_model)
            by_fields = [await store.update_parsed(name, "g", "b", ops) for _ in range(2)]
        seen = [await asyncio.wait_for(events.__anext__(), 10) for _ in range(4)]
    assert [(r and (r.old_value, r.new_value)) for r in by_model] == [(r and (r.old_value, r.new_value))
                                                                      for r in by_fields]
    assert by_fields[1] is not None and by_fields[1].new_value == {"n": 4, "big": 2**70, "m": [1, {"x": None}], "d": -2}
    for item in ("a", "b"):
        stored = await store.get(StreamGetInput(stream_name=name, group_id="g", item_id=item))
        assert stored == by_fields[1].new_value
    shapes = sorted((e["id"], e["event"]["type"], str(e["event"]["data"]), e["streamName"], e["groupId"]) for e in seen)
    assert [s[1:] for s in shapes if s[0] == "a"] == [s[1:] for s in shapes if s[0] == "b"]
    assert [s[1] for s in shapes if s[0] == "b"] == ["create", "update"]


async def test_a_subclass_overriding_update_sees_update_parsed() -> None:
    seen: list[StreamUpdateInput] = []

    class Audited(MemoryStream):
        async def update(self, input: StreamUpdateInput, **options: Any) -> Any:
            seen.append(input)
            return await super().update(input, **options)

    class Both(Audited):
        async def update_parsed(self, *args: Any, **kwargs: Any) -> Any:
            return "own"

    store = Audited()
    result = await store.update_parsed("s", "g", "i", parse_ops(OPS[:1]))
    assert result is not None and result.new_value == {"n": 2}
    assert [(r.stream_name, r.group_id, r.item_id) for r in seen] == [("s", "g", "i")]
    assert await Both().update_parsed("s", "g", "i", []) == "own"  # a subclass defining both keeps its own


async def test_parsed_ops_are_not_parsed_again(store: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """update_parsed's ops go through parse_ops once (applying them), not once more before the store is touched."""
    import iii.stream_ops
    import iii_streams.base
    import iii_streams.memory
    import iii_streams.redis
    import iii_streams.sql

    calls: list[object] = []
    real = iii.stream_ops.parse_ops

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        return real(*args, **kwargs)

    for module in (iii.stream_ops, iii_streams.base, iii_streams.memory, iii_streams.redis, iii_streams.sql):
        monkeypatch.setattr(module, "parse_ops", counted, raising=False)
    ops = real(OPS)
    name = f"once-{uuid.uuid4().hex[:8]}"
    for _ in range(3):
        await store.update_parsed(name, "g", "i", ops)
    assert len(calls) == 3  # before: 6 on Redis and SQL (the store parsed them again first)
    result = await store.update(StreamUpdateInput(stream_name=name, group_id="g", item_id="i", ops=OPS))
    assert result is not None and result.new_value["n"] == 8
