"""Stream change events: the production wrapper shape, filters, and ``watch()`` plumbing.

Events are plain dicts in the shape the production engine publishes
(docs/reference/payloads.md#stream-events), so an engine
can forward them to socket clients and triggers unchanged::

    {"type": "stream", "timestamp": 1700000000000, "streamName": "S", "groupId": "G", "id": "item-1",
     "event": {"type": "create", "data": {...}}}

Example:
    >>> ev = make_event("S", "G", "1", "create", {"n": 1}, timestamp=5)
    >>> ev["event"], EventFilter(stream_name="S", item_id="1").matches(ev)
    ({'type': 'create', 'data': {'n': 1}}, True)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.wire import dumps, loads

from .errors import StreamError

__all__ = [
    "EventFilter",
    "EventHub",
    "StreamEvent",
    "StreamGapError",
    "StreamLagError",
    "Subscription",
    "Watch",
    "check_queue_size",
    "custom_event",
    "event_json_parts",
    "make_event",
    "now_ms",
]

StreamEvent = dict[str, Any]
"""One event wrapper (see the module docstring)."""


class StreamLagError(StreamError, RuntimeError):
    """A ``watch()`` consumer fell so far behind that events were dropped; re-read state and watch again."""


class StreamGapError(StreamLagError):
    """A watch lost its connection and subscribed again: events published in between were not delivered (Redis
    pub/sub and PostgreSQL ``NOTIFY`` keep nothing). Raised once, by the first read after the watch is subscribed
    again, and only by a store made with ``report_watch_gaps=True``; the watch goes on delivering later events.
    Re-read the state the watch follows, then read on (the same watch)."""


def now_ms() -> int:
    """Epoch milliseconds, the wrapper's ``timestamp``.

    Example:
        >>> before = now_ms()
        >>> before <= make_event("s", "g", "i", "create", {})["timestamp"] <= now_ms()
        True
    """
    return time.time_ns() // 1_000_000


def make_event(
    stream_name: str, group_id: str, item_id: str | None, kind: str, data: Any, *, timestamp: int | None = None
) -> StreamEvent:
    """A ``create`` / ``update`` / ``delete`` event wrapper.

    Example:
        >>> make_event("s", "g", "i", "delete", 1, timestamp=0)["event"]
        {'type': 'delete', 'data': 1}
    """
    return _wrap(stream_name, group_id, item_id, {"type": kind, "data": data}, timestamp)


def custom_event(
    stream_name: str, group_id: str, item_id: str | None, type: str, data: Any, *, timestamp: int | None = None
) -> StreamEvent:
    """The wrapper of a ``stream::send`` custom event: ``event = {"type": "event", "event": {type, data}}``.

    Example:
        >>> custom_event("s", "g", None, "ping", {}, timestamp=0)["event"]
        {'type': 'event', 'event': {'type': 'ping', 'data': {}}}
    """
    return _wrap(stream_name, group_id, item_id, {"type": "event", "event": {"type": type, "data": data}}, timestamp)


def _wrap(stream_name: str, group_id: str, item_id: str | None, event: Any, timestamp: int | None) -> StreamEvent:
    return {
        "type": "stream",
        "timestamp": now_ms() if timestamp is None else timestamp,
        "streamName": stream_name,
        "groupId": group_id,
        "id": item_id,
        "event": event,
    }


def event_json_parts(stream_name: str, group_id: str, item_id: str | None) -> tuple[str, str]:
    """Text before and after ``<kind>","data":<json>`` of a change event, for servers that pick the kind.

    Lets a Redis script publish ``head + kind + '","data":' + value + tail`` without re-encoding the value.

    Example:
        >>> head, tail = event_json_parts("s", "g", "i")
        >>> head.endswith('"event":{"type":"'), tail
        (True, '}}')
    """
    head = dumps(
        {"type": "stream", "timestamp": now_ms(), "streamName": stream_name, "groupId": group_id, "id": item_id}
    )
    return head[:-1] + ',"event":{"type":"', "}}"


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a watcher wants; ``None`` (or ``""``, as in production trigger configs) means any.

    Example:
        >>> EventFilter(group_id="g").matches(make_event("s", "h", None, "create", 1))
        False
    """

    stream_name: str | None = None
    group_id: str | None = None
    item_id: str | None = None

    def matches(self, event: StreamEvent) -> bool:
        """Whether ``event`` passes every set field.

        Example:
            >>> wanted = EventFilter(stream_name="todos", item_id="")  # "" is any item, as in a trigger config
            >>> wanted.matches(make_event("todos", "g", "7", "create", 1)), wanted.matches(make_event("x", "g", "7",
            ...                                                                                       "create", 1))
            (True, False)
        """
        if self.stream_name and event.get("streamName") != self.stream_name:
            return False
        if self.group_id and event.get("groupId") != self.group_id:
            return False
        return not self.item_id or event.get("id") == self.item_id


class Subscription(Protocol):
    """A live source of events behind one :class:`Watch` (a queue, a Redis pub/sub, a LISTEN connection)."""

    async def get(self) -> StreamEvent:
        """The next event (waits); ``StopAsyncIteration`` once the subscription is closed.

        Example:
            >>> import asyncio
            >>> async def demo() -> Any:
            ...     hub = EventHub()
            ...     sub = hub.subscribe()
            ...     hub.publish(make_event("s", "g", "i", "create", 1))
            ...     return (await sub.get())["event"]
            >>> asyncio.run(demo())
            {'type': 'create', 'data': 1}
        """
        ...

    async def close(self) -> None:
        """Stop receiving and end a ``get`` waiting meanwhile; idempotent.

        Example:
            >>> import asyncio
            >>> async def demo() -> str:
            ...     sub = EventHub().subscribe()
            ...     waiting = asyncio.ensure_future(sub.get())
            ...     await asyncio.sleep(0)  # let get() start waiting
            ...     await sub.close()
            ...     await asyncio.wait([waiting])
            ...     return type(waiting.exception()).__name__
            >>> asyncio.run(demo())
            'StopAsyncIteration'
        """
        ...


class _QueueSubscription:
    def __init__(self, hub: EventHub, maxsize: int, event_filter: EventFilter | None = None) -> None:
        self._hub = hub
        self.filter = event_filter  # checked by the hub as it publishes: what it refuses is neither queued nor copied
        # None wakes the reader: after a lag, or a close (a reader waiting on a closed watch would wait for good)
        self.queue: asyncio.Queue[StreamEvent | None] = asyncio.Queue(maxsize)
        self.lagged = False
        self.closed = False

    def offer(self, event: StreamEvent) -> None:
        if self.lagged or self.closed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            # no wake-up: a full queue has no reader waiting, and making room for one would drop the oldest event,
            # which the reader then never saw although the lag came after it
            self.lagged = True

    async def get(self) -> StreamEvent:
        if self.closed:
            raise StopAsyncIteration
        # once reported, a lag is reported again on every read: the subscription drops every later event, and a
        # read that waited instead would wait for good
        if self.lagged and self.queue.empty():
            raise lag_error(self.queue.maxsize)
        event = await self.queue.get()
        if event is None:
            if self.closed:
                raise StopAsyncIteration
            raise lag_error(self.queue.maxsize)
        return event

    async def close(self) -> None:
        self._hub.discard(self)
        if not self.closed:
            self.closed = True
            wake(self.queue)


def lag_error(maxsize: int) -> StreamLagError:
    """The error of a watcher that fell more than ``maxsize`` events behind.

    Example:
        >>> str(lag_error(3))
        'watcher fell more than 3 events behind; events were dropped (re-read state and watch again)'
    """
    return StreamLagError(f"watcher fell more than {maxsize} events behind; events were dropped (re-read state and "
                          "watch again)")


async def retry_until_closed(start: Callable[[], Awaitable[object]], closing: asyncio.Event,
                             failures: tuple[type[BaseException], ...],
                             failed: Callable[[BaseException], None]) -> bool:
    """Await ``start()`` until it succeeds (``True``), pausing 0.05 s doubling to 2 s after each of ``failures``
    (told to ``failed``); ``False`` once ``closing`` is set, which also ends a pause at once.

    Example:
        >>> async def demo():
        ...     tries = []
        ...     async def start():
        ...         tries.append(1)
        ...         if len(tries) < 3:
        ...             raise OSError("down")
        ...     return await retry_until_closed(start, asyncio.Event(), (OSError,), print), len(tries)
        >>> asyncio.run(demo())
        down
        down
        (True, 3)
    """
    delay = 0.05
    while not closing.is_set():
        try:
            await start()
        except failures as exc:
            failed(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closing.wait(), delay)
            delay = min(delay * 2, 2.0)
            continue
        return True
    return False


def wake(queue: asyncio.Queue[Any]) -> None:
    """Put a ``None`` wake-up in ``queue``, making room for it when full, so a reader waiting on it returns now.

    Example:
        >>> q: asyncio.Queue[int | None] = asyncio.Queue(1)
        >>> q.put_nowait(1); wake(q); q.get_nowait() is None
        True
    """
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(None)


def check_queue_size(size: object, what: str) -> int:
    """``size`` if it is a positive integer (a bool is not); else a ``ValueError`` naming ``what``. A watcher's
    queue of size 0 or less would be unbounded (``asyncio.Queue``), never reporting a lag.

    Example:
        >>> check_queue_size(5, "RedisStream: watch_queue_size")
        5
        >>> try:
        ...     check_queue_size(0, "RedisStream: watch_queue_size")
        ... except ValueError as exc:
        ...     print(exc)
        RedisStream: watch_queue_size must be a positive integer, got 0
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{what} must be a positive integer, got {size!r}")
    return size


class EventHub:
    """In-process fan-out of events to watchers, each with a bounded queue (``maxsize`` events, at least 1).

    Example:
        >>> hub = EventHub()
        >>> hub.publish(make_event("s", "g", None, "create", 1))  # nobody listening: dropped
    """

    def __init__(self, maxsize: int = 10_000) -> None:
        self._maxsize = check_queue_size(maxsize, "EventHub: maxsize")
        self._subscribers: set[_QueueSubscription] = set()

    @property
    def active(self) -> bool:
        """Whether anybody is watching (lets stores skip building events nobody reads)."""
        return bool(self._subscribers)

    def subscribe(self, event_filter: EventFilter | None = None) -> Subscription:
        """A new subscription that sees every event published from now on (that ``event_filter`` matches, when given:
        the others are neither queued for it nor copied; a marker that is not a plain dict, such as a store's gap,
        reaches every subscription).

        Example:
            >>> import asyncio
            >>> async def demo() -> Any:
            ...     hub = EventHub()
            ...     hub.publish(make_event("s", "g", "i", "create", 1))  # before: not seen
            ...     sub = hub.subscribe()
            ...     hub.publish(make_event("s", "g", "i", "update", 2))
            ...     return (await sub.get())["event"], hub.active
            >>> asyncio.run(demo())
            ({'type': 'update', 'data': 2}, True)
        """
        sub = _QueueSubscription(self, self._maxsize, event_filter)
        self._subscribers.add(sub)
        return sub

    def discard(self, sub: _QueueSubscription) -> None:
        """Forget ``sub`` (called by its ``close``).

        Example:
            >>> import asyncio
            >>> async def demo() -> bool:
            ...     hub = EventHub()
            ...     await hub.subscribe().close()  # close() discards it
            ...     return hub.active
            >>> asyncio.run(demo())
            False
        """
        self._subscribers.discard(sub)

    def publish(self, event: StreamEvent, text: str | None = None) -> None:
        """Queue ``event`` for every subscriber; never blocks.

        Each subscriber whose filter takes it gets its own copy: the first ``event`` itself, which is the hub's from
        here on (build it fresh, never hand in one you keep), the others one decoded from ``text``, its JSON (encoded
        here when not given). Why: every watcher got the one dict, and a watcher that changed an event it got changed
        it for the others (Redis and PostgreSQL watchers each decode their own). Filtered here, an event costs a copy
        only for the watchers that read it (copied for every watcher, 1,000 watches of one group each made a write cost
        0.38 s instead of 1 ms).

        Example:
            >>> import asyncio
            >>> async def demo() -> Any:
            ...     hub = EventHub()
            ...     first, second = hub.subscribe(), hub.subscribe()
            ...     hub.publish(make_event("s", "g", "i", "delete", 3))
            ...     return [(await sub.get())["event"]["type"] for sub in (first, second)]
            >>> asyncio.run(demo())
            ['delete', 'delete']
        """
        marker = type(event) is not dict  # a subclass is a store's own marker (a gap): every watch's, shared
        first = True
        for sub in tuple(self._subscribers):
            if sub.lagged or sub.closed or (not marker and sub.filter is not None and not sub.filter.matches(event)):
                continue
            if first or marker:
                first = False
                sub.offer(event)
                continue
            if text is None:
                text = dumps(event)
            sub.offer(loads(text))


class Watch:
    """Change events of one backend as an async iterator; also an async context manager.

    Entering the context (or the first ``__anext__``) subscribes, so with ``async with`` no event written after
    entry is missed. Leaving the context (or ``aclose()``) unsubscribes.

    Example:
        >>> import asyncio
        >>> from iii_streams import MemoryStream
        >>> async def demo():
        ...     async with MemoryStream() as s, s.watch(stream_name="todos") as events:
        ...         await s.send("todos", "g", None, "hello", {"x": 1})
        ...         return (await anext(events))["event"]
        >>> asyncio.run(demo())
        {'type': 'event', 'event': {'type': 'hello', 'data': {'x': 1}}}
    """

    def __init__(self, opener: Callable[[], Awaitable[Subscription]], event_filter: EventFilter) -> None:
        self._opener = opener
        self._filter = event_filter
        self._sub: Subscription | None = None
        self._closed = False

    async def open(self) -> Watch:
        """Subscribe now (idempotent): events written from here on are delivered, even before the first read.

        Example:
            >>> import asyncio
            >>> from iii.stream import StreamSetInput
            >>> from iii_streams import MemoryStream
            >>> async def demo() -> Any:
            ...     store = MemoryStream()
            ...     events = await store.watch("s").open()
            ...     await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
            ...     try:
            ...         return (await anext(events))["event"]
            ...     finally:
            ...         await events.aclose()
            >>> asyncio.run(demo())
            {'type': 'create', 'data': 1}
        """
        if self._closed:
            raise RuntimeError("this watch() was closed; call watch() again")
        if self._sub is None:
            sub = await self._opener()
            if self._closed or self._sub is not None:
                # closed, or opened by another task, while this one subscribed: nobody else would close it (a
                # PostgreSQL watch leaked its LISTEN connection so)
                await sub.close()
            else:
                self._sub = sub
        return self

    async def aclose(self) -> None:
        """Unsubscribe; iteration then stops.

        Example:
            >>> import asyncio
            >>> from iii_streams import MemoryStream
            >>> async def demo() -> list[StreamEvent]:
            ...     events = await MemoryStream().watch().open()
            ...     await events.aclose()
            ...     return [event async for event in events]
            >>> asyncio.run(demo())
            []
        """
        self._closed = True
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.close()

    async def __aenter__(self) -> Watch:
        return await self.open()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self

    async def __anext__(self) -> StreamEvent:
        if self._closed:
            raise StopAsyncIteration
        await self.open()
        sub = self._sub
        if sub is None:  # closed while it subscribed
            raise StopAsyncIteration
        while True:
            event = await sub.get()
            if self._filter.matches(event):
                return event
