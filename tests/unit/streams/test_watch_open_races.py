"""``Watch.open`` racing ``aclose`` or a second ``open``: every subscription made is closed by somebody. Before, a
watch closed while another task was still subscribing stored the new subscription after the close, and nobody
closed it (on PostgreSQL, a LISTEN connection held for good); two opens at once kept the later subscription and
leaked the earlier one."""

from __future__ import annotations

import asyncio

import pytest

from iii_streams.events import EventFilter, StreamEvent, Watch, make_event


class FakeSubscription:
    def __init__(self) -> None:
        self.closed = False

    async def get(self) -> StreamEvent:
        if self.closed:
            raise StopAsyncIteration
        return make_event("s", "g", "i", "create", 1)

    async def close(self) -> None:
        self.closed = True


class SlowOpener:
    """Subscribes when released; remembers every subscription it made."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.made: list[FakeSubscription] = []

    async def __call__(self) -> FakeSubscription:
        await self.release.wait()
        sub = FakeSubscription()
        self.made.append(sub)
        return sub


async def test_a_watch_closed_while_it_subscribes_closes_that_subscription() -> None:
    opener = SlowOpener()
    watch = Watch(opener, EventFilter())
    reading = asyncio.create_task(anext(watch))
    await asyncio.sleep(0)  # the read is now inside open(), waiting for the opener
    await watch.aclose()
    opener.release.set()
    with pytest.raises(StopAsyncIteration):
        await reading
    assert [sub.closed for sub in opener.made] == [True]


async def test_two_opens_at_once_keep_one_subscription_and_close_the_other() -> None:
    opener = SlowOpener()
    watch = Watch(opener, EventFilter())
    both = asyncio.gather(watch.open(), watch.open())
    await asyncio.sleep(0)
    opener.release.set()
    await both
    assert sorted(sub.closed for sub in opener.made) == [False, True]
    assert (await anext(watch))["id"] == "i"  # the kept one serves the reads
    await watch.aclose()
    assert all(sub.closed for sub in opener.made)
