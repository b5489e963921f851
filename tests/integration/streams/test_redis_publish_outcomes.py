"""RedisStream.publish tells each caller its own outcome.

An event over the server's ``proto-max-bulk-len`` goes alone and is refused as not published (``applied=False``);
the events published with it are delivered once and answered as such. Before: Redis closed the connection and every
publish of the pipelined batch failed "Connection reset by peer" (``applied=None``), though the watcher had received
the 50 before the big one (a caller retrying duplicated them). And a publish that timed out still queued (never sent)
said ``applied=None``; it says ``False`` (withdrawn).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from iii_streams import RedisStream
from iii_streams.errors import StreamBackendError, StreamTimeoutError
from iii_streams.events import make_event
from iii_streams.redis import KeyLayout
from tests.integration.streams.private_redis import PrivateRedis
from tests.polling import until
from tests.services import require_redis

pytestmark = pytest.mark.redis


async def test_an_oversized_event_fails_alone(tmp_path: Path) -> None:
    with PrivateRedis(tmp_path) as server:
        server._cmd += ["--proto-max-bulk-len", "1mb"]
        await server.start()
        async with RedisStream.from_url(server.url, timeout=10) as store, store.watch("s") as events:
            await store.publish(make_event("s", "g", "i", "update", {"v": -1}))
            assert (await asyncio.wait_for(anext(events), 5))["event"]["data"] == {"v": -1}
            sent = [make_event("s", "g", "i", "update", {"v": n}) for n in range(40)]
            sent.insert(20, make_event("s", "g", "i", "update", {"v": "big", "p": "x" * 1_100_000}))
            outcomes = await asyncio.gather(*(store.publish(event) for event in sent), return_exceptions=True)
            refused = outcomes.pop(20)
            assert isinstance(refused, StreamBackendError) and refused.applied is False, refused
            assert "too large" in str(refused)
            assert outcomes == [None] * 40
            seen = [(await asyncio.wait_for(anext(events), 5))["event"]["data"]["v"] for _ in range(40)]
            assert seen == list(range(40))


async def test_a_publish_timed_out_in_the_queue_was_not_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    tag = f"pubout-{uuid.uuid4().hex[:8]}"
    async with RedisStream.from_url(require_redis(), layout=KeyLayout(prefix=f"{tag}:stream"),
                                    channel=f"{tag}::events", timeout=10) as store:
        gate = asyncio.Event()
        real = store._pipelined

        async def held(commands: Sequence[Any], progress: Any = None) -> list[Any]:
            await gate.wait()  # the first batch is held: the next publish waits in the queue past its timeout
            return await real(commands, progress)

        monkeypatch.setattr(store, "_pipelined", held)
        first = asyncio.ensure_future(store.publish(make_event("s", "g", "i", "update", 1)))
        await until(lambda: store._publishes.idle() is False and len(store._publishes) == 0)  # taken, held
        store.timeout = 0.3  # the next publish's own limit (the held batch keeps its 10 s)
        with pytest.raises(StreamTimeoutError) as queued:
            await store.publish(make_event("s", "g", "i", "update", 2))
        assert queued.value.applied is False and "not applied" in str(queued.value)
        gate.set()
        await first
