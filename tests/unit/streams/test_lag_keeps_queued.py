"""A watcher whose queue fills reads every event queued before the lag, then ``StreamLagError``. Before, the
in-memory hub (used by the memory store and SQLite) made room for its wake-up by dropping the oldest queued event,
which the watcher then never saw although the lag was reported after it."""

from __future__ import annotations

import asyncio

import pytest

from iii.stream import StreamSetInput
from iii_streams import MemoryStream, StreamLagError


async def test_a_full_queue_keeps_its_events_and_reports_the_lag_after_them() -> None:
    store = MemoryStream(watch_queue_size=3)
    watch = store.watch(stream_name="s")
    await watch.open()
    try:
        for n in range(6):
            await store.set(StreamSetInput(stream_name="s", group_id="g", item_id=str(n), data=n))
        seen = [(await asyncio.wait_for(anext(watch), 2))["id"] for _ in range(3)]
        assert seen == ["0", "1", "2"]
        with pytest.raises(StreamLagError, match="more than 3 events"):
            await asyncio.wait_for(anext(watch), 2)
        with pytest.raises(StreamLagError):  # reported again on every later read, never a wait for good
            await asyncio.wait_for(anext(watch), 2)
    finally:
        await watch.aclose()
