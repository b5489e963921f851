"""``CloseOnce`` after a close whose caller was cancelled: the next call runs the close again, to finish what the
cut-off one did not reach; calls during that run wait for it; once a run ended uncancelled (returned or raised),
later calls return at once as before.

Before: every call after the cut-off close returned at once, and what it had not closed stayed open for good.
"""

from __future__ import annotations

import asyncio

import pytest

from iii_streams.close_once import CloseOnce

pytestmark = pytest.mark.timeout(30)


class Steps:
    """A close of two steps, each done once (a step already done is skipped when run again); the first run
    waits for ``may_end`` between them."""

    def __init__(self) -> None:
        self.done: list[str] = []
        self.runs = 0
        self.between = asyncio.Event()
        self.may_end = asyncio.Event()

    async def __call__(self) -> None:
        self.runs += 1
        if "first" not in self.done:
            self.done.append("first")
        self.between.set()
        await self.may_end.wait()
        if "second" not in self.done:
            self.done.append("second")


async def _cut(once: CloseOnce, close: Steps) -> None:
    first = asyncio.ensure_future(once.run(close))
    await asyncio.wait_for(close.between.wait(), 5)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert close.done == ["first"] and once.closing and once.closed


async def test_a_call_after_a_cut_off_close_finishes_it() -> None:
    once, close = CloseOnce(), Steps()
    await _cut(once, close)
    close.may_end.set()
    await asyncio.wait_for(once.run(close), 5)
    assert close.done == ["first", "second"] and close.runs == 2 and once.closed
    await asyncio.wait_for(once.run(close), 1)  # finished: not run a third time
    assert close.runs == 2


async def test_calls_during_the_finishing_run_wait_for_it() -> None:
    once, close = CloseOnce(), Steps()
    await _cut(once, close)
    close.between.clear()
    finishing = asyncio.ensure_future(once.run(close))
    await asyncio.wait_for(close.between.wait(), 5)
    waiting = asyncio.ensure_future(once.run(close))
    await asyncio.wait({waiting}, timeout=0.1)  # a wait for something that must NOT happen
    assert not waiting.done() and not once.closed
    close.may_end.set()
    await asyncio.wait_for(asyncio.gather(finishing, waiting), 5)
    assert close.runs == 2 and close.done == ["first", "second"]


async def test_a_finishing_run_cut_off_too_leaves_it_to_the_next_call() -> None:
    once, close = CloseOnce(), Steps()
    await _cut(once, close)
    close.between.clear()
    await _cut(once, close)
    close.may_end.set()
    await asyncio.wait_for(once.run(close), 5)
    assert close.runs == 3 and close.done == ["first", "second"]


async def test_a_failed_close_is_not_run_again() -> None:
    once, runs = CloseOnce(), []

    async def failing() -> None:
        runs.append(1)
        raise OSError("the pool's close failed")

    with pytest.raises(OSError):
        await once.run(failing)
    await asyncio.wait_for(once.run(failing), 1)
    assert len(runs) == 1


def test_a_call_from_another_loop_after_a_cut_off_close_returns_at_once() -> None:
    """The cut-off close's pools belong to its loop: a later call on another loop (that loop's ``asyncio.run``
    ended) returns at once, as before the re-run existed. Before: it ran the close there, which failed with
    ``RuntimeError: Event loop is closed`` (Redis) or logged "attached to a different loop" (PostgreSQL)."""
    once = CloseOnce()
    runs: list[asyncio.AbstractEventLoop] = []

    async def cut() -> None:
        async def close() -> None:
            runs.append(asyncio.get_running_loop())
            await asyncio.get_running_loop().create_future()  # until cancelled

        first = asyncio.ensure_future(once.run(close))
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first

    asyncio.run(cut())

    async def later() -> None:
        async def close() -> None:
            runs.append(asyncio.get_running_loop())

        await once.run(close)

    asyncio.run(later())
    assert len(runs) == 1 and once.closed
