"""The engine's update path (``Backend.update_parsed``) never bypasses an ``update()`` a user put in front of a
store: a subclass's own, a mixin's, or one set on the object itself."""

from __future__ import annotations

from typing import Any

from iii.stream_ops import parse_ops
from iii_streams import MemoryStream

OPS = parse_ops([{"type": "increment", "path": "n", "by": 1}])


class Audit:
    seen: list[str]

    async def update(self, input: Any, **kw: Any) -> Any:
        self.seen.append(input.item_id)
        return await super().update(input, **kw)  # type: ignore[misc]


class AuditedMemory(Audit, MemoryStream):
    """update() from a mixin, ahead of MemoryStream's in the MRO."""


class OwnUpdate(MemoryStream):
    seen: list[str]

    async def update(self, input: Any, **kw: Any) -> Any:
        self.seen.append(input.item_id)
        return await super().update(input, **kw)


class FurtherDown(AuditedMemory):
    """Inherits the mixin's update() and nothing else."""


async def test_a_mixins_update_sees_the_engines_updates() -> None:
    for cls in (AuditedMemory, FurtherDown):
        store = cls()
        store.seen = []
        result = await store.update_parsed("s", "g", "mixin", OPS)
        assert store.seen == ["mixin"] and result is not None and result.new_value == {"n": 1}


async def test_a_subclasss_own_update_sees_the_engines_updates() -> None:
    store = OwnUpdate()
    store.seen = []
    assert (await store.update_parsed("s", "g", "own", OPS)) is not None
    assert store.seen == ["own"]


async def test_an_update_set_on_the_object_sees_the_engines_updates() -> None:
    store = MemoryStream()
    seen: list[str] = []
    original = store.update

    async def patched(input: Any, **kw: Any) -> Any:
        seen.append(input.item_id)
        return await original(input, **kw)

    store.update = patched  # type: ignore[method-assign]
    assert (await store.update_parsed("s", "g", "patched", OPS)) is not None
    assert seen == ["patched"]


async def test_a_plain_store_keeps_the_fast_path() -> None:
    assert MemoryStream.update_parsed is not AuditedMemory.update_parsed
    assert (await MemoryStream().update_parsed("s", "g", "i", OPS)).new_value == {"n": 1}
