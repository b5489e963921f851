"""Store operations under the store's own time limit share one timer (iii_streams.deadlines) and keep every
guarantee of ``asyncio.timeout``: a stuck operation fails with StreamTimeoutError on time, a cancel from elsewhere
stays a cancel, finished operations leave nothing behind, and a per-call timeout still works."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iii.stream import StreamGetInput
from iii_streams import MemoryStream, StreamTimeoutError
from iii_streams.deadlines import SharedDeadlines

KEY = StreamGetInput(stream_name="s", group_id="g", item_id="i")
STUCK = StreamGetInput(stream_name="s", group_id="g", item_id="stuck")


class Gated(MemoryStream):
    """``get`` of item ``stuck`` waits for ``gate`` under the store's guard (a hung database)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.gate = asyncio.Event()

    async def get(self, input: StreamGetInput, *, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        async with self._guard("get", timeout):
            if input.item_id == "stuck":
                await self.gate.wait()
            return None


async def test_a_stuck_operation_times_out_while_quick_ones_pass() -> None:
    store = Gated(timeout=0.2)
    stuck = asyncio.create_task(store.get(STUCK))
    await asyncio.sleep(0)  # the stuck one is the oldest entry
    for _ in range(500):  # the others finish
        await store.get(KEY)
    with pytest.raises(StreamTimeoutError, match=r"did not finish within 0\.2 s"):
        await asyncio.wait_for(stuck, 5)
    assert isinstance(stuck.exception().__cause__, TimeoutError)  # type: ignore[union-attr]
    store.gate.set()
    assert await store.get(STUCK) is None  # the store works on


async def test_finished_operations_leave_nothing_queued_behind_a_stuck_one() -> None:
    store = Gated(timeout=2.0)
    blocked = asyncio.create_task(store.get(STUCK))
    await asyncio.sleep(0)
    for _ in range(2000):
        await store.get(KEY)
    deadlines = store._deadlines
    assert deadlines is not None and len(deadlines) <= 100  # compacted behind the one still running
    store.gate.set()
    await asyncio.wait_for(blocked, 5)
    await store.get(KEY)
    assert len(deadlines) == 0


async def test_one_timer_for_many_operations(monkeypatch: pytest.MonkeyPatch) -> None:
    store = Gated(timeout=30.0)
    loop = asyncio.get_running_loop()
    armed: list[float] = []
    call_at = loop.call_at

    def counting(when: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        armed.append(when)
        return call_at(when, callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", counting)
    await asyncio.gather(*(store.get(KEY) for _ in range(300)))
    for _ in range(300):
        await store.get(KEY)
    assert len(armed) == 1  # asyncio.timeout armed 600


async def test_a_cancel_from_elsewhere_stays_a_cancel() -> None:
    store = Gated(timeout=5.0)
    task = asyncio.create_task(store.get(STUCK))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store._deadlines is not None and len(store._deadlines) == 0


async def test_a_cancel_racing_the_deadline_is_not_swallowed() -> None:
    deadlines = SharedDeadlines(0.0)

    async def body() -> bool:
        entry = deadlines.enter()
        assert entry is not None
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            return deadlines.leave(entry, True)
        return False

    task = asyncio.create_task(body())
    await asyncio.sleep(0)  # entered, waiting
    deadlines._fire()  # the deadline passed and cancelled the task, whose next step has not run yet ...
    task.cancel()  # ... and somebody else cancels it as well
    assert await task is False  # two cancel requests, one withdrawn: not a timeout
    assert task.cancelling() == 1


async def test_a_per_call_timeout_still_applies() -> None:
    store = Gated(timeout=60.0)
    with pytest.raises(StreamTimeoutError, match=r"within 0\.05 s"):
        await store.get(STUCK, timeout=0.05)


def test_a_new_event_loop_gets_fresh_deadlines() -> None:
    store = Gated(timeout=0.05)

    async def stuck_get() -> None:
        store.gate = asyncio.Event()  # of this loop
        await store.get(STUCK)

    for _ in range(2):  # the second loop must not inherit the first one's timer
        with pytest.raises(StreamTimeoutError):
            asyncio.run(stuck_get())
