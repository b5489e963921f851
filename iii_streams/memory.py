"""``MemoryStream``: a process-local store (the production default, without its prefix quirks).

Items are kept as compact JSON text, so what you read back is an independent copy, non-JSON data fails at
``set`` time exactly as it would on the other backends, and big integers and key order survive. Groups list in
insertion order and disappear with their last item (docs/protocol.md#stream-improvements ST4). Every method runs without
awaiting in
the middle, which makes each one atomic on the event loop (so a ``timeout`` is checked but can never expire).

Example:
    >>> import asyncio
    >>> from iii.stream import StreamUpdateInput, UpdateIncrement
    >>> async def demo():
    ...     s = MemoryStream()
    ...     r = await s.update(StreamUpdateInput(stream_name="s", group_id="g", item_id="i",
    ...                                          ops=[UpdateIncrement(path="n", by=2)]))
    ...     return r.old_value, r.new_value
    >>> asyncio.run(demo())
    (None, {'n': 2})
"""

from __future__ import annotations

import builtins
from typing import Any

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.stream import (
    StreamDeleteInput,
    StreamDeleteResult,
    StreamGetInput,
    StreamListGroupsInput,
    StreamListInput,
    StreamSetInput,
    StreamSetResult,
    StreamUpdateResult,
)
from iii.stream_ops import Op, apply_update
from iii.wire import loads

from .base import DEFAULT_TIMEOUT, FieldUpdates, SetResult, UpdateResult
from .errors import (
    SEND_ROOM,
    check_list_bytes,
    check_names,
    check_timeout,
    check_value_bytes,
    json_text,
    utf8_size,
)
from .events import EventHub, StreamEvent, Subscription, Watch, check_queue_size, custom_event, make_event

__all__ = ["MemoryStream"]


class MemoryStream(FieldUpdates):
    """An in-process ``IStream``; ``MemoryStream.from_url("memory://")`` works too.

    Example:
        >>> MemoryStream().publish_events
        True
    """

    def __init__(
        self, *, publish_events: bool = True, watch_queue_size: int = 10_000, timeout: float | None = DEFAULT_TIMEOUT
    ) -> None:
        self.publish_events = publish_events
        self.timeout = check_timeout(timeout)
        self._streams: dict[str, dict[str, dict[str, str]]] = {}
        self._hub = EventHub(check_queue_size(watch_queue_size, "MemoryStream: watch_queue_size"))

    @classmethod
    def from_url(cls, url: str = "memory://", **options: Any) -> MemoryStream:
        """``memory://`` (anything after the scheme is ignored: every call makes a new, empty store).

        Example:
            >>> isinstance(MemoryStream.from_url("memory://"), MemoryStream)
            True
        """
        if not url.startswith("memory:"):
            raise ValueError(f"MemoryStream needs a memory:// URL, got {url!r}")
        return cls(**options)

    def _emit(self, stream_name: str, group_id: str, item_id: str | None, kind: str, text: str) -> None:
        if self.publish_events and self._hub.active:
            self._hub.publish(make_event(stream_name, group_id, item_id, kind, loads(text)))

    async def get(self, input: StreamGetInput, *, timeout: float | None = None) -> Any:
        """The item (a fresh copy), or ``None`` when missing.

        Example:
            >>> import asyncio
            >>> async def demo() -> Any:
            ...     store = MemoryStream()
            ...     await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data={"n": 1}))
            ...     item = await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i"))
            ...     item["n"] = 2  # a copy: the stored item is unchanged
            ...     return await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i"))
            >>> asyncio.run(demo())
            {'n': 1}
        """
        self._limit(timeout)  # checked only: a memory operation never waits
        check_names(input.stream_name, input.group_id, input.item_id)  # as every other store refuses them
        text = self._streams.get(input.stream_name, {}).get(input.group_id, {}).get(input.item_id)
        return None if text is None else loads(text)

    async def set(self, input: StreamSetInput, *, timeout: float | None = None) -> StreamSetResult[Any]:
        """Store the item; returns the old and new value. Data that is not JSON is refused here, as every store does.

        Example:
            >>> import asyncio
            >>> async def demo() -> Any:
            ...     store = MemoryStream()
            ...     first = await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
            ...     second = await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=2))
            ...     return (first.old_value, first.new_value), (second.old_value, second.new_value)
            >>> asyncio.run(demo())
            ((None, 1), (1, 2))
        """
        self._limit(timeout)  # checked only: a memory operation never waits
        check_names(input.stream_name, input.group_id, input.item_id)
        text = json_text(input.data, "data")
        group = self._streams.setdefault(input.stream_name, {}).setdefault(input.group_id, {})
        old_text = group.get(input.item_id)
        group[input.item_id] = text
        old = None if old_text is None else loads(old_text)
        self._emit(input.stream_name, input.group_id, input.item_id, "create" if old is None else "update", text)
        return SetResult(old_value=old, new_value=input.data)

    async def delete(self, input: StreamDeleteInput, *, timeout: float | None = None) -> StreamDeleteResult:
        """Remove the item; returns its old value (``None`` when it was missing). An emptied group disappears.

        Example:
            >>> import asyncio
            >>> async def demo() -> Any:
            ...     store = MemoryStream()
            ...     await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data="x"))
            ...     gone = await store.delete(StreamDeleteInput(stream_name="s", group_id="g", item_id="i"))
            ...     return gone.old_value, await store.list_groups(StreamListGroupsInput(stream_name="s"))
            >>> asyncio.run(demo())
            ('x', [])
        """
        self._limit(timeout)  # checked only: a memory operation never waits
        check_names(input.stream_name, input.group_id, input.item_id)
        groups = self._streams.get(input.stream_name, {})
        group = groups.get(input.group_id, {})
        if input.item_id not in group:
            return StreamDeleteResult(old_value=None)
        old_text = group.pop(input.item_id)
        if not group:
            del groups[input.group_id]
            if not groups:
                del self._streams[input.stream_name]
        self._emit(input.stream_name, input.group_id, input.item_id, "delete", old_text)
        return StreamDeleteResult(old_value=loads(old_text))

    async def list(self, input: StreamListInput, *, timeout: float | None = None) -> builtins.list[Any]:
        """Every item value of a group, in insertion order.

        Example:
            >>> import asyncio
            >>> async def demo() -> Any:
            ...     store = MemoryStream()
            ...     for item_id in ("b", "a"):
            ...         await store.set(StreamSetInput(stream_name="s", group_id="g", item_id=item_id, data=item_id))
            ...     return await store.list(StreamListInput(stream_name="s", group_id="g"))
            >>> asyncio.run(demo())
            ['b', 'a']
        """
        self._limit(timeout)  # checked only: a memory operation never waits
        check_names(input.stream_name, input.group_id)
        group = self._streams.get(input.stream_name, {}).get(input.group_id, {})
        return [loads(text) for text in group.values()]

    async def list_text(self, input: StreamListInput, *, max_bytes: int | None = None) -> str:
        """:meth:`list` as one JSON array text: the stored texts joined, none decoded. Over ``max_bytes``:
        :class:`~iii_streams.errors.StreamTooLargeError`, known from the texts' lengths before any is joined.

        Example:
            >>> import asyncio
            >>> async def demo() -> Any:
            ...     store = MemoryStream()
            ...     await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data={"n": 2**70}))
            ...     return await store.list_text(StreamListInput(stream_name="s", group_id="g"))
            >>> asyncio.run(demo())
            '[{"n":1180591620717411303424}]'
        """
        check_names(input.stream_name, input.group_id)
        texts = self._streams.get(input.stream_name, {}).get(input.group_id, {}).values()
        if max_bytes is not None:  # characters first (at most the bytes): no copy of a group far over the bound
            check_list_bytes(input, sum(map(len, texts)) + len(texts) + 1, max_bytes)
        text = f"[{','.join(texts)}]"
        if max_bytes is not None:
            check_list_bytes(input, utf8_size(text), max_bytes)
        return text

    async def list_groups(self, input: StreamListGroupsInput, *, timeout: float | None = None) -> builtins.list[str]:
        """Every non-empty group of a stream, in insertion order.

        Example:
            >>> import asyncio
            >>> async def demo() -> Any:
            ...     store = MemoryStream()
            ...     for group_id in ("work", "home"):
            ...         await store.set(StreamSetInput(stream_name="todos", group_id=group_id, item_id="1", data=1))
            ...     return await store.list_groups(StreamListGroupsInput(stream_name="todos"))
            >>> asyncio.run(demo())
            ['work', 'home']
        """
        self._limit(timeout)  # checked only: a memory operation never waits
        check_names(input.stream_name, "")
        return builtins.list(self._streams.get(input.stream_name, {}))

    async def _update(self, stream_name: str, group_id: str, item_id: str, ops: builtins.list[Op],
                      timeout: float | None, *, max_bytes: int | None = None) -> StreamUpdateResult[Any]:
        self._limit(timeout)  # checked only: a memory operation never waits
        check_names(stream_name, group_id, item_id)
        group = self._streams.get(stream_name, {}).get(group_id, {})
        old_text = group.get(item_id)
        old, new = apply_update(None if old_text is None else loads(old_text), ops)
        text = json_text(new, "the updated value")
        check_value_bytes(text, max_bytes)  # (no await since the read: nothing else wrote the item meanwhile)
        # the group is looked up again: apply_update may raise, and a failed update must not create a group
        self._streams.setdefault(stream_name, {}).setdefault(group_id, {})[item_id] = text
        self._emit(stream_name, group_id, item_id, "create" if old is None else "update", text)
        return UpdateResult(old_value=old, new_value=new)

    async def send(self, stream_name: str, group_id: str, id: str | None, type: str, data: Any) -> None:
        """Publish a custom event to this store's watchers; stores nothing, refuses data that is not JSON.

        Example:
            >>> import asyncio
            >>> async def demo() -> Any:
            ...     async with MemoryStream() as store, store.watch("chat") as events:
            ...         await store.send("chat", "room-1", None, "typing", {"user": "ada"})
            ...         return (await anext(events))["event"]
            >>> asyncio.run(demo())
            {'type': 'event', 'event': {'type': 'typing', 'data': {'user': 'ada'}}}
        """
        # refuse what no other backend could publish either; watchers get a copy, never the caller's data
        text = json_text(data, "data", room=SEND_ROOM)
        if self._hub.active:
            self._hub.publish(custom_event(stream_name, group_id, id, type, loads(text)))

    async def publish(self, event: StreamEvent) -> None:
        """Hand an already built event to this store's watchers.

        Example:
            >>> import asyncio
            >>> async def demo() -> Any:
            ...     async with MemoryStream() as store, store.watch("s") as events:
            ...         await store.publish(make_event("s", "g", "i", "delete", {"n": 1}))
            ...         return (await anext(events))["event"]
            >>> asyncio.run(demo())
            {'type': 'delete', 'data': {'n': 1}}
        """
        text = json_text(event, "the event", room=0)  # refused as every other backend refuses it, watched or not
        if self._hub.active:  # (nobody to hand it to: nothing copied)
            self._hub.publish(loads(text), text)  # watchers get copies, never the caller's event

    def watch(
        self, stream_name: str | None = None, group_id: str | None = None, item_id: str | None = None
    ) -> Watch:
        """Change events of this store, optionally filtered by stream, group and item.

        Example:
            >>> import asyncio
            >>> async def demo() -> Any:
            ...     async with MemoryStream() as store, store.watch("todos", item_id="2") as events:
            ...         for item_id in ("1", "2"):
            ...             await store.set(StreamSetInput(stream_name="todos", group_id="g", item_id=item_id, data=1))
            ...         return (await anext(events))["id"]
            >>> asyncio.run(demo())
            '2'
        """
        event_filter = self._filter(stream_name, group_id, item_id)

        async def opener() -> Subscription:
            return self._hub.subscribe(event_filter)

        return Watch(opener, event_filter)

    async def list_all(self) -> builtins.list[tuple[str, builtins.list[str]]]:
        """Every stream with its non-empty groups, both sorted.

        Example:
            >>> import asyncio
            >>> async def demo() -> Any:
            ...     store = MemoryStream()
            ...     await store.set(StreamSetInput(stream_name="todos", group_id="work", item_id="1", data=1))
            ...     return await store.list_all()
            >>> asyncio.run(demo())
            [('todos', ['work'])]
        """
        return [(name, sorted(groups)) for name, groups in sorted(self._streams.items())]

    async def aclose(self) -> None:
        """Nothing to release; the data stays readable.

        Example:
            >>> import asyncio
            >>> async def demo() -> Any:
            ...     store = MemoryStream()
            ...     await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
            ...     await store.aclose()
            ...     return await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i"))
            >>> asyncio.run(demo())
            1
        """
