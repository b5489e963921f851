"""The functions ``III.create_stream`` registers: ``stream::<op>(<name>)`` handlers over an :class:`IStream`.

Beyond the reference SDK (docs/protocol.md#sdk-improvements S7, S8): ``update`` is served too, composed from get →
apply ops → set
under a per-item lock when the backend's ``update`` returns ``None`` or raises ``NotImplementedError`` (a missing
item starts as ``{}``; a set or delete of an item waits for its composed update in flight, which would otherwise
overwrite it); a
``None`` from ``delete`` becomes ``{"old_value": null}`` and from ``set`` ``{"new_value": <input data>}``;
pydantic results keep their ``None`` fields.

Example:
    >>> from iii_streams import MemoryStream
    >>> sorted(stream_functions("todos", MemoryStream()))  # doctest: +NORMALIZE_WHITESPACE
    ['stream::delete(todos)', 'stream::get(todos)', 'stream::list(todos)', 'stream::list_groups(todos)',
     'stream::set(todos)', 'stream::update(todos)']
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping
from typing import Any

from .stream import (
    IStream,
    StreamDeleteInput,
    StreamGetInput,
    StreamListGroupsInput,
    StreamListInput,
    StreamSetInput,
    StreamUpdateInput,
)
from .stream_ops import apply_update, ops_to_wire
from .wire import jsonable, loads

__all__ = ["PlainWrites", "StreamFunctions", "stream_functions"]

StreamHandler = Callable[[Any], Awaitable[Any]]
#: The largest answer the engine takes now, in bytes (``None``: it named no limit).
MessageLimit = Callable[[], "int | None"]


class StreamFunctions:
    """The six handlers for one named stream; ``update`` serialises the composed fallback per item.

    ``max_bytes``: the engine's message size limit now; ``list`` of an ``iii_streams`` store refuses a group over it
    before building it (the answer would be refused anyway).

    Example:
        >>> # handlers = StreamFunctions(MemoryStream()); await handlers.get({"stream_name": ..., ...})
    """

    def __init__(self, stream: IStream[Any], max_bytes: MessageLimit | None = None) -> None:
        self._stream = stream
        self._max_bytes = max_bytes
        # Only items with an update in flight have a lock; the last one out removes it.
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._writes = PlainWrites()  # sets and deletes that began with no update of their item in flight

    async def get(self, data: Any) -> Any:
        """``stream::get``: the item, or ``None``."""
        return jsonable(await self._stream.get(StreamGetInput.model_validate(data)))

    async def set(self, data: Any) -> Any:
        """``stream::set``: ``{old_value, new_value}``; a backend answering ``None`` reports a create."""
        request = StreamSetInput.model_validate(data)
        async with self._after_update((request.group_id, request.item_id)):
            result = await self._stream.set(request)
        if result is None:
            return {"new_value": jsonable(request.data)}
        return jsonable(result)

    async def delete(self, data: Any) -> Any:
        """``stream::delete``: ``{old_value}``, ``null`` when the backend answers ``None``."""
        request = StreamDeleteInput.model_validate(data)
        async with self._after_update((request.group_id, request.item_id)):
            result = await self._stream.delete(request)
        return {"old_value": None} if result is None else jsonable(result)

    async def list(self, data: Any) -> Any:
        """``stream::list``: the items of a group.

        Raises:
            ValueError: the group is more bytes of JSON than the engine's message size limit (an ``iii_streams``
                store finds out before reading or joining the items; any other store's answer is refused as over
                the limit once encoded, as every handler's is).
        """
        request = StreamListInput.model_validate(data)
        limit = None if self._max_bytes is None else self._max_bytes()
        if limit is None or not _bounded_lister(self._stream):
            return jsonable(await self._stream.list(request))
        try:
            text: str = await self._stream.list_text(request, max_bytes=limit)  # type: ignore[attr-defined]
        except Exception as exc:
            # the store's own error class, looked up as _bounded_lister does: the SDK does not import iii_streams
            errors = sys.modules.get("iii_streams.errors")
            if errors is None or not isinstance(exc, errors.StreamTooLargeError):
                raise
            raise ValueError(
                f"stream::list({request.stream_name}) was not answered: the items of group {request.group_id!r} "
                f"are {exc.size:,} or more bytes of JSON, over the engine's message size limit of {limit:,} bytes "
                "(max_message_size); send bulk data through a channel (create_channel) instead") from exc
        return loads(text)

    async def list_groups(self, data: Any) -> Any:
        """``stream::list_groups``: the group ids."""
        return jsonable(await self._stream.list_groups(StreamListGroupsInput.model_validate(data)))

    async def update(self, data: Any) -> Any:
        """``stream::update``: the backend's own update, else the composed one."""
        request = StreamUpdateInput.model_validate(_wire_ops(data))
        try:
            result = await self._stream.update(request)
        except NotImplementedError:
            result = None
        if result is not None:
            return jsonable(result)
        return await self._compose_update(request)

    async def _compose_update(self, request: StreamUpdateInput) -> dict[str, Any]:
        key = (request.group_id, request.item_id)
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                if self._writes:  # a set or delete that began before this lock was taken lands before the read
                    await self._writes.drained(key)
                old = jsonable(
                    await self._stream.get(
                        StreamGetInput(
                            stream_name=request.stream_name, group_id=request.group_id, item_id=request.item_id
                        )
                    )
                )
                old, new = apply_update(old, request.ops)  # a missing item starts as {}, as in every store
                await self._stream.set(
                    StreamSetInput(
                        stream_name=request.stream_name,
                        group_id=request.group_id,
                        item_id=request.item_id,
                        data=new,
                    )
                )
                return {"old_value": old, "new_value": new}
        finally:
            self._forget_if_free(key, lock)

    @contextlib.asynccontextmanager
    async def _after_update(self, key: tuple[str, str]) -> AsyncIterator[None]:
        """Hold ``key``'s lock if a composed update of that item is in flight: a set or delete that landed between
        its get and its set was overwritten by it, lost though it had succeeded."""
        lock = self._locks.get(key)
        if lock is None:  # the usual case: no composed update of this item right now
            with self._writes.running(key):  # one that starts meanwhile reads after this write, not before
                yield
            return
        try:
            async with lock:
                yield
        finally:
            self._forget_if_free(key, lock)

    def _forget_if_free(self, key: tuple[str, str], lock: asyncio.Lock) -> None:
        # checked right after the release, with no await in between: only the last user sees it free
        if not lock.locked() and not getattr(lock, "_waiters", None) and self._locks.get(key) is lock:
            del self._locks[key]


class PlainWrites:
    """Per key, the writes running without the key's lock: what a composed update must wait for before its read.

    Why: a write that began before the update took the lock (its backend call still running) landed between the
    update's get and set and was overwritten by it, lost though acknowledged.

    Example:
        >>> async def demo() -> list[str]:
        ...     writes, seen = PlainWrites(), []
        ...     async def update() -> None:
        ...         await writes.drained("k")
        ...         seen.append("update")
        ...     with writes.running("k"):
        ...         task = asyncio.ensure_future(update())
        ...         await asyncio.sleep(0)
        ...         seen.append("write")
        ...     await task
        ...     return seen
        >>> asyncio.run(demo())
        ['write', 'update']
    """

    __slots__ = ("_running",)

    def __init__(self) -> None:
        self._running: dict[Hashable, _Running] = {}

    def __len__(self) -> int:
        return len(self._running)

    def running(self, key: Hashable) -> _Running:
        """A context manager counting one write of ``key`` in, for its body (a plain object: no generator)."""
        entry = self._running.get(key)
        if entry is None:
            entry = self._running[key] = _Running(self._running, key)
        return entry

    async def drained(self, key: Hashable) -> None:
        """Return once no write of ``key`` counted in is running (at once when none is)."""
        while (entry := self._running.get(key)) is not None:
            if entry.done is None:
                entry.done = asyncio.Event()
            await entry.done.wait()


class _Running:
    """The writes of one key running now (see :class:`PlainWrites`); each ``with`` counts one in and out."""

    __slots__ = ("count", "done", "key", "table")

    def __init__(self, table: dict[Hashable, _Running], key: Hashable) -> None:
        self.table = table
        self.key = key
        self.count = 0
        self.done: asyncio.Event | None = None  # made only once an update waits

    def __enter__(self) -> None:
        self.count += 1

    def __exit__(self, *exc: object) -> None:
        self.count -= 1
        if not self.count:
            if self.table.get(self.key) is self:
                del self.table[self.key]
            if self.done is not None:
                self.done.set()


def _bounded_lister(stream: object) -> bool:
    """Whether ``stream`` is an ``iii_streams`` store, whose ``list_text(max_bytes=...)`` refuses a group over the
    bound before building it (not imported here: a stream of any other kind never needs the package).

    Example:
        >>> from iii_streams import MemoryStream
        >>> _bounded_lister(MemoryStream()), _bounded_lister(object())
        (True, False)
    """
    base = sys.modules.get("iii_streams.base")
    return base is not None and isinstance(stream, base.Backend)


def _wire_ops(data: Any) -> Any:
    """``data`` with its ops validated and in their wire form. A root ``merge`` may come without ``path`` (or with
    ``null``), as the engine accepts it from its caller; the models require a string, and refused it with one
    pydantic error per union member instead of applying it."""
    if isinstance(data, Mapping) and isinstance(data.get("ops"), list):
        return {**data, "ops": ops_to_wire(data["ops"])}
    return data


def stream_functions(stream_name: str, stream: IStream[Any], max_bytes: MessageLimit | None = None
                     ) -> dict[str, StreamHandler]:
    """Function id → handler for every operation of stream ``stream_name``; ``max_bytes``: see
    :class:`StreamFunctions`.

    Raises ``TypeError`` when ``stream_name`` is not a string or ``stream`` lacks one of the six operations (found
    here, not at the first call of the missing one).

    Example:
        >>> from iii_streams import MemoryStream
        >>> list(stream_functions("s", MemoryStream()))[0]
        'stream::get(s)'
        >>> stream_functions("s", object())
        Traceback (most recent call last):
        ...
        TypeError: create_stream('s'): object is not a stream: no callable get, set, delete, list, list_groups, update
    """
    ops = ("get", "set", "delete", "list", "list_groups", "update")
    if not isinstance(stream_name, str):
        raise TypeError(f"create_stream: the stream name must be a string, got {type(stream_name).__name__}")
    missing = [op for op in ops if not callable(getattr(stream, op, None))]
    if missing:
        raise TypeError(f"create_stream({stream_name!r}): {type(stream).__name__} is not a stream: no callable "
                        f"{', '.join(missing)}")
    handlers = StreamFunctions(stream, max_bytes)
    return {f"stream::{op}({stream_name})": getattr(handlers, op) for op in ops}
