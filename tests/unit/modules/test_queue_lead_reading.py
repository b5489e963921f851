"""The in-memory queue store keeps delayed due times on the monotonic clock and converts at its edges with the wall
clock's lead on it. A reading of the two clocks taken across a pause (the process descheduled between the reads) is
off by the pause: it must never replace the kept lead, or due times move by milliseconds (before: a few in 100,000
round trips came back up to 4 ms off, 18 ms under load)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from iii_engine.modules.queue import store as store_module
from iii_engine.modules.queue.store import MemoryQueueStore


class _Clocks:
    """Wall and monotonic clocks whose reads are scripted: the wall clock leads by 1,000 s; ``pause_ns`` passes
    just after a wall read while ``pauses`` lasts."""

    def __init__(self) -> None:
        self.mono = 5_000_000_000
        self.pauses = 0
        self.pause_ns = 4_000_000
        self.step_ns = 0

    def monotonic_ns(self) -> int:
        self.mono += 1_000
        return self.mono

    def time_ns(self) -> int:
        wall = self.mono + 500 + 1_000_000_000_000 + self.step_ns  # + 500: the middle of its monotonic bracket
        if self.pauses:  # the process paused just after this read
            self.pauses -= 1
            self.mono += self.pause_ns
        return wall


@pytest.fixture
def clocks(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Clocks]:
    fake = _Clocks()
    monkeypatch.setattr(store_module.time, "monotonic_ns", fake.monotonic_ns)
    monkeypatch.setattr(store_module.time, "time_ns", fake.time_ns)
    yield fake


def test_a_reading_across_a_pause_does_not_move_the_lead(clocks: _Clocks) -> None:
    store = MemoryQueueStore()
    first = store._lead()
    assert first in (999_999, 1_000_000)
    clocks.pauses = 1  # one reading across a 4 ms pause, then tight ones: the tight one is taken, the same lead
    assert store._lead() == first
    clocks.pauses = 10  # every try across a pause: the kept lead stays
    assert store._lead() == first


def test_a_real_step_is_still_followed(clocks: _Clocks) -> None:
    store = MemoryQueueStore()
    first = store._lead()
    clocks.step_ns = 60_000_000_000  # the wall clock stepped 60 s ahead
    assert store._lead() == first + 60_000
    clocks.step_ns = -2_000_000  # and 2 ms back: past the 1 ms jitter, followed
    assert store._lead() == first - 2
