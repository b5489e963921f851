"""The log byte budget (re-attack mends): an export's release never waits for the emitters' lock, and the record
size estimate walks the containers a body may be made of."""

from __future__ import annotations

import collections
import threading

import pytest
from opentelemetry._logs import LogRecord

from iii.telemetry import LogQueueBudget, log_record_bytes

MB = 1_000_000


def test_an_exports_release_does_not_wait_for_an_emitter_holding_the_lock() -> None:
    # Before: release() took the lock emitters hold over OpenTelemetry's emit, so the export thread waited behind
    # every emitter (small records cost 23-35 us instead of 16-18, and the queue, drained slower, overflowed).
    budget = LogQueueBudget(max_bytes=1000)
    with budget.lock:
        assert budget.admit(300) is None and budget.admit(200) is None
    held, done = threading.Event(), threading.Event()

    def emitter() -> None:
        with budget.lock:
            held.set()
            done.wait(10)

    thread = threading.Thread(target=emitter)
    thread.start()
    try:
        assert held.wait(10)
        releasing = threading.Thread(target=budget.release, args=(1,))
        releasing.start()
        releasing.join(5)
        assert not releasing.is_alive(), "release waited for the emitters' lock"
        assert (budget.queued_bytes, budget.queued_records) == (200, 1)
    finally:
        done.set()
        thread.join()


def test_a_push_out_and_an_export_free_each_size_once() -> None:
    budget = LogQueueBudget(max_bytes=1000)
    with budget.lock:
        for size in (100, 200, 300):
            assert budget.admit(size) is None
        budget.pushed_out()  # the oldest (100) goes
    budget.release(1, waiting=lambda: 1)  # an export of one (200); OpenTelemetry's queue holds 1 now
    assert (budget.queued_bytes, budget.queued_records) == (300, 1)
    budget.release(5)
    assert (budget.queued_bytes, budget.queued_records) == (0, 0)


@pytest.mark.parametrize("body", [
    frozenset({"x" * MB}), {"x" * MB}, collections.deque(["x" * MB]), memoryview(bytes(MB)),
    {"k": "x" * MB}.values(), {"x" * MB: 1}.keys(), {"k": "x" * MB}.items(),
], ids=["frozenset", "set", "deque", "memoryview", "values", "keys", "items"])
def test_a_bodys_containers_are_sized_by_what_they_hold(body: object) -> None:
    # Before: 568-1,288 bytes for each of these (their own size alone), so 1,500 such records of 1 MB passed a
    # 16 MiB budget and took a worker from 38 to 1,470 MB.
    assert log_record_bytes(LogRecord(body=body)) > MB
