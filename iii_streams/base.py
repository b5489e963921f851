"""``Backend``: what every ``iii_streams`` store adds to the ``IStream`` contract.

On top of get/set/delete/list/list_groups/update a backend can ``send`` custom events, ``watch()`` changes,
``list_all()`` streams with their groups (for an engine's ``stream::list_all``), open from a URL and close.

Example:
    >>> import asyncio
    >>> async def demo():
    ...     async with Backend.from_url("memory://") as store:
    ...         await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="1", data=[1, 2]))
    ...         return await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="1"))
    >>> asyncio.run(demo())
    [1, 2]
"""

from __future__ import annotations

from abc import abstractmethod
from types import TracebackType
from typing import Any, Self

from iii.stream import IStream, StreamGetInput, StreamSetInput

from .events import EventFilter, StreamEvent, Watch

__all__ = ["Backend", "StreamGetInput", "StreamSetInput"]


class Backend(IStream[Any]):
    """Base class of the stream stores; ``Backend.from_url(url)`` picks the store from the URL scheme.

    ``publish_events`` (default true) makes set/update/delete publish change events (to the store's pub/sub
    for Redis and PostgreSQL, in-process otherwise); an engine that publishes events itself turns it off.
    """

    publish_events: bool = True

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Backend:
        """Open the store named by ``url`` (``memory://``, ``redis://…``, ``sqlite+aiosqlite:///…``,
        ``postgresql+asyncpg://…``); subclasses accept only their own schemes.

        Example:
            >>> type(Backend.from_url("memory://")).__name__
            'MemoryStream'
        """
        from .urls import open_stream

        store = open_stream(url, **options)
        if not isinstance(store, cls):
            raise ValueError(f"{url!r} opens a {type(store).__name__}, not a {cls.__name__}")
        return store

    @abstractmethod
    async def send(self, stream_name: str, group_id: str, id: str | None, type: str, data: Any) -> None:
        """Publish a custom event ``{"type": "event", "event": {"type": type, "data": data}}``; stores nothing."""

    @abstractmethod
    async def publish(self, event: StreamEvent) -> None:
        """Publish an already built event wrapper to this store's watchers (and pub/sub, where it has one)."""

    @abstractmethod
    def watch(
        self, stream_name: str | None = None, group_id: str | None = None, item_id: str | None = None
    ) -> Watch:
        """Change events, optionally filtered; use as ``async with store.watch(...) as events``."""

    @abstractmethod
    async def list_all(self) -> list[tuple[str, list[str]]]:
        """Every stream with its non-empty groups, both sorted: ``[(stream_name, [group_id, …]), …]``."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections; idempotent."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    @staticmethod
    def _filter(stream_name: str | None, group_id: str | None, item_id: str | None) -> EventFilter:
        return EventFilter(stream_name, group_id, item_id)
