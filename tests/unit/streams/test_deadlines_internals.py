"""The one asyncio internal iii_streams.deadlines relies on is there on the Pythons we support: a let-go task is not
reported a second time by asyncio at interpreter exit. An upgrade that takes it away fails here, not silently."""

from __future__ import annotations

import asyncio

from iii_streams import deadlines


def test_the_destroy_pending_switch_is_there() -> None:
    assert deadlines.QUIET_DESTROY_MISSING == ()


async def test_a_task_let_go_is_muted_and_still_held_until_it_ends() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # swallows its cancel: the case a let-go is for

    task = asyncio.ensure_future(stubborn())
    await asyncio.sleep(0)
    before = deadlines.let_go_count()
    deadlines.let_go(task)
    assert task._log_destroy_pending is False  # type: ignore[attr-defined]
    assert deadlines.let_go_count() == before + 1
    release.set()
    await task
    assert deadlines.let_go_count() == before


def test_work_let_go_on_a_loop_closed_since_is_not_counted_nor_held() -> None:
    # before: counted (and held) for the life of the process, so a later test or engine of the same process that
    # waited for let_go_count() == 0 waited for good
    before = deadlines.let_go_count()

    async def leave_one_behind() -> None:
        forever = asyncio.get_running_loop().create_future()
        forever.cancel = lambda *args: False  # type: ignore[method-assign]  (swallows its cancel for good)
        deadlines.let_go(forever)
        await asyncio.sleep(0)
        assert deadlines.let_go_count() == before + 1

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(leave_one_behind())
    finally:
        loop.close()
    assert deadlines.let_go_count() == before
