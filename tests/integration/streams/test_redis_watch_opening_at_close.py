"""A watch opening while its ``RedisStream`` closes gets ``StreamClosedError`` wherever the close cuts it, as the
store's docstring promises, on a real Redis. Before: at about two cut points in three it got
``StreamUnavailableError: … Redis unreachable: Connection closed by server.`` (or "Error UNKNOWN while writing to
socket"), which reads as a server fault."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from iii_streams import RedisStream
from iii_streams.redis import KeyLayout
from tests.services import require_redis

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]


async def test_a_watch_cut_by_the_close_is_told_the_store_closed() -> None:
    layout = KeyLayout(f"watch-at-close-{uuid.uuid4().hex[:8]}")  # a private namespace on the shared Redis
    outcomes: dict[str, list[int]] = {}
    for steps in range(25):
        store = RedisStream.from_url(require_redis(), layout=layout, channel=layout.prefix)
        opening = asyncio.ensure_future(store.watch("s").open())
        for _ in range(steps):
            await asyncio.sleep(0)  # one loop step: the cut point, not a wait for anything
        closing = asyncio.ensure_future(store.aclose())
        opened, _ = await asyncio.gather(opening, closing, return_exceptions=True)
        outcome = "opened" if not isinstance(opened, BaseException) else type(opened).__name__
        outcomes.setdefault(outcome, []).append(steps)
    assert set(outcomes) <= {"StreamClosedError", "opened"}, outcomes
    assert "StreamClosedError" in outcomes
