"""A store's shared deadline timer follows the event loop its operations run on (iii_streams.deadlines): a store used
from a second loop after the first one closed with an operation still in flight keeps its time limit and its one
shared timer, and two loops running at once in two threads each keep their own timer, never touching the other's
loop."""

from __future__ import annotations

import asyncio
import gc
import threading
from typing import Any

import pytest

from iii.stream import StreamGetInput
from iii_streams import MemoryStream, StreamTimeoutError

STUCK = StreamGetInput(stream_name="s", group_id="g", item_id="stuck")
SLOW = StreamGetInput(stream_name="s", group_id="g", item_id="slow")
QUICK = StreamGetInput(stream_name="s", group_id="g", item_id="quick")


class Gated(MemoryStream):
    """``get`` under the store's guard: ``stuck`` hangs (a dead database), ``slow`` takes ``slow_s``."""

    slow_s = 0.0

    async def get(self, input: StreamGetInput, *, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        async with self._guard("get", timeout):
            if input.item_id == "stuck":
                await asyncio.Event().wait()
            elif input.item_id == "slow":
                await asyncio.sleep(self.slow_s)
            return None


def test_a_loop_closed_mid_operation_leaves_the_next_loop_its_limit_and_its_shared_timer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = Gated(timeout=0.2)
    first = asyncio.new_event_loop()
    orphan = first.create_task(store.get(STUCK))
    first.run_until_complete(asyncio.sleep(0))  # the stuck get entered the guard ...
    first.close()  # ... and its loop is gone without it ever leaving
    assert not orphan.done()

    fallbacks: list[float | None] = []  # operations bounded by an asyncio.timeout of their own
    timeout = asyncio.timeout

    def counting(delay: float | None) -> asyncio.Timeout:
        fallbacks.append(delay)
        return timeout(delay)

    monkeypatch.setattr(asyncio, "timeout", counting)

    async def on_a_new_loop(store: Gated) -> None:
        await asyncio.gather(*(store.get(QUICK) for _ in range(50)))
        with pytest.raises(StreamTimeoutError, match=r"within 0\.2 s"):
            await asyncio.wait_for(store.get(STUCK), 10)

    asyncio.run(on_a_new_loop(store))
    # before: the orphaned entry kept the store off its shared timer for good (an asyncio.timeout per operation)
    assert 0.2 not in fallbacks, len(fallbacks)
    # never finished: asyncio logs it as destroyed while pending, here rather than in whichever test of this process
    # collects it later (the store keeps it alive until it goes too)
    del orphan, store
    gc.collect()


def test_two_live_loops_each_keep_their_own_timer() -> None:
    """Loop A's timer, armed for an operation that has since finished, fires while loop B (in another thread) has an
    operation in flight: it must not touch loop B (before: it ran B's queue and re-armed B's timer from A's thread,
    which asyncio's debug mode refuses)."""
    limit = 1.0
    store = Gated(timeout=limit)
    store.slow_s = limit / 2  # A's timer fires half a limit before B's deadline: no race between them
    a_left, b_done = threading.Event(), threading.Event()
    errors: list[Any] = []
    outcome: dict[str, Any] = {}

    async def loop_a() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        await store.get(SLOW)  # arms A's timer for limit after it started; leaves at half of it
        a_left.set()
        finished = loop.create_future()
        threading.Thread(target=lambda: (b_done.wait(30), loop.call_soon_threadsafe(finished.set_result, None)),
                         daemon=True).start()
        await finished  # A's timer fires meanwhile

    async def loop_b() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: errors.append(context))
        try:
            await asyncio.wait_for(store.get(STUCK), 10)
        except StreamTimeoutError as exc:
            outcome["b"] = exc
        finally:
            b_done.set()

    def run_b() -> None:
        a_left.wait(30)
        asyncio.run(loop_b(), debug=True)  # debug: touching this loop from another thread raises

    thread_b = threading.Thread(target=run_b)
    thread_b.start()
    asyncio.run(loop_a(), debug=True)
    thread_b.join(30)
    assert not errors, errors
    assert isinstance(outcome.get("b"), StreamTimeoutError)
