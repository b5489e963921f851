"""Stream stores for iii: in-memory, Redis (production layout) and SQL (SQLite / PostgreSQL), one contract.

Each store is a complete ``iii.stream.IStream`` plus ``send``, ``watch()``, ``list_all()`` and ``aclose()``;
plug one into ``III.create_stream(name, store)`` or use it as an engine's own store. Every operation takes an
optional ``timeout=`` (seconds); every backend failure is a :class:`StreamError` (see :mod:`iii_streams.errors`).

Example:
    >>> import asyncio
    >>> from iii.stream import StreamGetInput, StreamSetInput
    >>> async def demo():
    ...     async with open_stream("memory://") as store:
    ...         await store.set(StreamSetInput(stream_name="todos", group_id="u1", item_id="t1", data={"done": False}))
    ...         return await store.get(StreamGetInput(stream_name="todos", group_id="u1", item_id="t1"))
    >>> asyncio.run(demo())
    {'done': False}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iii._version import __version__ as __version__

from .base import DEFAULT_TIMEOUT, Backend
from .errors import (
    PoolExhaustedError,
    SchemaMissingError,
    StreamBackendError,
    StreamClosedError,
    StreamDataError,
    StreamError,
    StreamTimeoutError,
    StreamUnavailableError,
    UpdateConflictError,
)
from .events import EventFilter, StreamEvent, StreamGapError, StreamLagError, Watch
from .memory import MemoryStream
from .messages import missing_extra
from .ops import apply_ops, apply_update
from .urls import open_stream

if TYPE_CHECKING:
    from .redis import RedisStream
    from .sql import SQLStream

__all__ = [
    "DEFAULT_TIMEOUT",
    "Backend",
    "EventFilter",
    "MemoryStream",
    "PoolExhaustedError",
    "RedisStream",
    "SQLStream",
    "SchemaMissingError",
    "StreamBackendError",
    "StreamClosedError",
    "StreamDataError",
    "StreamError",
    "StreamEvent",
    "StreamGapError",
    "StreamLagError",
    "StreamTimeoutError",
    "StreamUnavailableError",
    "UpdateConflictError",
    "Watch",
    "apply_ops",
    "apply_update",
    "open_stream",
]


def __getattr__(name: str) -> Any:
    # optional dependencies (redis, sqlalchemy) load only when their backend is asked for
    if name == "RedisStream":
        with missing_extra(name):
            from .redis import RedisStream

            return RedisStream
    if name == "SQLStream":
        with missing_extra(name):
            from .sql import SQLStream

            return SQLStream
    raise AttributeError(f"module 'iii_streams' has no attribute {name!r}")
