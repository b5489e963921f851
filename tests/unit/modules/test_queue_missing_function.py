"""Named-queue jobs whose function nobody registered: a bounded wait for a worker to register it, then attempts that
count and a dead letter naming the function; told once per function and queue. Dead letters keep the handler's
error. A failing store is told in a line, not a traceback per poll.

Before: such a job was retried every ``backoff_ms`` for ever, its attempts never counted, never dead-lettered, with
no log line (10,000 of them burned a quarter of a core); a dead letter said "function call failed" whatever the
handler raised; with the store down every poll logged a full traceback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping
from typing import Any

import pytest
from fake_services import FakeServices
from test_queue import make_module  # noqa: F401 - fixture

from iii_engine.modules.queue.consumer import QueueConsumer, StoreFailures
from iii_engine.modules.queue.module import FunctionNotRegistered, JobNotReady, MissingFunctions
from iii_engine.modules.queue.settings import QueueSettings
from iii_engine.modules.queue.store import Claim, Job, MemoryQueueStore

WAIT = 10.0
MODULE_LOG = "iii_engine.modules.queue.module"
CONSUMER_LOG = "iii_engine.modules.queue.consumer"


async def _dead_letters(services: FakeServices, queue: str, n: int) -> list[dict[str, Any]]:
    async def wait() -> list[dict[str, Any]]:
        while True:
            page = await services.call("engine::queue::dlq_messages", {"topic": queue})
            if page["total"] >= n:
                return page["messages"]  # type: ignore[no-any-return]
            await asyncio.sleep(0.02)  # the store has no event for a dead letter

    return await asyncio.wait_for(wait(), WAIT)


async def test_a_job_of_a_missing_function_is_dead_lettered_after_the_grace_naming_it(
    services: FakeServices, make_module: Any, caplog: pytest.LogCaptureFixture,  # noqa: F811 - the fixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="iii_engine.modules.queue")
    module = await make_module({"q": {"max_retries": 2, "backoff_ms": 10, "missing_function_grace_ms": 200}})
    receipts = [await module.enqueue("q", "orders::procss", {"n": n}) for n in range(20)]
    letters = await _dead_letters(services, "q", 20)
    assert {letter["id"] for letter in letters} == set(receipts)
    error = letters[0]["error"]
    assert error.startswith("function_not_found: Function 'orders::procss' is not registered")
    assert "queue 'q' waited 200 ms" in error
    assert letters[0]["job"]["attempts"] == 2  # max_retries attempts counted after the grace, none before
    # once per function and queue, never per job: 20 jobs, one warning
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "'orders::procss'" in warnings[0] and "queue 'q'" in warnings[0]
    waiting = [r for r in caplog.records if r.levelno == logging.INFO and "wait up to 200 ms" in r.getMessage()]
    assert len(waiting) == 1


async def test_a_job_waits_for_a_worker_that_registers_its_function_late(
    services: FakeServices, make_module: Any, caplog: pytest.LogCaptureFixture,  # noqa: F811 - the fixture
) -> None:
    caplog.set_level(logging.INFO, logger=MODULE_LOG)
    module = await make_module({"q": {"max_retries": 1, "backoff_ms": 10}})
    await module.enqueue("q", "late::worker", {"n": 1})

    async def delayed() -> None:
        while True:
            if (await services.call("engine::queue::topic_stats", {"topic": "q"}))["delayed"] == 1:
                return
            await asyncio.sleep(0.01)  # the store has no event for a job put back

    await asyncio.wait_for(delayed(), WAIT)  # it found its function missing and waits, no attempt counted
    ran: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def late_worker(data: Any) -> None:
        ran.set_result(data)

    services.add("late::worker", late_worker)
    assert await asyncio.wait_for(ran, WAIT) == {"n": 1}
    stats = await services.call("engine::queue::topic_stats", {"topic": "q"})
    assert stats["dlq"] == 0
    assert any("'late::worker' is registered" in r.getMessage() for r in caplog.records)


def test_waiting_jobs_are_looked_at_less_and_less_often_up_to_a_cap() -> None:
    settings = QueueSettings(backoff_ms=100, missing_function_grace_ms=60_000)
    missing = MissingFunctions()

    def delay_at(now: int) -> int:
        with pytest.raises(JobNotReady) as wait:
            missing.check("q", "f", settings, now)
        assert wait.value.delay_ms is not None
        return wait.value.delay_ms

    assert delay_at(0) == 100  # backoff_ms at first
    assert delay_at(800) == 800  # then as long as it has been missing
    assert delay_at(3000) == 3000
    assert delay_at(30_000) == 5000  # capped: a late worker gets its jobs within 5 s
    assert delay_at(58_000) == 2000  # never past the grace's end
    with pytest.raises(FunctionNotRegistered):
        missing.check("q", "f", settings, 60_000)
    missing.found("q", "f")  # registered: a new absence gets a new grace
    assert delay_at(70_000) == 100


async def test_missing_functions_are_remembered_within_a_bound() -> None:
    missing = MissingFunctions(limit=3)
    for n in range(10):
        with pytest.raises(JobNotReady):
            missing.check("q", f"made-up-{n}", QueueSettings(), 0)
    assert len(missing._since) == 3


async def test_more_missing_functions_than_the_bound_still_end_after_the_grace_in_few_lines(
        caplog: pytest.LogCaptureFixture) -> None:
    # Before: past the bound the oldest pair was forgotten and came back with a grace anew, so with more missing
    # functions than the bound no job ever failed (1,500 in one queue: none dead-lettered, 14,378 info lines in 7 s).
    settings = QueueSettings(missing_function_grace_ms=1000)
    missing = MissingFunctions(limit=3)
    ended: set[str] = set()
    caplog.set_level(logging.INFO, logger=MODULE_LOG)
    for now in range(0, 1600, 100):  # each job of five missing functions looked at every 100 ms
        for n in range(5):
            try:
                missing.check("q", f"made-up-{n}", settings, now)
            except FunctionNotRegistered:
                ended.add(f"made-up-{n}")
            except JobNotReady:
                assert now < 1000, f"made-up-{n} still waits at {now} ms"
    assert ended == {f"made-up-{n}" for n in range(5)}
    assert len(missing._since) == 3
    lines = [r for r in caplog.records if r.name == MODULE_LOG]
    assert len(lines) <= 3 + 2 + 3, [r.getMessage() for r in lines]  # 3 waiting, 2 summaries, 3 warnings at most


async def test_a_dead_letter_keeps_the_handlers_error_cut_to_a_bound(
    services: FakeServices, make_module: Any,  # noqa: F811 - the fixture
) -> None:
    module = await make_module({"q": {"max_retries": 1}})

    async def fails(data: Any) -> Any:
        raise RuntimeError(f"card declined {'x' * 5000}")

    services.add("charge", fails)
    await module.enqueue("q", "charge", {})
    error = (await _dead_letters(services, "q", 1))[0]["error"]
    assert error.startswith("invocation_failed: card declined xxx")
    assert len(error.encode()) <= 1000 and error.endswith("bytes)")  # says how long it was


class FlakyStore(MemoryQueueStore):
    """An in-memory store whose claims fail while :attr:`down` is set; :attr:`failed` counts them."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True
        self.failed = 0
        self.enough = asyncio.Event()

    async def claim_next(self, queue: str, *, now_ms: int, lease_ms: int, skip_functions: Collection[str] = (),
                         put_off: Mapping[str, int] | None = None) -> Claim:
        if self.down:
            self.failed += 1
            if self.failed >= 30:
                self.enough.set()
            raise ConnectionError("Connect call failed ('127.0.0.1', 6379)")
        return await super().claim_next(queue, now_ms=now_ms, lease_ms=lease_ms, skip_functions=skip_functions,
                                           put_off=put_off)


async def test_a_failing_store_is_one_line_then_one_when_it_answers_again(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=CONSUMER_LOG)
    store = FlakyStore()
    ran = asyncio.Event()

    async def run(job: Job) -> None:
        ran.set()

    # no backoff: 30 failed polls in a few milliseconds
    consumer = QueueConsumer(store, "q", QueueSettings(poll_interval_ms=1, store_retry_max_ms=1), run)
    consumer.start()
    try:
        await asyncio.wait_for(store.enough.wait(), WAIT)
        told = [r for r in caplog.records if r.levelno >= logging.INFO]
        assert len(told) == 1, [r.getMessage() for r in told]
        assert told[0].levelno == logging.ERROR and told[0].exc_info is None
        assert "queue store failed (queue q: ConnectionError: Connect call failed" in told[0].getMessage()
        debug = [r for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info is not None]
        assert len(debug) >= 30  # the tracebacks are still there, at debug level
        store.down = False
        await store.push("q", Job.new("q", "f", 1))
        consumer.wake()
        await asyncio.wait_for(ran.wait(), WAIT)
        again = [r.getMessage() for r in caplog.records if "answers again" in r.getMessage()]
        assert len(again) == 1 and f"after {store.failed} failed poll(s)" in again[0]
    finally:
        await consumer.stop()


async def test_a_recovery_is_one_line_and_a_new_outage_is_told_at_once(caplog: pytest.LogCaptureFixture) -> None:
    # Before: the recovery first flushed the pending count as "still failing", and an outage within the interval of
    # the last line got no error line, only a "still failing" up to 30 s late.
    caplog.set_level(logging.INFO, logger="tests.store_failures")
    failures = StoreFailures(logging.getLogger("tests.store_failures"), interval=30.0)
    try:
        failures.failed("q", ConnectionError("down"), 100)
        failures.failed("q", ConnectionError("down"), 100)  # counted for a summary that never comes: it recovers
        failures.answered("q")
        failures.failed("q", ConnectionError("down again"), 100)
        told = [(r.levelno, r.getMessage()) for r in caplog.records]
        assert [level for level, _ in told] == [logging.ERROR, logging.WARNING, logging.ERROR], told
        assert "answers again after 2 failed poll(s)" in told[1][1]
        assert "down again" in told[2][1]
    finally:
        failures.close()


async def test_a_consumer_stopped_while_the_store_fails_does_not_hold_the_recovery_back(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tests.store_failures")
    failures = StoreFailures(logging.getLogger("tests.store_failures"), interval=30.0)
    consumer = QueueConsumer(MemoryQueueStore(), "topic-a", QueueSettings(), lambda job: asyncio.sleep(0),
                             store_failures=failures)
    try:
        failures.failed("topic-a", ConnectionError("down"), 100)
        failures.failed("q", ConnectionError("down"), 100)
        await consumer.stop()  # a topic consumer reclaimed while its last poll had failed
        failures.answered("q")
        assert not failures.failing
        assert sum("answers again" in r.getMessage() for r in caplog.records) == 1
        failures.failed("q", ConnectionError("down"), 100)
        failures.failed("q", ConnectionError("down"), 100)
        await QueueConsumer(MemoryQueueStore(), "q", QueueSettings(), lambda job: asyncio.sleep(0),
                            store_failures=failures).stop()  # the last failing consumer stops: its count is said
        last = caplog.records[-1].getMessage()
        assert "the last consumer whose polls failed stopped (q) after 2 failed poll(s)" in last, last
    finally:
        failures.close()
