"""The stored text of items this process wrote last, so a store can update them with one compare-and-set (no read
first); the SQL and Redis stores share it.

Bounded: at most ``max_items`` items (the least recently written are forgotten) and texts of at most ``max_chars``
characters. An item another process wrote (a compare-and-set that found another text) is distrusted for
``distrust_s`` seconds of the event loop's clock: it may keep being written elsewhere, so the store reads it first
meanwhile instead of missing again.

Example:
    >>> import asyncio
    >>> async def demo():
    ...     known = KnownTexts[str]()
    ...     known.wrote("a", '{"n":1}')
    ...     before = known.get("a")
    ...     known.distrust("a")  # another process wrote it
    ...     known.wrote("a", '{"n":2}')  # still distrusted: not remembered
    ...     return before, known.get("a")
    >>> asyncio.run(demo())
    ('{"n":1}', None)
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Final, Generic, TypeVar

__all__ = ["KnownTexts"]

K = TypeVar("K", bound=Hashable)

MAX_ITEMS: Final = 1024
MAX_CHARS: Final = 8192
DISTRUST_S: Final = 1.0


class KnownTexts(Generic[K]):
    """Item key → the text this process last wrote, or nothing while it is unknown or distrusted."""

    __slots__ = ("_items", "distrust_s", "max_chars", "max_items")

    def __init__(self, max_items: int = MAX_ITEMS, max_chars: int = MAX_CHARS, distrust_s: float = DISTRUST_S) -> None:
        self.max_items = max_items
        self.max_chars = max_chars
        self.distrust_s = distrust_s
        # key -> (the text, or None while distrusted; loop time before which it stays distrusted), oldest first
        self._items: dict[K, tuple[str | None, float]] = {}

    def get(self, key: K) -> str | None:
        """The text this process last wrote of ``key``; ``None`` when unknown or distrusted (read it first).

        Example:
            >>> KnownTexts[str]().get("never-written") is None
            True
        """
        text, _ = self._items.get(key, (None, 0.0))
        return text

    def wrote(self, key: K, text: str | None) -> None:
        """This process wrote ``text`` to ``key`` (``None``: deleted it): remembered unless the item is distrusted
        or the text too long.

        Example:
            >>> import asyncio
            >>> async def demo():
            ...     known = KnownTexts[str](max_chars=8)
            ...     known.wrote("short", "[1]")
            ...     known.wrote("long", "[1, 2, 3, 4]")
            ...     return known.get("short"), known.get("long")
            >>> asyncio.run(demo())
            ('[1]', None)
        """
        old = self._items.pop(key, None)
        if old is not None and old[1] > asyncio.get_running_loop().time():
            self._items[key] = (None, old[1])
        elif text is not None and len(text) <= self.max_chars:
            self._items[key] = (text, 0.0)
        self._bound()

    def distrust(self, key: K) -> None:
        """Another process wrote ``key``: unknown for ``distrust_s`` seconds.

        Example:
            >>> import asyncio
            >>> async def demo():
            ...     known = KnownTexts[str](distrust_s=60)
            ...     known.distrust("a")
            ...     known.wrote("a", "1")  # within the minute: not remembered
            ...     return known.get("a")
            >>> asyncio.run(demo()) is None
            True
        """
        self._items.pop(key, None)
        self._items[key] = (None, asyncio.get_running_loop().time() + self.distrust_s)
        self._bound()

    def forget(self, key: K) -> None:
        """Nothing is known of ``key`` any more (not even that it is distrusted).

        Example:
            >>> import asyncio
            >>> async def demo():
            ...     known = KnownTexts[str](distrust_s=60)
            ...     known.distrust("a")
            ...     known.forget("a")
            ...     known.wrote("a", "1")  # no longer distrusted: remembered
            ...     return known.get("a")
            >>> asyncio.run(demo())
            '1'
        """
        self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)

    def _bound(self) -> None:
        if len(self._items) > self.max_items:
            del self._items[next(iter(self._items))]  # the least recently written
