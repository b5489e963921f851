"""A queue consumer whose store fails (Redis or PostgreSQL down) polls it less and less often, up to
``store_retry_max_ms``, and at ``poll_interval_ms`` again from its first poll that succeeds.

Before: every consumer polled a store that was down at ``poll_interval_ms`` for as long as it was down (with the
defaults, 10 polls a second per queue and topic).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping

import pytest

from iii_engine.modules.queue.consumer import QueueConsumer, StoreFailures
from iii_engine.modules.queue.settings import QueueSettings
from iii_engine.modules.queue.store import Claim, Job, MemoryQueueStore

pytestmark = pytest.mark.timeout(30)

WAIT = 10.0
POLL_MS = 10
CAP_MS = 80
WOKEN_S = 2.0  # below the shortest planned wait (2560 ms) the wake test puts the consumer in


class FlakyStore(MemoryQueueStore):
    """An in-memory store whose claims fail while :attr:`down` is set; :attr:`polls` holds the loop time and the
    outcome (``True``: answered) of each claim."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True
        self.polls: list[tuple[float, bool]] = []
        self._polled = asyncio.Event()

    async def claim_next(self, queue: str, *, now_ms: int, lease_ms: int, skip_functions: Collection[str] = (),
                         put_off: Mapping[str, int] | None = None) -> Claim:
        self.polls.append((asyncio.get_running_loop().time(), not self.down))
        self._polled.set()
        if self.down:
            raise ConnectionError("Connect call failed ('127.0.0.1', 6379)")
        return await super().claim_next(queue, now_ms=now_ms, lease_ms=lease_ms, skip_functions=skip_functions,
                                           put_off=put_off)

    async def reach(self, n: int) -> None:
        """Return once ``n`` claims have been made."""
        while len(self.polls) < n:
            self._polled.clear()
            await self._polled.wait()


class Told(StoreFailures):
    """Keeps the wait each failed poll was given (``retry_ms``) and the longest named (``retry_max_ms``)."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("tests.queue_backoff"))
        self.waits: list[tuple[int, int | None]] = []

    def failed(self, queue: str, exc: Exception, retry_ms: int, retry_max_ms: int | None = None) -> None:
        self.waits.append((retry_ms, retry_max_ms))
        if retry_max_ms is None:
            super().failed(queue, exc, retry_ms)
        else:
            super().failed(queue, exc, retry_ms, retry_max_ms)


async def test_polls_of_a_failing_store_back_off_up_to_the_cap_and_reset_on_success() -> None:
    store, told = FlakyStore(), Told()
    settings = QueueSettings(poll_interval_ms=POLL_MS, store_retry_max_ms=CAP_MS)
    consumer = QueueConsumer(store, "q", settings, lambda job: asyncio.sleep(0), store_failures=told)
    consumer.start()
    try:
        await asyncio.wait_for(store.reach(8), WAIT)
        longest = [min(POLL_MS * 2**n, CAP_MS) for n in range(7)]  # 10, 20, 40, 80, 80, 80, 80
        waits = [wait for wait, _ in told.waits[:7]]
        # each wait is 50-100 % of its longest (jitter), rounded to the millisecond
        assert all(high // 2 - 1 <= wait <= high + 1 for wait, high in zip(waits, longest, strict=True)), waits
        assert {cap for _, cap in told.waits} == {CAP_MS}
        # and the store was really polled that seldom: the timer never fires early
        times = [at for at, _ in store.polls[:8]]
        assert times[-1] - times[0] >= sum(waits) / 1000 * 0.99, (times, waits)

        store.down = False  # it answers again: the next poll succeeds and the waits start over
        answered = len(store.polls) + 1
        await asyncio.wait_for(store.reach(answered), WAIT)
        assert store.polls[answered - 1][1]
        store.down = True
        failed_before = len(told.waits)
        await asyncio.wait_for(store.reach(answered + 2), WAIT)
        assert len(told.waits) > failed_before
        assert told.waits[failed_before][0] <= POLL_MS, told.waits  # from poll_interval_ms again, not the cap
    finally:
        await consumer.stop()
        told.close()


async def test_a_push_wakes_a_consumer_that_backs_off() -> None:
    # the cap is long, yet a job pushed once the store answers again runs at once: an enqueue that reached the
    # store wakes its consumer out of the wait. Before, the consumer was woken after its 6th failed poll (next poll
    # 160-320 ms away) and the bound was 2 s, so the timer alone met it and a wake() that did nothing passed too.
    store = FlakyStore()
    ran = asyncio.Event()

    async def run(job: Job) -> None:
        ran.set()

    consumer = QueueConsumer(store, "q", QueueSettings(poll_interval_ms=POLL_MS, store_retry_max_ms=60_000), run)
    consumer.start()
    try:
        # after the 10th failed poll the next one is 2560-5120 ms away (10 ms doubled 9 times, 50-100 % of it):
        # only the wake can run the job within WOKEN_S
        await asyncio.wait_for(store.reach(10), WAIT)
        loop = asyncio.get_running_loop()
        started = loop.time()
        store.down = False
        await store.push("q", Job.new("q", "f", 1))
        consumer.wake()
        await asyncio.wait_for(ran.wait(), WAIT)
        assert loop.time() - started < WOKEN_S, [at - started for at, _ in store.polls]
    finally:
        await consumer.stop()


def test_the_first_error_line_says_how_the_polls_back_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="tests.queue_backoff_line")
    failures = StoreFailures(logging.getLogger("tests.queue_backoff_line"))
    try:
        failures.failed("q", ConnectionError("down"), 100, 5000)
    finally:
        failures.close()
    [line] = [r.getMessage() for r in caplog.records]
    assert "retrying in 100 ms, then less often (at most every 5000 ms)" in line, line


def test_store_retry_ms_refuses_no_failure() -> None:
    with pytest.raises(ValueError, match="failures must be >= 1, got 0"):
        QueueSettings().store_retry_ms(0)
    assert QueueSettings(poll_interval_ms=200, store_retry_max_ms=50).store_retry_ms(5) == 200  # never below the poll
    assert QueueSettings().store_retry_ms(10**6) == 5000  # a long outage: the cap, no huge number built
