"""``watch_queue_size`` must be a positive integer on every store.

Before: MemoryStream and SQLStream took 0 (or -1, True, 2.5) as given, and ``asyncio.Queue(0)`` is unbounded: a
slow watcher buffered without limit and never got its StreamLagError. RedisStream already refused them; the three
now share one check and one message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from iii.stream import StreamSetInput
from iii_streams import MemoryStream, RedisStream, SQLStream, StreamLagError
from iii_streams.events import EventHub

STORES: dict[str, Callable[..., Any]] = {
    "MemoryStream": lambda **o: MemoryStream(**o),
    "SQLStream": lambda **o: SQLStream.from_url("sqlite+aiosqlite://", **o),
    # the client connects on first use: building the store needs no server
    "RedisStream": lambda **o: RedisStream.from_url("redis://127.0.0.1:6379/0", **o),
}


@pytest.mark.parametrize("size", [0, -1, True, False, 2.5, "10", None])
@pytest.mark.parametrize("store", list(STORES))
def test_a_size_that_is_not_a_positive_integer_is_refused(store: str, size: Any) -> None:
    with pytest.raises(ValueError) as refused:
        STORES[store](watch_queue_size=size)
    assert str(refused.value) == f"{store}: watch_queue_size must be a positive integer, got {size!r}"


def test_the_hub_refuses_an_unbounded_queue_too() -> None:
    with pytest.raises(ValueError, match="EventHub: maxsize must be a positive integer, got 0"):
        EventHub(0)


@pytest.mark.parametrize("store", ["MemoryStream", "SQLStream"])
async def test_a_queue_of_one_bounds_the_watcher(store: str) -> None:
    """The smallest valid size works as a bound: a second unread event is the lag."""
    async with STORES[store](watch_queue_size=1) as stream, stream.watch(stream_name="s") as watch:
        for n in range(2):
            await stream.set(StreamSetInput(stream_name="s", group_id="g", item_id=str(n), data=n))
        assert (await anext(watch))["id"] == "0"
        with pytest.raises(StreamLagError, match="more than 1 events"):
            await anext(watch)
