"""Checks of bridged stream items whose change events came close together, so socket clients end on the stored value.

Each engine bridged to a remote publishes a change's event after the remote applied the change. Writes of one item
from two such engines are applied in one order and their events may arrive in the other: a socket client's last
event then said ``b10-5`` while the remote held ``a10-4``, with nothing to tell it (19 of 134 rounds of six
concurrent sets from two fronts; 0 with one). A single event cannot be out of order with another; two of one item
within :data:`CHECK_WINDOW_S` can. So after such a pair (and after every later event of the burst) the item is read
back from the remote, once the burst has been quiet for :data:`CHECK_AFTER_S`; when the value read is not the one the
last event carried, an ``update`` (or ``create``, or ``delete``) event with the stored value goes to the socket
clients. A read during which another event of the item arrived proves nothing (that event may be newer than the
read): the item is read again instead.

Bounded: at most :data:`MAX_TRACKED` items are remembered (each until :data:`CHECK_WINDOW_S` after its last event;
the oldest give way), and at most :data:`MAX_READS` reads run at once (the others wait their turn). A read that
fails is logged at debug level and not retried: the next event of the item brings another check.

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

__all__ = ["CHECK_AFTER_S", "CHECK_WINDOW_S", "MAX_READS", "MAX_TRACKED", "EventChecks"]

log = logging.getLogger(__name__)

CHECK_WINDOW_S: Final = 2.0
"""Two events of one item this close together may be out of order: the item is checked."""
CHECK_AFTER_S: Final = 0.05
"""How long a burst of an item's events must be quiet before the item is read back."""
MAX_TRACKED: Final = 1024
"""Items whose last event is remembered at once."""
MAX_READS: Final = 8
"""Reads of the remote for checks running at once."""

Key = tuple[str, str, str]
_GONE: Final = object()  # the last event was a delete
_CHANGES: Final = frozenset(("create", "update", "delete"))


class _Item:
    __slots__ = ("again", "at", "checking", "timer", "value")

    def __init__(self, at: float, value: Any) -> None:
        self.at = at  # the loop's time of the item's last event
        self.value = value  # what that event left the item holding (_GONE: deleted)
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

    def note(self, event: StreamEvent) -> None:
        """A change event delivered to the socket clients: check its item if another event of it came lately."""
        inner = event.get("event")
        item_id = event.get("id")
        if not isinstance(inner, dict) or inner.get("type") not in _CHANGES or not isinstance(item_id, str):
            return
        key = (event["streamName"], event["groupId"], item_id)
        loop = asyncio.get_running_loop()
        now = loop.time()
        value = _GONE if inner["type"] == "delete" else inner.get("data")
        item = self._items.pop(key, None)
        if item is None:
            self._items[key] = _Item(now, value)
            self._forget_old(now)
            return
        self._items[key] = item  # (now the newest)
        close = now - item.at <= CHECK_WINDOW_S
        item.at, item.value = now, value
        if item.checking:
            item.again = True
        elif close or item.timer is not None:
            if item.timer is not None:
                item.timer.cancel()  # the burst goes on: checked once it is quiet
            item.timer = loop.call_later(CHECK_AFTER_S, self._start, key)

    async def close(self) -> None:
        """Stop: cancel the planned checks and those under way."""
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
        """Forget the items past their window, and the oldest past :data:`MAX_TRACKED` (neither checked nor
        planned)."""
        for key in list(self._items):
            item = self._items[key]
            if len(self._items) <= MAX_TRACKED and now - item.at <= CHECK_WINDOW_S:
                return  # (the rest are newer)
            if item.timer is None and not item.checking:
                del self._items[key]

    def _start(self, key: Key) -> None:
        item = self._items.get(key)
        if item is None:
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
            if (stored is None) == (item.value is _GONE) and (stored is None or stored == item.value):
                return
            if stored is None:
                event = make_event(*key, "delete", item.value)
                item.value = _GONE
            else:
                event = make_event(*key, "create" if item.value is _GONE else "update", stored)
                item.value = stored
            self._publish(event)
        finally:
            item.checking = False
