"""``CloseOnce``, the stores' close-once (``RedisStream.aclose``, ``SQLStream.aclose``): its edges.

Two closes at once run the close once and both return when it ended; a later one returns at once; a first close
cancelled or failing lets the callers waiting behind it return (they do not run it again: see the class); a waiting
caller cancelled leaves the close running; a call from another event loop while the close is under way raises at
once instead of waiting on an ``asyncio.Event`` that thread never wakes.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from iii_streams.close_once import CloseOnce

pytestmark = pytest.mark.timeout(30)


class Held:
    """A close that counts its runs, sets ``entered`` and waits for ``may_end``; ``fails`` makes it raise then."""

    def __init__(self, fails: BaseException | None = None) -> None:
        self.entered, self.may_end = asyncio.Event(), asyncio.Event()
        self.runs = 0
        self.fails = fails

    async def __call__(self) -> None:
        self.runs += 1
        self.entered.set()
        await self.may_end.wait()
        if self.fails is not None:
            raise self.fails


async def not_run() -> None:
    raise AssertionError("the close ran again")


async def under_way(once: CloseOnce, close: Held) -> tuple[asyncio.Task[None], asyncio.Task[None]]:
    """A first run under way in ``close``, and a second call started behind it, not returned."""
    first = asyncio.ensure_future(once.run(close))
    await asyncio.wait_for(close.entered.wait(), 5)
    second = asyncio.ensure_future(once.run(not_run))
    await asyncio.sleep(0)  # its first step: it waits for the first's end
    assert not second.done() and once.closing and not once.closed
    return first, second


async def cancelled(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and see it end cancelled."""
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_two_closes_at_once_run_it_once_and_both_return_when_it_ended() -> None:
    once, close = CloseOnce(), Held()
    assert not once.closing
    first, second = await under_way(once, close)
    await asyncio.wait({second}, timeout=0.1)  # a wait for something that must NOT happen
    assert not second.done(), "the second close returned while the first was still closing"
    close.may_end.set()
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert close.runs == 1 and once.closed


async def test_a_close_after_the_first_ended_returns_at_once() -> None:
    once, close = CloseOnce(), Held()
    close.may_end.set()
    await once.run(close)
    await asyncio.wait_for(once.run(not_run), 1)
    assert close.runs == 1 and once.closing and once.closed


async def test_a_cancelled_first_close_lets_the_waiting_second_return_without_running_it_again() -> None:
    once, close = CloseOnce(), Held()
    first, second = await under_way(once, close)
    await cancelled(first)
    await asyncio.wait_for(second, 5)  # it returns: never left waiting for a close nobody runs
    assert close.runs == 1 and once.closed
    # a call made after it ended does run it again (test_close_once_cut_off.py)


async def test_a_failed_first_close_raises_to_its_caller_alone() -> None:
    once, close = CloseOnce(), Held(fails=OSError("the pool's close failed"))
    first, second = await under_way(once, close)
    close.may_end.set()
    with pytest.raises(OSError, match="the pool's close failed"):
        await asyncio.wait_for(first, 5)
    await asyncio.wait_for(second, 5)  # it returns; the error is not raised again
    assert second.exception() is None
    await asyncio.wait_for(once.run(not_run), 1)
    assert close.runs == 1 and once.closed


async def test_a_cancelled_waiting_close_leaves_the_first_running() -> None:
    once, close = CloseOnce(), Held()
    first, second = await under_way(once, close)
    await cancelled(second)
    assert not first.done() and not once.closed
    close.may_end.set()
    await asyncio.wait_for(first, 5)
    assert close.runs == 1 and once.closed


def test_a_close_under_way_on_another_loop_raises_here_and_once_ended_returns() -> None:
    once = CloseOnce()
    entered = threading.Event()
    held: list[Held] = []
    loops: list[asyncio.AbstractEventLoop] = []
    failures: list[BaseException] = []

    async def close_there() -> None:
        loops.append(asyncio.get_running_loop())
        held.append(close := Held())
        closing = asyncio.ensure_future(once.run(close))
        await close.entered.wait()
        entered.set()
        await asyncio.wait_for(closing, 10)

    def there() -> None:
        try:
            asyncio.run(close_there())
        except BaseException as exc:  # reported by the test, in its own thread
            failures.append(exc)

    thread = threading.Thread(target=there, name="the other loop", daemon=True)
    thread.start()
    try:
        assert entered.wait(5)

        async def here() -> None:
            with pytest.raises(RuntimeError, match="another event loop"):
                await asyncio.wait_for(once.run(not_run), 5)

        asyncio.run(here())
        assert not once.closed
    finally:
        if loops:
            loops[0].call_soon_threadsafe(held[0].may_end.set)
        thread.join(10)
    assert not thread.is_alive() and not failures
    assert once.closed
    asyncio.run(asyncio.wait_for(once.run(not_run), 1))  # ended: any loop's call returns at once
