""":class:`iii_streams.coalescing.ReadCoalescer`: concurrent reads run together, each in a waiting caller's task,
so that none runs for nobody; a caller giving up hands its batch on, a failure fails exactly its batch."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from iii_streams.coalescing import ReadCoalescer
from iii_streams.errors import StreamBackendError, StreamClosedError


class Reads:
    """A ``read`` that records each call and, while ``gate`` is set, waits for it to open."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.tasks: list[asyncio.Task[object] | None] = []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.fail_on: set[str] = set()  # a call holding any of these keys raises

    async def __call__(self, keys: Sequence[str]) -> list[str | BaseException]:
        self.calls.append(list(keys))
        self.tasks.append(asyncio.current_task())
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_on & set(keys):
            raise ValueError("disk on fire")
        return [KeyError(k) if k.startswith("missing") else k.upper() for k in keys]


async def _started(reads: Reads, coalescer: ReadCoalescer[str, str], key: str) -> asyncio.Task[str]:
    """A submit running its read (held at the gate)."""
    reads.gate, reads.entered = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(coalescer.submit(key))
    await reads.entered.wait()
    return task


async def _queued(coalescer: ReadCoalescer[str, str], *keys: str) -> list[asyncio.Task[str]]:
    tasks = [asyncio.create_task(coalescer.submit(k)) for k in keys]
    await asyncio.sleep(0)  # each task's first step queues its read
    assert len(coalescer) == len(keys)
    return tasks


async def test_a_lone_read_runs_in_its_callers_task() -> None:
    reads = Reads()
    coalescer: ReadCoalescer[str, str] = ReadCoalescer(reads, name="t")

    async def caller() -> tuple[str, asyncio.Task[object] | None]:
        return await coalescer.submit("a"), asyncio.current_task()

    task = asyncio.create_task(caller())
    value, own = await task
    assert value == "A" and reads.calls == [["a"]] and reads.tasks == [own]


async def test_reads_arriving_during_one_run_together_in_a_waiting_callers_task() -> None:
    reads = Reads()
    coalescer: ReadCoalescer[str, str] = ReadCoalescer(reads, name="t", max_batch=3)
    first = await _started(reads, coalescer, "a")
    waiting = await _queued(coalescer, "b", "c", "d", "e")
    await _open(reads)
    assert await asyncio.gather(first, *waiting) == ["A", "B", "C", "D", "E"]
    gate_opened = reads.calls[0]
    assert [gate_opened, *reads.calls[1:]] == [["a"], ["b", "c", "d"], ["e"]]
    assert reads.tasks[1] is waiting[0] and reads.tasks[2] is waiting[3]  # no task of its own


async def _open(reads: Reads, *, hold_next: bool = False) -> None:
    """Let the read held at the gate go on; ``hold_next``: the next call is held at a new gate."""
    assert reads.gate is not None
    gate = reads.gate
    reads.gate, reads.entered = (asyncio.Event(), asyncio.Event()) if hold_next else (None, reads.entered)
    gate.set()


async def test_a_caller_that_gives_up_before_being_taken_is_skipped() -> None:
    reads = Reads()
    coalescer: ReadCoalescer[str, str] = ReadCoalescer(reads, name="t")
    first = await _started(reads, coalescer, "a")
    gone, kept = await _queued(coalescer, "b", "c")
    gone.cancel()
    await _open(reads)
    assert await first == "A" and await kept == "C"
    assert reads.calls == [["a"], ["c"]]


async def test_a_reader_that_gives_up_hands_its_batch_to_the_next_caller() -> None:
    reads = Reads()
    coalescer: ReadCoalescer[str, str] = ReadCoalescer(reads, name="t")
    first = await _started(reads, coalescer, "a")
    second, third = await _queued(coalescer, "b", "c")
    await _open(reads, hold_next=True)
    await first
    # "b" was woken to read for itself and "c": held at the gate, then it gives up
    await reads.entered.wait()
    assert reads.calls[-1] == ["b", "c"] and reads.tasks[-1] is second
    reads.entered = asyncio.Event()
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    # "c" goes back to the head of the queue and reads for itself, in its own task
    await reads.entered.wait()
    await _open(reads)
    assert await third == "C"
    assert reads.calls == [["a"], ["b", "c"], ["c"]] and reads.tasks[-1] is third


async def test_a_woken_caller_cancelled_before_it_reads_hands_on() -> None:
    reads = Reads()
    victims: list[asyncio.Task[str]] = []

    class CancelOnWake(ReadCoalescer[str, str]):
        def _hand_on(self) -> None:
            super()._hand_on()
            while victims:  # woken to read, and cancelled before its task runs again
                victims.pop().cancel()

    coalescer = CancelOnWake(reads, name="t")
    first = await _started(reads, coalescer, "a")
    second, third = await _queued(coalescer, "b", "c")
    victims.append(second)
    await _open(reads)
    assert await first == "A"
    assert await third == "C"
    assert second.cancelled()
    assert reads.calls == [["a"], ["c"]]


async def test_a_failed_read_fails_exactly_its_batch() -> None:
    reads = Reads()
    coalescer: ReadCoalescer[str, str] = ReadCoalescer(reads, name="t", max_batch=2)
    first = await _started(reads, coalescer, "a")
    b, c, d = await _queued(coalescer, "b", "c", "d")
    reads.fail_on = {"a", "b"}
    await _open(reads)
    results = await asyncio.gather(first, b, c, return_exceptions=True)
    assert all(isinstance(r, ValueError) and str(r) == "disk on fire" for r in results)
    assert await d == "D"  # the next batch is read
    assert reads.calls == [["a"], ["b", "c"], ["d"]]


async def test_a_result_that_is_an_exception_fails_its_own_read_alone() -> None:
    reads = Reads()
    coalescer: ReadCoalescer[str, str] = ReadCoalescer(reads, name="t")
    first = await _started(reads, coalescer, "missing-a")
    waiting = await _queued(coalescer, "b", "missing-c", "d")
    await _open(reads)
    results = await asyncio.gather(first, *waiting, return_exceptions=True)
    assert [r if isinstance(r, str) else repr(r) for r in results] == [
        "KeyError('missing-a')", "B", "KeyError('missing-c')", "D"]
    assert reads.calls == [["missing-a"], ["b", "missing-c", "d"]]


async def test_waiting_reads_are_bounded() -> None:
    reads = Reads()
    coalescer: ReadCoalescer[str, str] = ReadCoalescer(reads, name="t", max_pending=2)
    first = await _started(reads, coalescer, "a")
    waiting = await _queued(coalescer, "b", "c")
    with pytest.raises(StreamBackendError, match="2 reads already wait"):
        await coalescer.submit("d")
    await _open(reads)
    assert await asyncio.gather(first, *waiting) == ["A", "B", "C"]
    assert await coalescer.submit("e") == "E"  # room again, and no read is left running


async def test_close_fails_the_waiting_and_refuses_new_reads() -> None:
    reads = Reads()
    coalescer: ReadCoalescer[str, str] = ReadCoalescer(reads, name="t")
    first = await _started(reads, coalescer, "a")
    (waiting,) = await _queued(coalescer, "b")
    coalescer.close()
    with pytest.raises(StreamClosedError, match="closed before the read ran"):
        await waiting
    with pytest.raises(StreamClosedError, match="t is closed"):
        await coalescer.submit("c")
    await _open(reads)
    assert await first == "A"  # a read under way ends as it would
    assert reads.calls == [["a"]]


def test_bad_sizes_are_refused() -> None:
    async def read(keys: Sequence[str]) -> list[str]:
        return list(keys)

    with pytest.raises(ValueError, match="max_batch and max_pending must be >= 1"):
        ReadCoalescer(read, name="t", max_batch=0)
