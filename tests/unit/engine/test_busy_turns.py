"""BusyTurns: a key's line, headed by its first call refused busy, holds the key's later calls in dispatch order and
lets them all go, in that order, when it opens; it leaves nothing behind."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from iii_engine.busy_turns import BusyTurns


async def _started(coro: Coroutine[Any, Any, None], woken: list[int], n: int) -> asyncio.Task[None]:
    async def run() -> None:
        await coro
        woken.append(n)

    task = asyncio.create_task(run())
    await asyncio.sleep(0)  # one step: it joins its line (a task's first step runs at the next loop turn)
    return task


async def test_a_line_lets_its_calls_go_in_dispatch_order_whatever_order_they_joined_in() -> None:
    turns = BusyTurns()
    head, second, third = turns.ticket("k"), turns.ticket("k"), turns.ticket("k")
    assert head.refused() and head.heads()
    woken: list[int] = []
    late_third = await _started(third.wait_in_line(), woken, 3)
    assert not second.refused()  # refused after the third joined, dispatched before it
    late_second = await _started(second.wait_in_line(), woken, 2)
    assert not woken
    head.release()  # taken: the line opens, every call in it goes
    await asyncio.gather(late_second, late_third)
    assert woken == [2, 3]
    assert turns.held_keys() == 0


async def test_a_call_refused_while_another_heads_never_takes_the_head() -> None:
    turns = BusyTurns()
    earlier, later = turns.ticket("k"), turns.ticket("k")
    assert later.refused()
    assert not earlier.refused() and later.heads() and not earlier.heads()  # the worker may be running ``later``
    later.release()
    assert earlier.refused() and earlier.heads()  # refused again: it heads a new line
    earlier.release()
    assert turns.held_keys() == 0


async def test_a_cancelled_wait_leaves_the_line_and_the_others_still_go() -> None:
    turns = BusyTurns()
    head, second, third = turns.ticket("k"), turns.ticket("k"), turns.ticket("k")
    head.refused()
    woken: list[int] = []
    waiting_second = await _started(second.wait_in_line(), woken, 2)
    waiting_third = await _started(third.wait_in_line(), woken, 3)
    waiting_second.cancel()
    await asyncio.sleep(0)
    head.release()
    head.release()  # twice is harmless
    await waiting_third
    assert woken == [3] and waiting_second.cancelled()
    assert turns.held_keys() == 0


async def test_keys_do_not_wait_for_each_other_and_a_call_with_no_line_goes_at_once() -> None:
    turns = BusyTurns()
    a, b = turns.ticket("a"), turns.ticket("b")
    a.refused()
    assert not b.behind_held()
    await b.wait_in_line()  # no line for its key: returns at once
    b.release()  # not a head: nothing happens to a's line
    assert turns.held_keys() == 1
    a.release()
    assert turns.held_keys() == 0
