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


# Each public name is imported on first use (PEP 562): ``iii-streams`` imports this package before it can handle a
# Ctrl-C, and the optional dependencies (redis, sqlalchemy) load only when their backend is asked for. Not
# ``typing.TYPE_CHECKING``: ``typing`` alone takes milliseconds to import; type checkers read this name as that one.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from iii._version import __version__ as __version__

    from .base import DEFAULT_TIMEOUT, Backend
    from .errors import (
        PoolExhaustedError,
        SchemaMissingError,
        StreamBackendError,
        StreamClosedError,
        StreamDataError,
        StreamError,
        StreamFileLostError,
        StreamTimeoutError,
        StreamTooLargeError,
        StreamUnavailableError,
        StreamValueTooLargeError,
        UpdateConflictError,
    )
    from .events import EventFilter, StreamEvent, StreamGapError, StreamLagError, Watch
    from .memory import MemoryStream
    from .messages import missing_extra as missing_extra
    from .ops import apply_ops, apply_update
    from .redis import RedisStream
    from .sql import SQLStream
    from .urls import open_stream

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
    "StreamFileLostError",
    "StreamGapError",
    "StreamLagError",
    "StreamTimeoutError",
    "StreamTooLargeError",
    "StreamUnavailableError",
    "StreamValueTooLargeError",
    "UpdateConflictError",
    "Watch",
    "apply_ops",
    "apply_update",
    "open_stream",
]

_FROM = {"__version__": "iii._version", "DEFAULT_TIMEOUT": ".base", "Backend": ".base", "PoolExhaustedError": ".errors",
         "SchemaMissingError": ".errors", "StreamBackendError": ".errors", "StreamClosedError": ".errors",
         "StreamDataError": ".errors", "StreamError": ".errors", "StreamFileLostError": ".errors",
         "StreamTimeoutError": ".errors",
         "StreamTooLargeError": ".errors", "StreamUnavailableError": ".errors",
         "StreamValueTooLargeError": ".errors", "UpdateConflictError": ".errors",
         "EventFilter": ".events",
         "StreamEvent": ".events", "StreamGapError": ".events", "StreamLagError": ".events", "Watch": ".events",
         "MemoryStream": ".memory", "missing_extra": ".messages", "apply_ops": ".ops", "apply_update": ".ops",
         "open_stream": ".urls", "RedisStream": ".redis", "SQLStream": ".sql"}


if not TYPE_CHECKING:  # a type checker reads the imports above; a __getattr__ would tell it that every name exists

    def __getattr__(name: str) -> object:
        from iii._lazy import attribute

        from .messages import missing_extra

        with missing_extra(name):  # a backend whose optional package is missing names the extra
            return attribute(globals(), _FROM, name)

    def __dir__() -> list[str]:
        from iii._lazy import names

        return names(globals(), _FROM)


del TYPE_CHECKING
