"""Redis watchers opened, read, cancelled and closed in every order, with the server ending their pub/sub
connections (``CLIENT KILL``) meanwhile: afterwards no subscription is left (``PUBSUB NUMSUB``, ``CLIENT LIST``)
and no task still runs.

Before: a reader cancelled while its watcher re-subscribed after a lost connection often went on running (in 6
to 23 loop turns after the kill, most runs): redis-py reconnects a pub/sub's connection itself when a read fails
(with no retries configured too), and Python 3.11's ``asyncio.wait_for`` inside that reconnect returns normally
when a cancellation arrives as the awaited send completes. The cancellation was lost, the connection subscribed
again, and the "cancelled" reader waited on it for good. Only this test's own connections are killed (they carry
its ``client_name``): the Redis server is shared.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from iii.stream import StreamSetInput
from iii_streams import RedisStream, StreamLagError
from iii_streams.events import Watch
from iii_streams.redis import KeyLayout, StreamGapError
from tests.services import require_redis

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]

ROUNDS = 100  # of 4 concurrent scenarios each: about 1.5 s here (the old code failed within 40, every run)
KINDS = ("cancel_open", "get_cancel", "get_close", "kill_cancel", "kill_close", "kill_get_close")


class _Harness:
    def __init__(self, store: RedisStream, admin: aioredis.Redis, name: str, channel: str) -> None:
        self.store, self.admin, self.name, self.channel = store, admin, name, channel
        self.problems: list[str] = []

    async def ours(self) -> list[dict[str, Any]]:
        return [c for c in await self.admin.client_list() if c.get("name") == self.name]

    async def subscribed(self) -> int:
        return sum(1 for c in await self.ours() if str(c.get("sub", "0")) != "0")

    async def numsub(self) -> int:
        return int((await self.admin.pubsub_numsub(self.channel))[0][1])

    async def kill_subscribers(self) -> None:
        for conn in await self.ours():
            if str(conn.get("sub", "0")) != "0":
                await self.admin.client_kill_filter(_id=str(conn["id"]))

    async def ended(self, task: asyncio.Future[Any], what: str) -> None:
        """``task`` must end within 1 s; a reader that does not is recorded (and ended) rather than waited on."""
        done, _ = await asyncio.wait({task}, timeout=1)
        if not done:
            self.problems.append(f"{what}: still running 1 s later")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def scenario(self, kind: str, turns: int) -> None:
        watch: Watch = self.store.watch()
        if kind == "cancel_open":
            opening = asyncio.ensure_future(watch.open())
            await _turns(turns)
            opening.cancel()
            await self.ended(opening, f"{kind}/{turns}: the cancelled open()")
            await watch.aclose()
            return
        await watch.open()
        reader = asyncio.ensure_future(anext(watch))
        await _turns(1)
        if kind.startswith("kill"):
            await self.kill_subscribers()  # every watch's of this store: the others reconnect meanwhile
        await _turns(turns)
        if kind.endswith("cancel"):
            reader.cancel()
            await self.ended(reader, f"{kind}/{turns}: the cancelled reader")
            await watch.aclose()
        else:
            await watch.aclose()
            await self.ended(reader, f"{kind}/{turns}: the reader of a closed watch")
            if reader.done() and not reader.cancelled() and not isinstance(reader.exception(), StopAsyncIteration):
                self.problems.append(f"{kind}/{turns}: the reader of a closed watch raised {reader.exception()!r}")


async def _turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


@pytest.fixture
async def harness() -> AsyncIterator[_Harness]:
    url = require_redis()
    name = f"hrwlc{uuid.uuid4().hex[:10]}"
    admin = aioredis.Redis.from_url(url)
    store = RedisStream.from_url(url, layout=KeyLayout(name), channel=name, client_name=name)
    try:
        yield _Harness(store, admin, name, name)
    finally:
        await store.aclose()
        await admin.aclose()


async def test_watchers_cancelled_and_closed_in_any_order_leave_no_subscription_or_task(harness: _Harness) -> None:
    before = asyncio.all_tasks()
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for _ in range(ROUNDS):
        if harness.problems:
            break
        picks = [(rng.choice(KINDS), rng.randrange(30)) for _ in range(4)]
        await asyncio.gather(*(harness.scenario(kind, turns) for kind, turns in picks))
    assert harness.problems == [], f"seed {seed}"
    left = asyncio.all_tasks() - before
    assert not left, f"seed {seed}: tasks still running: {left}"
    # the server drops a killed or closed client's subscriptions once it reads the hang-up: soon, not at once
    assert await _settles(harness.numsub) == 0, f"seed {seed}: PUBSUB NUMSUB of the watch channel"
    assert await _settles(harness.subscribed) == 0, f"seed {seed}: our connections still subscribed"


def _missing(read: Callable[[], Awaitable[int]]) -> Callable[[], Awaitable[int]]:
    """``1 - read()``: settles (is 0) once one subscriber is there."""
    async def missing() -> int:
        return 1 - await read()
    return missing


async def _settles(read: Callable[[], Awaitable[int]], within: float = 2.0) -> int:
    """``read()`` once it is 0, or its last value after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (got := await read()) and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    return got


@pytest.mark.parametrize("report", [True, False])
async def test_a_watch_that_lost_its_connection_reports_the_gap_once_subscribed_again(report: bool) -> None:
    """With ``report_watch_gaps=True`` the first read after ``CLIENT KILL`` of the watch's connection raises
    StreamGapError (a StreamLagError), and only once the watch is subscribed again, so state read after it misses
    nothing later; the watch then delivers later events. Without it the gap is only logged, as before."""
    url = require_redis()
    name = f"hrwgap{uuid.uuid4().hex[:10]}"
    admin = aioredis.Redis.from_url(url)
    store = RedisStream.from_url(url, layout=KeyLayout(name), channel=name, client_name=name,
                                 report_watch_gaps=report)
    harness = _Harness(store, admin, name, name)
    try:
        async with store.watch(stream_name="s") as events:
            reader = asyncio.ensure_future(anext(events))
            await _turns(5)  # into its read
            await harness.kill_subscribers()
            if report:
                with pytest.raises(StreamGapError) as caught:
                    await asyncio.wait_for(reader, 5)
                assert isinstance(caught.value, StreamLagError)
                assert await harness.numsub() == 1  # subscribed again before the error was raised
                reader = asyncio.ensure_future(anext(events))
            else:  # the reader re-subscribes meanwhile, silently (CLIENT KILL dropped the old one at once)
                assert await _settles(_missing(harness.numsub)) == 0, "the watch did not subscribe again"
                assert not reader.done()
            await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="after", data=1))
            event = await asyncio.wait_for(reader, 5)
            assert event["id"] == "after"
    finally:
        await store.aclose()
        await admin.aclose()


def test_report_watch_gaps_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match="report_watch_gaps must be True or False, got 'yes'"):
        RedisStream.from_url("redis://127.0.0.1:6379/0", report_watch_gaps="yes")
