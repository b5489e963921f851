"""The in-process event hub (memory and SQLite stores, the Bridge): every watch whose filter takes an event gets its
own copy, and a watch whose filter refuses it gets nothing, neither queued nor copied (copying for every watch before
its filter ran made 1,000 watches of one group each cost 0.38 s per write instead of 1 ms)."""

from __future__ import annotations

from typing import Any

import pytest

from iii_streams import MemoryStream
from iii_streams.events import EventFilter, EventHub, make_event


class _Gap(dict[str, Any]):
    """A store's marker: not an event, for every watch."""


async def test_only_the_watches_an_event_is_for_get_it_each_their_own() -> None:
    hub = EventHub()
    g1, g2, every = (hub.subscribe(EventFilter(group_id="g1")), hub.subscribe(EventFilter(group_id="g2")),
                     hub.subscribe())
    event = make_event("s", "g1", "i", "create", {"n": [1]}, timestamp=0)
    hub.publish(event)
    queues: list[Any] = [sub.queue for sub in (g1, g2, every)]  # type: ignore[attr-defined]
    assert [q.qsize() for q in queues] == [1, 0, 1]  # before: queued for g2 too, and copied for it
    first, other = await g1.get(), await every.get()
    assert first == other == event and first is not other
    first["event"]["data"]["n"].append(2)
    assert other["event"]["data"] == {"n": [1]}


async def test_a_marker_reaches_every_watch_as_it_is() -> None:
    hub = EventHub()
    subs = [hub.subscribe(EventFilter(group_id="g1")), hub.subscribe()]
    gap = _Gap()
    hub.publish(gap)
    got = [await sub.get() for sub in subs]
    assert all(one is gap for one in got)


async def test_the_memory_store_refuses_an_event_that_is_not_json_watched_or_not() -> None:
    store = MemoryStream()
    with pytest.raises(TypeError):  # (the SQL store refuses it the same way)
        await store.publish({"type": "stream", "data": {1, 2}})
