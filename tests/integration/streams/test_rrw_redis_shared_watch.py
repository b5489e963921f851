"""Redis watches under attack: many watchers, a store closed under them, Redis restarted under them, a small
health-check interval, a socket timeout, bursts after a re-subscribe, and redis-py without the internals the
one-shot pub/sub needs.

Before (R-RW): each watch held a connection of the store's pool for as long as it was open, so ``max_connections``
watchers (50 by default) left every write waiting ``pool_timeout`` (30 s) and failing with PoolExhaustedError;
``aclose()`` of the store left its watches' readers re-subscribing on the closed client for good; and with redis-py
8.0.0 (our floor) a watch's idle read ended after ``socket_timeout`` as if the connection were lost (a
StreamGapError with nothing lost). Now a store's watchers share one pub/sub connection, read by one task into
each watcher's bounded queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from iii.stream import StreamSetInput
from iii_streams import RedisStream, StreamGapError, StreamLagError, redis_internals
from iii_streams import redis as redis_module
from iii_streams.events import Watch
from iii_streams.redis import KeyLayout
from tests.integration.streams.private_redis import PrivateRedis
from tests.polling import until
from tests.services import require_redis
from tests.stall_relay import Relay

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]


def _store(url: str, name: str, **options: Any) -> RedisStream:
    return RedisStream.from_url(url, layout=KeyLayout(name), channel=name, client_name=name, **options)


async def _subscribed(redis_admin: aioredis.Redis, name: str) -> int:
    """Connections of ours (``client_name``) subscribed to something."""
    return sum(1 for c in await redis_admin.client_list() if c.get("name") == name and str(c.get("sub", "0")) != "0")


async def _set(store: RedisStream, item: str, data: Any = 1) -> None:
    await store.set(StreamSetInput(stream_name="s", group_id="g", item_id=item, data=data))


async def _ids(watch: Watch, n: int) -> list[str]:
    return [(await anext(watch))["id"] for _ in range(n)]


@pytest.fixture
def name() -> str:
    return f"rrw{uuid.uuid4().hex[:10]}"


async def test_watchers_past_max_connections_share_one_connection_and_writes_go_on(
        name: str, redis_admin: aioredis.Redis) -> None:
    """Before: the 3rd watch of a 3-connection pool held the last connection; the write after it failed with
    PoolExhaustedError after pool_timeout (and a 4th watch would have)."""
    async with _store(require_redis(), name, max_connections=3, pool_timeout=1) as store:
        watches = [store.watch(stream_name="s") for _ in range(20)]
        for watch in watches:
            await watch.open()
        await _set(store, "a")
        for watch in watches:
            assert await asyncio.wait_for(_ids(watch, 1), 5) == ["a"]
        assert await _subscribed(redis_admin, name) == 1
        for watch in watches:
            await watch.aclose()
        await until(lambda: store._subscriber is None)  # the last watcher gone: the connection goes too


async def test_500_watchers_cost_one_connection_and_each_gets_every_event(
        name: str, redis_admin: aioredis.Redis) -> None:
    async with _store(require_redis(), name) as store:
        watches = [store.watch(stream_name="s") for _ in range(500)]
        await asyncio.gather(*(watch.open() for watch in watches))
        assert await _subscribed(redis_admin, name) == 1
        for n in range(10):
            await _set(store, str(n))
        got = await asyncio.wait_for(asyncio.gather(*(_ids(watch, 10) for watch in watches)), 10)
        assert got == [[str(n) for n in range(10)]] * 500
        for watch in watches:
            await watch.aclose()


async def test_closing_the_store_ends_its_watches_reads_without_re_subscribing(
        name: str, redis_admin: aioredis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    """Before: the readers took the closed client's dropped connection for a lost one and re-subscribed (a
    connection nobody would close), reading on for good."""
    store = _store(require_redis(), name)
    watches = [store.watch() for _ in range(3)]
    for watch in watches:
        await watch.open()
    readers = [asyncio.ensure_future(anext(watch)) for watch in watches]
    await asyncio.sleep(0.05)  # into their reads (no event says so)
    with caplog.at_level(logging.INFO, logger="iii_streams.redis"):
        await store.aclose()
        done, _ = await asyncio.wait(readers, timeout=2)
    for reader in readers:
        reader.cancel()
    assert len(done) == 3, "readers of a closed store still read"
    assert all(isinstance(r.exception(), StopAsyncIteration) for r in readers)
    assert not [r.getMessage() for r in caplog.records if "subscrib" in r.getMessage()]
    assert await _subscribed(redis_admin, name) == 0
    with pytest.raises(RuntimeError, match="closed"):  # a new watch of a closed store is refused
        await store.watch().open()


async def test_a_slow_watcher_lags_alone(name: str) -> None:
    async with _store(require_redis(), name, watch_queue_size=5) as store:
        slow, fast = store.watch(stream_name="s"), store.watch(stream_name="s")
        await slow.open()
        await fast.open()
        for n in range(20):
            await _set(store, str(n))
            assert await asyncio.wait_for(_ids(fast, 1), 5) == [str(n)]
        assert await asyncio.wait_for(_ids(slow, 5), 5) == ["0", "1", "2", "3", "4"]  # every queued event first
        with pytest.raises(StreamLagError, match="more than 5 events"):
            await asyncio.wait_for(anext(slow), 5)
        await _set(store, "later")
        assert await asyncio.wait_for(_ids(fast, 1), 5) == ["later"]


def test_watch_queue_size_must_be_a_positive_integer() -> None:
    with pytest.raises(ValueError, match="watch_queue_size must be a positive integer, got 0"):
        RedisStream.from_url("redis://127.0.0.1:6379/0", watch_queue_size=0)


async def _gap_then_events(watch: Watch) -> None:
    with pytest.raises(StreamGapError):
        await anext(watch)


@pytest.mark.parametrize("fallback", [False, True], ids=["one_shot", "redis_py_pubsub"])
async def test_redis_restarts_every_watcher_reports_one_gap_per_outage_and_misses_no_later_event(
        tmp_path: Path, name: str, fallback: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two stop/start outages with 20 watchers open (report_watch_gaps): each watcher gets exactly one
    StreamGapError per outage, raised once the watch is subscribed again, and then each of a burst of 300 events
    published at once, once each and in one order; nothing more is pending after them. ``redis_py_pubsub``: as on
    a redis-py without the internals (``MISSING``), redis-py's own pub/sub under the same loop."""
    if fallback:
        monkeypatch.setattr(redis_internals, "MISSING", ("PubSub._execute(self, conn, command, *args, **kwargs)",))
    with PrivateRedis(tmp_path) as server:
        await server.start()
        async with _store(server.url, name, report_watch_gaps=True) as store:
            watches = [store.watch(stream_name="s") for _ in range(20)]
            for watch in watches:
                await watch.open()
            if not fallback:
                assert type(store._subscriber._pubsub) is redis_internals.OneShotPubSub  # type: ignore[union-attr]
            for outage in range(2):
                readers = [asyncio.ensure_future(_gap_then_events(watch)) for watch in watches]
                server.stop()
                await server.start()
                await asyncio.wait_for(asyncio.gather(*readers), 10)  # each: one StreamGapError
                burst = [f"{outage}-{n}" for n in range(300)]
                await asyncio.gather(*(_set(store, item) for item in burst))
                got = [await asyncio.wait_for(_ids(watch, 300), 5) for watch in watches]
                assert sorted(got[0]) == sorted(burst)  # each once (the sets ran at once: in Redis's order)
                assert all(ids == got[0] for ids in got)  # that order, for every watcher
                # nothing else is pending: no second gap, no repeated event
                await _set(store, f"{outage}-end")
                for watch in watches:
                    assert await asyncio.wait_for(_ids(watch, 1), 5) == [f"{outage}-end"]
            for watch in watches:
                await watch.aclose()


@pytest.mark.parametrize("options", [{"health_check_interval": 0.01}, {"socket_timeout": 0.2}],
                         ids=["health_check_10ms", "socket_timeout_200ms"])
async def test_an_idle_watch_reports_no_gap(name: str, redis_admin: aioredis.Redis, options: dict[str, float]) -> None:
    """Idle for longer than the health-check interval or the socket timeout: no gap and no lost connection. Before,
    at redis-py 8.0.0 a blocking pub/sub read ended after socket_timeout: a StreamGapError with nothing lost."""
    async with _store(require_redis(), name, report_watch_gaps=True, **options) as store:
        async with store.watch(stream_name="s") as watch:
            reader = asyncio.ensure_future(anext(watch))
            await asyncio.sleep(0.6)  # idle: the time is what is tested
            await _set(store, "after-idle")
            assert (await asyncio.wait_for(reader, 5))["id"] == "after-idle"
            for n in range(50):
                await _set(store, str(n))
                await asyncio.sleep(0.005)
            assert await asyncio.wait_for(_ids(watch, 50), 5) == [str(n) for n in range(50)]
            assert await _subscribed(redis_admin, name) == 1


async def test_a_watch_opened_while_the_connection_is_replaced_waits_until_it_is_subscribed(
        tmp_path: Path, name: str) -> None:
    """A watch opened during an outage (another watch keeps the shared connection) returns only once subscribed,
    so it misses no event written after its open returned."""
    with PrivateRedis(tmp_path) as server:
        await server.start()
        async with _store(server.url, name) as store, store.watch(stream_name="s") as first:
            reader = asyncio.ensure_future(anext(first))
            server.stop()
            await until(lambda: not store._subscriber._live.is_set())  # type: ignore[union-attr]
            second = store.watch(stream_name="s")
            opening = asyncio.ensure_future(second.open())
            await asyncio.sleep(0.2)
            assert not opening.done()
            await server.start()
            await asyncio.wait_for(opening, 10)
            await _set(store, "x")
            assert await asyncio.wait_for(_ids(second, 1), 5) == ["x"]
            assert (await asyncio.wait_for(reader, 5))["id"] == "x"
            await second.aclose()


async def test_writes_after_a_script_flush_with_every_connection_busy_do_not_wait_for_each_other(
        tmp_path: Path, name: str) -> None:
    """Before: a write whose EVALSHA met NOSCRIPT (Redis restarted, or SCRIPT FLUSH) loaded the script on a second
    connection of the pool; with every connection held by such a write they all waited for each other and failed
    with PoolExhaustedError after pool_timeout (a Redis restart under 50 concurrent writers did it)."""
    with PrivateRedis(tmp_path) as server:
        await server.start()
        async with _store(server.url, name, max_connections=4, pool_timeout=2) as store:
            await _set(store, "loaded")  # the script is loaded, and this store knows it
            await store.client.script_flush()
            await asyncio.gather(*(_set(store, str(n)) for n in range(40)))
            assert await store.client.hlen(f"{name}:s:g") == 41


async def test_open_and_close_cancelled_at_every_turn_leave_no_connection_or_task(
        name: str, redis_admin: aioredis.Redis) -> None:
    """The first watch's open (which subscribes the shared connection) and the last watch's close (which stops
    it) cancelled after 0..40 loop turns: afterwards nothing is subscribed and, within 2 s, no task of the store
    runs, and the next watch still works."""
    async with _store(require_redis(), name) as store:
        before = asyncio.all_tasks()
        for turns in range(40):
            watch = store.watch(stream_name="s")
            opening = asyncio.ensure_future(watch.open())
            for _ in range(turns):
                await asyncio.sleep(0)
            opening.cancel()
            await asyncio.gather(opening, return_exceptions=True)
            closing = asyncio.ensure_future(watch.aclose())
            for _ in range(turns % 5):
                await asyncio.sleep(0)
            closing.cancel()
            await asyncio.gather(closing, return_exceptions=True)
            await watch.aclose()  # a cancelled close is finished by the next one
            await until(lambda: store._subscriber is None, within=2)
            # A close cancelled while it waited for the reader lets the reader go; it ends on its own a few loop
            # turns later (redis-py 8.2's PubSub.aclose finishes its teardown, shielded, before it re-raises).
            with contextlib.suppress(AssertionError):
                await until(lambda: asyncio.all_tasks() - before == set(), within=2)
            assert asyncio.all_tasks() - before == set(), f"after {turns} turns"
        for _ in range(200):  # the server drops a closed connection's subscription once it reads the hang-up
            if not await _subscribed(redis_admin, name):
                break
            await asyncio.sleep(0.01)
        assert await _subscribed(redis_admin, name) == 0
        async with store.watch(stream_name="s") as watch:
            await _set(store, "works")
            assert await asyncio.wait_for(_ids(watch, 1), 5) == ["works"]


async def test_a_watch_closed_right_after_its_open_leaves_no_subscribed_connection(
        name: str, redis_admin: aioredis.Redis) -> None:
    """The engine's start-up probe opens a watch and closes it at once: the shared reader task, cancelled before
    its first step, never ran the code that closes its pub/sub, so the connection stayed subscribed and out of the
    pool for good (every engine start with a Redis stream store leaked one)."""
    async with _store(require_redis(), name) as store:
        for _ in range(3):
            watch = store.watch()
            await watch.open()
            await watch.aclose()
        assert await _subscribed(redis_admin, name) == 0
        async with store.watch(stream_name="s") as events:  # the store still watches afterwards
            await _set(store, "x")
            assert (await asyncio.wait_for(anext(events), 5))["id"] == "x"


async def test_a_half_open_watch_connection_is_found_by_ping_and_replaced(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection that went silent without a reset (a NAT that forgot it) never fails a read: the shared pub/sub
    waited on it for good and every later event was lost without a word. Now a quiet connection is PINGed and,
    with no answer, replaced; the gap is reported and later events arrive."""
    monkeypatch.setattr(redis_module, "_QUIET_S", 0.3)
    monkeypatch.setattr(redis_module, "_PONG_S", 0.3)
    target = urlsplit(require_redis())
    assert target.hostname == "127.0.0.1" and target.port is not None
    relay = Relay(target.port)
    await relay.start()
    store = _store(f"redis://127.0.0.1:{relay.port}/0", name, report_watch_gaps=True)
    try:
        async with store.watch(stream_name="s") as events:
            await _set(store, "before")
            assert (await asyncio.wait_for(anext(events), 5))["id"] == "before"
            relay.blackhole()  # the watch's connection (and the pool's) go silent, still open
            with pytest.raises(StreamGapError):
                await asyncio.wait_for(anext(events), 10)
            writer = _store(require_redis(), name)  # around the relay: the pool's own connections are dead too
            try:
                await _set(writer, "after")
            finally:
                await writer.aclose()
            assert (await asyncio.wait_for(anext(events), 5))["id"] == "after"
    finally:
        relay.cut()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(store.aclose(), 5)
        await relay.close()
