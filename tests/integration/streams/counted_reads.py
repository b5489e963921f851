"""Counting a store's reads of concurrent gets (``store._reads``, a :class:`~iii_streams.coalescing.ReadCoalescer`).

Example::

    counted = CountedReads(store)
    await asyncio.gather(*(store.get(...) for _ in range(300)))
    assert len(counted.calls) <= 6  # requests per read, one entry per read
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


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
