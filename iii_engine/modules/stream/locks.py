"""Per-key asyncio locks that disappear when nobody holds or waits for them (docs/protocol.md#stream-improvements ST1,
ST11).

Example:
    >>> import asyncio
    >>> async def demo() -> int:
    ...     locks = KeyedLocks()
    ...     async with locks.hold(("s", "g", "i")):
    ...         inside = len(locks)
    ...     return inside * 10 + len(locks)
    >>> asyncio.run(demo())
    10
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable
from typing import Any

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.stream_glue import PlainWrites
from iii.stream_ops import Op

__all__ = ["KeyedLocks", "store_updates_atomically"]


class KeyedLocks:
    """One lock per key, created on demand and dropped with its last user."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}
        self._writes = PlainWrites()  # bodies of join() that run without the lock

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        """Hold the lock of ``key`` for the body of the ``async with``."""
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                if self._writes:  # a join() body that began before this lock was taken must not land inside it
                    await self._writes.drained(key)
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    @contextlib.asynccontextmanager
    async def join(self, key: Hashable) -> AsyncIterator[None]:
        """Hold the lock of ``key`` only if it is held or waited for now; else run the body at once, no lock made
        (a :meth:`hold` of ``key`` that begins meanwhile waits for the body to end).

        Why: a custom stream's set or delete that landed inside a composed update of its item (between that
        update's get and set) was overwritten by it, lost though acknowledged; with no update in flight it needs
        no lock.

        Example:
            >>> async def demo() -> int:
            ...     locks = KeyedLocks()
            ...     async with locks.join("k"):
            ...         return len(locks)
            >>> asyncio.run(demo())
            0
        """
        if key not in self._locks:
            with self._writes.running(key):  # a hold() that starts meanwhile waits for this body
                yield
            return
        async with self.hold(key):
            yield

    async def update_parsed(self, store: Any, stream_name: str, group_id: str, item_id: str, ops: list[Op], *,
                            max_bytes: int | None = None) -> Any:
        """``store.update_parsed(...)`` of one item under that item's lock, unless the store applies updates
        atomically itself (then one item's concurrent updates may share a transaction, group commit, instead of
        queueing here one by one; and no lock or context manager is made per update). ``max_bytes``, when given,
        is passed on (the store refuses a new value over it: ``iii_streams.Backend.update_parsed``).

        Example:
            >>> from iii.stream_ops import parse_ops
            >>> from iii_streams import MemoryStream
            >>> async def demo() -> object:
            ...     ops = parse_ops([{"type": "increment", "path": "n", "by": 1}])
            ...     return (await KeyedLocks().update_parsed(MemoryStream(), "s", "g", "i", ops)).new_value
            >>> asyncio.run(demo())
            {'n': 1}
        """
        options = {} if max_bytes is None else {"max_bytes": max_bytes}  # (a store's own override may not take it)
        if store_updates_atomically(store):
            return await store.update_parsed(stream_name, group_id, item_id, ops, **options)
        async with self.hold((stream_name, group_id, item_id)):
            return await store.update_parsed(stream_name, group_id, item_id, ops, **options)


def store_updates_atomically(store: object) -> bool:
    """Whether ``store`` applies ``update`` atomically by itself (``iii_streams.Backend.atomic_updates``), so
    the engine need not queue one item's updates behind a lock.

    Example:
        >>> class Plain: ...
        >>> store_updates_atomically(Plain())
        False
    """
    return getattr(store, "atomic_updates", False) is True
