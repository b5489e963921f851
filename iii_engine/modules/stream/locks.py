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

__all__ = ["KeyedLocks", "store_updates_atomically"]


class KeyedLocks:
    """One lock per key, created on demand and dropped with its last user."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}

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
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def hold_update(self, store: object, key: Hashable) -> contextlib.AbstractAsyncContextManager[object]:
        """What an ``update`` of ``key`` in ``store`` runs under: the lock of ``key``, unless the store applies
        updates atomically itself (then one item's concurrent updates may share a transaction, group commit,
        instead of queueing here one by one).

        Example:
            >>> class Atomic:
            ...     atomic_updates = True
            >>> async def demo() -> int:
            ...     locks = KeyedLocks()
            ...     async with locks.hold_update(Atomic(), "k"):
            ...         return len(locks)
            >>> asyncio.run(demo())
            0
        """
        if store_updates_atomically(store):
            return contextlib.nullcontext()
        return self.hold(key)


def store_updates_atomically(store: object) -> bool:
    """Whether ``store`` applies ``update`` atomically by itself (``iii_streams.Backend.atomic_updates``), so
    the engine need not queue one item's updates behind a lock.

    Example:
        >>> class Plain: ...
        >>> store_updates_atomically(Plain())
        False
    """
    return getattr(store, "atomic_updates", False) is True
