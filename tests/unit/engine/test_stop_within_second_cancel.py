"""``closing.stop_within``: a second cancel of its caller during the wait it gives the cancelled work still lets that
work go (held until it ends, its failure retrieved). Before, that cancel skipped ``let_go``: a stop whose library
swallowed its cancel was held by nothing and could be garbage collected mid-run."""

from __future__ import annotations

import asyncio

import pytest

from iii_engine import closing
from iii_streams.deadlines import let_go_count
from tests.polling import until

pytestmark = pytest.mark.timeout(30)


async def test_a_second_cancel_during_the_wait_still_lets_the_work_go() -> None:
    release = asyncio.Event()
    cancelled_once = asyncio.Event()

    async def stubborn_stop() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                cancelled_once.set()  # swallowed: its library's doing

    caller = asyncio.ensure_future(closing.stop_within(stubborn_stop(), 60, "module x's stop"))
    await asyncio.sleep(0)  # the work started, the caller waits on it
    caller.cancel()
    await asyncio.wait_for(cancelled_once.wait(), 5)  # the caller now gives it CLOSE_TIMEOUT_S (2 s)
    caller.cancel()  # a second cancel ends that wait
    with pytest.raises(asyncio.CancelledError):
        await caller
    try:
        assert let_go_count() == 1  # before: 0 (nothing held the work any more)
    finally:
        release.set()
    await until(lambda: let_go_count() == 0, 5)
