"""Closes of a store's parts that never end: a ``RedisStream``'s watch reader whose pub/sub close swallows every
cancel (a library swallowing cancellation, python/cpython#86296, or a connection whose close never answers), and
:func:`iii_streams.deadlines.finish_within` itself with such a work. The store's close ends within its bound, warns
naming what it let go, and the let-go work stays referenced until it ends.

Before: ``_Subscriber.stop`` waited for the reader task with no limit after its second cancel
(``await asyncio.wait({task})``), so ``RedisStream.aclose()`` never returned.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from iii_streams import RedisStream
from iii_streams import redis as redis_module
from iii_streams.deadlines import finish_within, let_go_count
from iii_streams.redis import KeyLayout
from tests.services import require_redis

pytestmark = pytest.mark.timeout(30)


class _Stubborn:
    """A close that swallows every cancel until :attr:`release` is set, then runs the real close."""

    def __init__(self, real: Callable[[], Awaitable[Any]] | None = None) -> None:
        self.real = real
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.cancels = 0
        self.ended = asyncio.Event()

    async def __call__(self) -> None:
        self.entered.set()
        try:
            while not self.release.is_set():
                try:
                    await self.release.wait()
                except asyncio.CancelledError:
                    self.cancels += 1  # swallowed, as a library in asyncio.wait_for may
            if self.real is not None:
                await self.real()
        finally:
            self.ended.set()


async def test_finish_within_lets_go_and_keeps_the_work_referenced(caplog: pytest.LogCaptureFixture) -> None:
    close = _Stubborn()
    before = let_go_count()
    try:
        with caplog.at_level(logging.WARNING, logger="iii_streams.deadlines"):
            assert await finish_within(close(), 0.05, "a stubborn close") is False
        assert "a stubborn close did not end within 0.05 s" in caplog.text
        assert let_go_count() == before + 1
        gc.collect()  # only the let-go set holds the task: it must survive a collection
        await asyncio.sleep(0)  # the cancel is delivered on the task's next step
        assert close.cancels == 1
        assert not close.ended.is_set()
    finally:
        close.release.set()
    await asyncio.wait_for(close.ended.wait(), 5)
    for _ in range(3):  # the done callbacks run on the next loop turns
        await asyncio.sleep(0)
    assert let_go_count() == before


async def test_finish_within_raises_a_failure_in_time_and_passes_a_caller_cancel_on() -> None:
    async def failing() -> None:
        raise RuntimeError("close failed")

    with pytest.raises(RuntimeError, match="close failed"):
        await finish_within(failing(), 1.0, "a failing close")
    close = _Stubborn()
    waiter = asyncio.ensure_future(finish_within(close(), 10.0, "a close whose caller is cancelled"))
    await close.entered.wait()
    waiter.cancel()
    try:
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await asyncio.sleep(0)
        assert close.cancels == 1  # cancelled with its caller, and let go
    finally:
        close.release.set()
    await asyncio.wait_for(close.ended.wait(), 5)


async def test_redis_store_close_ends_when_the_watch_reader_never_does(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    url = require_redis()
    monkeypatch.setattr(redis_module, "_STOP_S", 0.2)
    name = f"test-close-bounds-{uuid.uuid4().hex[:8]}"
    store = RedisStream.from_url(url, layout=KeyLayout(name), channel=name, client_name=name)
    watch = await store.watch().open()
    subscriber = store._subscriber
    assert subscriber is not None and subscriber._pubsub is not None
    pubsub = subscriber._pubsub
    stubborn = _Stubborn(pubsub.aclose)
    monkeypatch.setattr(pubsub, "aclose", stubborn)
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        with caplog.at_level(logging.WARNING):
            await asyncio.wait_for(store.aclose(), 10)  # before: never returned
        took = loop.time() - began
        assert took < 2.5, took  # the reader: 0.2 s, cancelled again, 0.2 s more; the connection's close 0.2 s
        await asyncio.sleep(0)
        assert stubborn.cancels >= 1  # the first cancel ends the reader's read; the close is cancelled again
        assert f"the Redis watch reader of {name} did not end within 0.2 s; cancelled and let go" in caplog.text
        assert let_go_count() >= 1
        assert not stubborn.ended.is_set()
    finally:
        stubborn.release.set()  # the server answers at last: the let-go reader ends and closes its connection
    await asyncio.wait_for(stubborn.ended.wait(), 5)
    await watch.aclose()


async def test_a_stop_cancelled_while_the_watch_reader_ends_keeps_the_reader_referenced(
        monkeypatch: pytest.MonkeyPatch) -> None:
    url = require_redis()
    name = f"test-close-bounds-{uuid.uuid4().hex[:8]}"
    store = RedisStream.from_url(url, layout=KeyLayout(name), channel=name, client_name=name)
    watch = await store.watch().open()
    subscriber = store._subscriber
    assert subscriber is not None and subscriber._pubsub is not None and subscriber._reader is not None
    pubsub = subscriber._pubsub
    stubborn = _Stubborn(pubsub.aclose)
    monkeypatch.setattr(pubsub, "aclose", stubborn)
    before = let_go_count()
    stopping = asyncio.ensure_future(subscriber.stop())
    try:
        await asyncio.wait_for(stubborn.entered.wait(), 5)  # the reader is in its close, swallowing the cancel
        stopping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stopping
        # before: the reader was cancelled and forgotten (self._reader already None); only the loop's weak
        # reference held it, so a collection could destroy it mid-run
        assert let_go_count() == before + 1
        gc.collect()
        assert not stubborn.ended.is_set()
    finally:
        stubborn.release.set()
    await asyncio.wait_for(stubborn.ended.wait(), 5)
    await watch.aclose()
    await store.aclose()
