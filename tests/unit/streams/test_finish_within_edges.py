"""Edges of ``iii_streams.deadlines.finish_within``: a work that ended as its caller was cancelled, failures in time
and after the bound, works already done, and many works let go at once."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import pytest

from iii_streams.deadlines import finish_within, let_go_count


def _unretrieved(loop: asyncio.AbstractEventLoop) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    return seen


async def _stubborn(ended: asyncio.Event, fail: bool = False) -> None:
    try:
        while not ended.is_set():
            try:
                await ended.wait()
            except asyncio.CancelledError:
                pass  # a library that swallows the cancel
    finally:
        if fail:
            raise RuntimeError("closed badly, late")


async def test_a_failure_that_ended_as_the_caller_was_cancelled_is_not_reported_as_never_retrieved() -> None:
    seen = _unretrieved(asyncio.get_running_loop())

    async def fails() -> None:
        raise RuntimeError("close failed")

    work = asyncio.ensure_future(fails())
    caller = asyncio.ensure_future(finish_within(work, 5, "a close"))
    await asyncio.sleep(0)
    # runs after the caller's wait was woken, before the caller resumes to look at the ended work
    work.add_done_callback(lambda _: caller.cancel())
    with pytest.raises(asyncio.CancelledError):
        await caller
    del work
    gc.collect()
    await asyncio.sleep(0)
    assert [context["message"] for context in seen] == []


async def test_a_failure_in_time_is_raised_and_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("bad close")

    with caplog.at_level(logging.DEBUG, logger="iii_streams.deadlines"), pytest.raises(ValueError, match="bad close"):
        await finish_within(fails(), 1.0, "a close")
    assert caplog.records == []


async def test_works_already_done() -> None:
    loop = asyncio.get_running_loop()
    ok: asyncio.Future[int] = loop.create_future()
    ok.set_result(1)
    failed: asyncio.Future[int] = loop.create_future()
    failed.set_exception(OSError("gone"))
    cancelled: asyncio.Future[int] = loop.create_future()
    cancelled.cancel()
    assert await finish_within(ok, 0, "done") is True
    assert await finish_within(cancelled, 0, "cancelled") is True
    with pytest.raises(OSError, match="gone"):
        await finish_within(failed, 0, "failed")


async def test_many_works_let_go_are_released_when_they_end_and_their_late_failures_are_seen() -> None:
    seen = _unretrieved(asyncio.get_running_loop())
    ended = asyncio.Event()
    before = let_go_count()
    try:
        results = await asyncio.gather(*(finish_within(_stubborn(ended, fail=i % 2 == 0), 0.01, "a silent close",
                                                       logging.getLogger("quiet")) for i in range(2000)))
        assert results == [False] * 2000
        assert let_go_count() == before + 2000
    finally:
        ended.set()
    while let_go_count() > before:  # noqa: ASYNC110 (the let-go set's own callbacks empty it: no event to await)
        await asyncio.sleep(0)
    gc.collect()
    await asyncio.sleep(0)
    assert seen == []


async def test_a_caller_cancelled_twice_lets_the_work_go_once() -> None:
    ended = asyncio.Event()
    before = let_go_count()
    caller = asyncio.ensure_future(finish_within(_stubborn(ended), 5, "a close"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    caller.cancel()
    caller.cancel()
    try:
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert let_go_count() == before + 1
    finally:
        ended.set()
    while let_go_count() > before:  # noqa: ASYNC110 (the let-go set's own callbacks empty it: no event to await)
        await asyncio.sleep(0)


async def test_a_let_go_work_is_named_after_what_it_is() -> None:
    ended = asyncio.Event()
    before = let_go_count()
    try:
        assert await finish_within(_stubborn(ended), 0.01, "the state module's store (RedisStream)",
                                   logging.getLogger("quiet")) is False
        # the exit's warning names the tasks left by their names: "Task-6" said nothing of what hung
        assert "the state module's store (RedisStream)" in {task.get_name() for task in asyncio.all_tasks()}
    finally:
        ended.set()
    while let_go_count() > before:  # noqa: ASYNC110 (the let-go set's own callbacks empty it: no event to await)
        await asyncio.sleep(0)
