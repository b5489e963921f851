"""Counting a store's reads of concurrent gets (``store._reads``, a :class:`~iii_streams.coalescing.ReadCoalescer`).

Example::

    counted = CountedReads(store)
    await asyncio.gather(*(store.get(...) for _ in range(300)))
    assert len(counted.calls) <= 6  # requests per read, one entry per read
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from iii.stream import StreamGetInput, StreamSetInput
from iii_streams import coalescing


class CountedReads:
    """Wraps ``store``'s read of several gets: ``calls`` holds how many gets each read took. ``lanes``: how many
    reads the store runs at once from now on (1: the gets past the first are read in one batch)."""

    def __init__(self, store: Any, *, lanes: int | None = None) -> None:
        self.calls: list[int] = []
        self._read = store._reads._read
        store._reads._read = self
        if lanes is not None:
            store._reads._lanes = lanes

    async def __call__(self, requests: Sequence[Any]) -> Any:
        self.calls.append(len(requests))
        return await self._read(requests)


def get_input(stream: str, item: str) -> StreamGetInput:
    """The get of ``item`` in group ``g`` of ``stream``."""
    return StreamGetInput(stream_name=stream, group_id="g", item_id=item)


async def many_gets_read_together(store: Any, stream: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """300 gets in flight of 60 items (50 stored, duplicates among them) each get their own item's value, read in
    one read alone and the rest together (256 at most a read)."""
    for i in range(50):
        await store.set(StreamSetInput(stream_name=stream, group_id="g", item_id=f"i{i}", data={"n": i, "big": 2**70}))
    monkeypatch.setattr(coalescing, "PATIENCE_S", 60)  # batches start as reads end: their count is known
    counted = CountedReads(store)
    items = [f"i{i % 60}" for i in range(300)]  # duplicates, and i50..i59 missing
    values = await asyncio.gather(*(store.get(get_input(stream, item)) for item in items))
    assert values == [{"n": i % 60, "big": 2**70} if i % 60 < 50 else None for i in range(300)]
    assert sum(counted.calls) == 300
    assert len(counted.calls) <= 3, counted.calls
