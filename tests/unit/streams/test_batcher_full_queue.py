"""A full batcher queue refuses a request before queuing it: ``applied`` is ``False`` (it was never queued nor sent)
and the message names the queue (writes or publishes). Before: ``applied=None`` ("may have been applied") and
publishes called "writes"."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from iii_streams.batching import KeyedBatcher
from iii_streams.errors import StreamBackendError


async def test_a_full_queue_refuses_unapplied_naming_the_queue() -> None:
    gate = asyncio.Event()

    async def run(key: str, requests: Sequence[int]) -> list[int]:
        await gate.wait()
        return list(requests)

    batcher: KeyedBatcher[str, int, int] = KeyedBatcher(run, name="RedisStream publishes", max_pending=2)
    first = asyncio.ensure_future(batcher.submit("k", 0))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # taken by the runner, which waits at the gate
    waiting = [asyncio.ensure_future(batcher.submit("k", n)) for n in (1, 2)]
    await asyncio.sleep(0)
    with pytest.raises(StreamBackendError) as refused:
        await batcher.submit("k", 3)
    assert refused.value.applied is False
    assert "RedisStream publishes" in str(refused.value) and "not applied" in str(refused.value)
    assert "writes" not in str(refused.value)
    gate.set()
    assert await asyncio.gather(first, *waiting) == [0, 1, 2]
    await batcher.aclose()
