"""Checks of bridged stream items whose change events came close together, so socket clients end on the stored value.

Each engine bridged to a remote publishes a change's event after the remote applied the change. Writes of one item
from two such engines are applied in one order and their events may arrive in the other: a socket client's last
event then said ``b10-5`` while the remote held ``a10-4``, with nothing to tell it (19 of 134 rounds of six
concurrent sets from two fronts; 0 with one). A single event cannot be out of order with another; two of one item
within :data:`CHECK_WINDOW_S` can. So after such a pair (and after every later event of the burst) the item is read
back from the remote, once the burst has been quiet for :data:`CHECK_AFTER_S`; when the value read is not the one the
last event carried, an ``update`` (or ``create``, or ``delete``) event with the stored value goes to the socket
clients. A read during which another event of the item arrived proves nothing (that event may be newer than the
read): the item is read again instead. Values are compared as JSON (``true`` is not ``1``). A get answers ``null``
both for no item and for a stored ``null``: after a last event of ``null`` or a delete it is taken as agreeing; after
one of another value, for a delete that came first (a ``null`` stored then is told as a delete).

Events of this engine's own writes (:meth:`EventChecks.published`) and of other engines' within
:data:`MIXED_WINDOW_S` are checked too (a slow link delays one engine's events by seconds).

Bounded: at most :data:`MAX_TRACKED` items are remembered (each until :data:`MIXED_WINDOW_S` after its last event;
past it new items are not), and at most :data:`MAX_READS` reads run at once (the others
wait their turn). A read that fails is logged at debug level and not retried: the next event of the item brings
another check. After :meth:`EventChecks.close` nothing is checked.

Example:
    >>> import asyncio
    >>> from iii_streams.events import make_event
    >>> async def demo() -> list[object]:
    ...     told: list[object] = []
    ...     async def read(key: tuple[str, str, str]) -> object:
    ...         return "a"  # what the remote holds
    ...     check = EventChecks(read, told.append)
    ...     check.note(make_event("s", "g", "x", "update", "a"))
    ...     check.note(make_event("s", "g", "x", "update", "b"))  # came last, though "a" was stored last
    ...     await asyncio.sleep(CHECK_AFTER_S * 4)
    ...     await check.close()
    ...     return [event["event"] for event in told]
    >>> asyncio.run(demo())
    [{'type': 'update', 'data': 'a'}]
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from iii_streams.events import StreamEvent, make_event

__all__ = ["CHECK_AFTER_S", "CHECK_WINDOW_S", "MAX_READS", "MAX_TRACKED", "MIXED_WINDOW_S", "EventChecks"]

log = logging.getLogger(__name__)

CHECK_WINDOW_S: Final = 1.0
"""Two events of one item this close together may be out of order: the item is checked."""
CHECK_AFTER_S: Final = 0.25
"""How long a burst of an item's events must be quiet before the item is read back: an item written more often is
read once per pause, at most 4 times a second (at 50 ms an item written every 100 ms was read once per write and
front, doubling the remote's load for it)."""
MIXED_WINDOW_S: Final = 10.0
"""An event of this engine's own write and one of another engine's this close together are checked too: a slow link
from one engine to the remote delays its events past :data:`CHECK_WINDOW_S` (1.05 s behind the other's left both
engines' clients stale). Two events of other engines' writes (or two of its own) are checked within
:data:`CHECK_WINDOW_S` only, so an item written by one engine every few seconds costs no reads elsewhere."""
MAX_TRACKED: Final = 16_384
"""Items whose last event is remembered at once; past it a new item is not (the oldest making way, a burst of more
items than that changed in the same order twice left every one unchecked: each pushed out the next before its
second event; at 1,024 a burst of 1,500 did)."""
MAX_READS: Final = 8
"""Reads of the remote for checks running at once."""

Key = tuple[str, str, str]
_GONE: Final = object()  # the last event was a delete
_CHANGES: Final = frozenset(("create", "update", "delete"))


class _Item:
    __slots__ = ("again", "at", "checking", "own", "timer", "value")

    def __init__(self, at: float, value: Any, own: bool) -> None:
        self.at = at  # the loop's time of the item's last event
        self.value = value  # what that event left the item holding (_GONE: deleted)
        self.own = own  # that event was of this engine's own write (published by it)
        self.timer: asyncio.TimerHandle | None = None  # the check planned
        self.checking = False  # a read is under way
        self.again = False  # an event came during that read


class EventChecks:
    """The checks of one bridged store (see the module docstring). Loop thread only.

    ``read(key)`` reads ``(stream, group, item)`` from the remote (``None``: no such item); ``publish(event)`` tells
    the socket clients."""

    def __init__(self, read: Callable[[Key], Awaitable[Any]], publish: Callable[[StreamEvent], object]) -> None:
        self._read = read
        self._publish = publish
        self._items: dict[Key, _Item] = {}  # oldest event first
        self._reads = asyncio.Semaphore(MAX_READS)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._own: dict[tuple[Any, ...], float] = {}  # events this engine published, until they come back

    def published(self, event: StreamEvent) -> None:
        """``event`` (of this engine's own write) was published: when it comes back it is told from another
        engine's."""
        own = self._own
        now = asyncio.get_running_loop().time()
        while own and (len(own) >= MAX_TRACKED or now - next(iter(own.values())) > MIXED_WINDOW_S):
            del own[next(iter(own))]
        own[_signature(event)] = now

    def note(self, event: StreamEvent) -> None:
        """A change event delivered to the socket clients: check its item if another event of it came lately."""
        inner = event.get("event")
        item_id = event.get("id")
        if (self._closed or not isinstance(inner, dict) or inner.get("type") not in _CHANGES
                or not isinstance(item_id, str)):
            return
        key = (event["streamName"], event["groupId"], item_id)
        loop = asyncio.get_running_loop()
        now = loop.time()
        value = _GONE if inner["type"] == "delete" else inner.get("data")
        own = self._own.pop(_signature(event), None) is not None
        item = self._items.pop(key, None)
        if item is None:
            self._forget_old(now)
            if len(self._items) < MAX_TRACKED:  # (full: the items remembered keep their place, this one is not)
                self._items[key] = _Item(now, value, own)
            return
        self._items[key] = item  # (now the newest)
        gap = now - item.at
        close = gap <= CHECK_WINDOW_S or (gap <= MIXED_WINDOW_S and own != item.own)
        item.at, item.value, item.own = now, value, own
        if item.checking:
            item.again = True
        elif close or item.timer is not None:
            if item.timer is not None:
                item.timer.cancel()  # the burst goes on: checked once it is quiet
            item.timer = loop.call_later(CHECK_AFTER_S, self._start, key)

    async def close(self) -> None:
        """Stop: cancel the planned checks and those under way; later events are not checked."""
        self._closed = True
        for item in self._items.values():
            if item.timer is not None:
                item.timer.cancel()
        self._items.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _forget_old(self, now: float) -> None:
        """Forget the items past :data:`MIXED_WINDOW_S`, and when full those past :data:`CHECK_WINDOW_S`; never one
        with a check planned or under way (forgotten mid-read, its correction could follow a newer event of the
        item, tracked anew). Oldest first, stopping at the first kept: a few steps a call (a walk past the items it
        could not forget cost 330-420 microseconds a call at 1,024)."""
        items = self._items
        while items:
            key = next(iter(items))
            item = items[key]
            gap = now - item.at
            if item.timer is not None or item.checking or (gap <= MIXED_WINDOW_S and (len(items) < MAX_TRACKED
                                                                                     or gap <= CHECK_WINDOW_S)):
                return  # (the rest are newer; when full, those past CHECK_WINDOW_S make room first)
            del items[key]

    def _start(self, key: Key) -> None:
        item = self._items.get(key)
        if item is None or self._closed:
            return
        item.timer = None
        item.checking = True
        task = asyncio.get_running_loop().create_task(self._check(key, item), name=f"check {key[2]:.100}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check(self, key: Key, item: _Item) -> None:
        try:
            while True:
                item.again = False
                async with self._reads:
                    try:
                        stored = await self._read(key)
                    except Exception as exc:  # the next event of the item brings another check
                        log.debug("bridged item %s/%s/%s not checked: %s", *key, exc)
                        return
                if not item.again:
                    break
                await asyncio.sleep(CHECK_AFTER_S)  # an event came meanwhile: it may be newer than the read
            if _same(stored, None if item.value is _GONE else item.value):
                return  # (None is both no item and a stored null: a get cannot tell them apart)
            if stored is None:
                event = make_event(*key, "delete", item.value)
                item.value = _GONE
            else:
                event = make_event(*key, "create" if item.value is _GONE else "update", stored)
                item.value = stored
            self._publish(event)
        finally:
            item.checking = False


def _same(a: Any, b: Any) -> bool:
    """Whether two decoded JSON values are the same JSON: ``==`` with types, since ``True == 1`` and ``{"a": 1} ==
    {"a": True}`` in Python (such a stale value was never corrected); key order does not count."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return a.keys() == b.keys() and all(_same(value, b[key]) for key, value in a.items())
    if type(a) is list:
        return len(a) == len(b) and all(map(_same, a, b))
    return bool(a == b)


def _signature(event: StreamEvent) -> tuple[Any, ...]:
    """What tells an event from another as it comes back from the remote: its item, kind and time stamp (the
    publishing engine's milliseconds)."""
    inner = event.get("event")
    kind = inner.get("type") if isinstance(inner, dict) else None
    return event.get("streamName"), event.get("groupId"), event.get("id"), event.get("timestamp"), kind
