""":class:`iii_streams.coalescing.ReadCoalescer`: concurrent reads run together, at most ``lanes`` at a time; a
batch's read is cut by no one caller's time limit (only when all of them gave up), a hung read holds one lane, and
a failure fails exactly its batch."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from iii_streams import coalescing
from iii_streams.coalescing import ReadCoalescer
from iii_streams.errors import StreamBackendError, StreamClosedError


class Reads:
    """A ``read`` that records each call and, for keys in ``hold``, waits at ``gate``."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.tasks: list[asyncio.Task[object] | None] = []
        self.gate = asyncio.Event()
        self.hold: set[str] = set()
        self.entered = asyncio.Condition()
        self.cancelled: list[list[str]] = []
        self.fail_on: set[str] = set()  # a call holding any of these keys raises

    async def __call__(self, keys: Sequence[str]) -> list[str | BaseException]:
        self.calls.append(list(keys))
        self.tasks.append(asyncio.current_task())
        async with self.entered:
            self.entered.notify_all()
        if self.hold & set(keys):
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled.append(list(keys))
                raise
        if self.fail_on & set(keys):
            raise ValueError("disk on fire") from KeyError("the cause")
        return [KeyError(k) if k.startswith("missing") else "x" * (1 << 20) if k.startswith("big") else k.upper()
                for k in keys]

    async def call(self, number: int) -> list[str]:
        """The keys of call ``number`` (1 for the first), once it began."""
        async with self.entered:
            await self.entered.wait_for(lambda: len(self.calls) >= number)
        return self.calls[number - 1]


async def _queued(coalescer: ReadCoalescer[str, str], *keys: str) -> list[asyncio.Task[str]]:
    tasks = [asyncio.create_task(coalescer.submit(k)) for k in keys]
    await asyncio.sleep(0)  # each task's first step queues its read
    assert len(coalescer) == len(keys)
    return tasks


async def _held(reads: Reads, coalescer: ReadCoalescer[str, str], key: str) -> asyncio.Task[str]:
    """A submit running its read, held at the gate."""
    reads.hold.add(key)
    task = asyncio.create_task(coalescer.submit(key))
    assert await reads.call(len(reads.calls) + 1) == [key]
    return task


async def test_a_lone_read_runs_in_its_callers_task() -> None:
    reads = Reads()
    coalescer: ReadCoalescer[str, str] = ReadCoalescer(reads, name="t")

    async def caller() -> tuple[str, asyncio.Task[object] | None]:
        return await coalescer.submit("a"), asyncio.current_task()

    value, own = await asyncio.create_task(caller())
    assert value == "A" and reads.calls == [["a"]] and reads.tasks == [own]


async def test_reads_past_the_lanes_run_together_in_a_task_of_their_own() -> None:
    reads = Reads()
    coalescer: ReadCoalescer[str, str] = ReadCoalescer(reads, name="t", max_batch=3, lanes=1)
    first = await _held(reads, coalescer, "a")
    waiting = await _queued(coalescer, "b", "c", "d", "e")
    reads.gate.set()
    assert await asyncio.gather(first, *waiting) == ["A", "B", "C", "D", "E"]
    assert reads.calls == [["a"], ["b", "c", "d"], ["e"]]
    assert not {id(t) for t in reads.tasks[1:]} & {id(first), *map(id, waiting)}
    assert coalescer.running == 0 and len(coalescer) == 0


async def _batch_of_b_and_c_held() -> tuple[Reads, ReadCoalescer[str, str], asyncio.Task[str], asyncio.Task[str]]:
    """One lane; "a" read alone, then "b" and "c" read together in a batch held at the gate."""
    reads = Reads()
    coalescer: ReadCoalescer[str, str] = ReadCoalescer(reads, name="t", lanes=1)
    first = await _held(reads, coalescer, "a")
    b, c = await _queued(coalescer, "b", "c")
    reads.hold.update({"b", "c"})
    gate, reads.gate = reads.gate, asyncio.Event()
    gate.set()
    assert await first == "A"
    assert await reads.call(2) == ["b", "c"]
    return reads, coalescer, b, c


async def test_a_batch_is_not_cut_when_its_first_caller_gives_up() -> None:
    """Before, the batch's read ran under its first caller's time limit: that caller, having waited longest, had the
    least time left, and its cancel cut the read (on PostgreSQL the connection went with it: the next read was cold
    again, and every get failed while replies were slow)."""
    reads, _, b, c = await _batch_of_b_and_c_held()
    b.cancel()
    await asyncio.sleep(0)
    reads.gate.set()
    assert await c == "C"
    assert b.cancelled() and reads.cancelled == []


async def test_a_batch_all_of_whose_callers_gave_up_is_stopped_and_the_next_one_runs() -> None:
    reads, coalescer, b, c = await _batch_of_b_and_c_held()
    (d,) = await _queued(coalescer, "d")
    b.cancel()
    c.cancel()
    assert await d == "D"
    assert reads.cancelled == [["b", "c"]] and reads.calls[-1] == ["d"]
    assert coalescer.running == 0


async def test_hung_reads_hold_one_lane_each_and_the_others_go_on() -> None:
    """An attack hung 5 to 8 reads (half-open connections) of callers with no time limit: with 4 lanes every other
    get then waited (0 of 49 within 2 s); the default is 15, as many as a SQL store's default pool holds."""
    reads = Reads()
    coalescer: ReadCoalescer[str, str] = ReadCoalescer(reads, name="t")
    hung = [await _held(reads, coalescer, "hung")]
    reads.hold = {"hung"}
    hung += [asyncio.create_task(coalescer.submit("hung")) for _ in range(7)]
    async with reads.entered:
        await reads.entered.wait_for(lambda: len(reads.calls) >= 2)  # the 7 read together, one more lane
    assert await asyncio.gather(*(coalescer.submit(k) for k in "xyz")) == ["X", "Y", "Z"]
    assert coalescer.running == 2
    for task in hung:
        task.cancel()
    await asyncio.gather(*hung, return_exceptions=True)
    await asyncio.sleep(0)  # the batch's task ends (all its callers gave up) at its next step
    assert coalescer.running == 0


async def test_a_batch_cancelled_before_it_ran_gives_its_lane_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by an attack: a "cancel every task" (a shutdown) in the pass a batch's task was made in never ran its
    body, whose ``finally`` gave the lane back: the lane stayed taken for good, and every later read waited."""
    monkeypatch.setattr(coalescing, "PATIENCE_S", 60)  # its timer is not the one that starts the batch here
    reads = Reads()
    coalescer: ReadCoalescer[str, str] = ReadCoalescer(reads, name="t", lanes=2)
    first = await _held(reads, coalescer, "a")
    b = asyncio.create_task(coalescer.submit("b"))
    await asyncio.sleep(0)  # b queued
    coalescer._kick()  # the start of batches, as its timer does: the batch's task is made, not yet run
    (batch,) = [t for t in asyncio.all_tasks() if t.get_name() == "t batch"]
    batch.cancel()
    with pytest.raises(StreamClosedError, match="the read was stopped"):
        await b
    assert coalescer.running == 1 and reads.calls == [["a"]]
    reads.gate.set()
    assert await first == "A"
    assert coalescer.running == 0 and await coalescer.submit("c") == "C"


async def test_big_values_are_read_a_few_at_a_time() -> None:
    """Found by an attack: 256 values of 2 MB read in one batch held 512 MB at once (a burst of 400 took 1.7 GB more
    memory, 250 MB before the coalescing), and a Redis pipeline that long outlasted its socket's timeout."""
    reads = Reads()
    coalescer: ReadCoalescer[str, str] = ReadCoalescer(reads, name="t", lanes=1, size=len,
                                                       max_batch_bytes=3 << 20)
    first = await _held(reads, coalescer, "big-0")
    waiting = await _queued(coalescer, *(f"big-{i}" for i in range(1, 10)), "small")
    reads.hold.clear()
    reads.gate.set()
    assert len(await first) == 1 << 20
    await asyncio.gather(*waiting)
    assert [len(call) for call in reads.calls] == [1, 3, 3, 3, 1]  # 3 MiB a batch


async def test_a_failed_read_fails_exactly_its_batch_each_with_its_own_copy() -> None:
    reads = Reads()
    coalescer: ReadCoalescer[str, str] = ReadCoalescer(reads, name="t", max_batch=2, lanes=1)
    first = await _held(reads, coalescer, "a")
    b, c, d = await _queued(coalescer, "b", "c", "d")
    reads.fail_on = {"a", "b"}
    reads.gate.set()
    results = await asyncio.gather(first, b, c, return_exceptions=True)
    assert all(isinstance(r, ValueError) and str(r) == "disk on fire" for r in results)
    assert results[1] is not results[2]  # one instance raised in many tasks gathered all their tracebacks
    assert isinstance(results[2], ValueError) and isinstance(results[2].__cause__, KeyError)
    assert await d == "D"  # the next batch is read
    assert reads.calls == [["a"], ["b", "c"], ["d"]]


async def test_a_result_that_is_an_exception_fails_its_own_read_alone() -> None:
    reads = Reads()
    coalescer: ReadCoalescer[str, str] = ReadCoalescer(reads, name="t", lanes=1)
    first = await _held(reads, coalescer, "missing-a")
    waiting = await _queued(coalescer, "b", "missing-c", "d")
    reads.gate.set()
    results = await asyncio.gather(first, *waiting, return_exceptions=True)
    assert [r if isinstance(r, str) else repr(r) for r in results] == [
        "KeyError('missing-a')", "B", "KeyError('missing-c')", "D"]


async def test_waiting_reads_are_bounded() -> None:
    reads = Reads()
    coalescer: ReadCoalescer[str, str] = ReadCoalescer(reads, name="t", max_pending=2, lanes=1)
    first = await _held(reads, coalescer, "a")
    waiting = await _queued(coalescer, "b", "c")
    with pytest.raises(StreamBackendError, match="2 reads already wait"):
        await coalescer.submit("d")
    reads.gate.set()
    assert await asyncio.gather(first, *waiting) == ["A", "B", "C"]
    assert await coalescer.submit("e") == "E"  # room again, and no read is left running


async def test_close_refuses_new_reads_and_lets_those_submitted_run() -> None:
    reads = Reads()
    coalescer: ReadCoalescer[str, str] = ReadCoalescer(reads, name="t", lanes=1)
    first = await _held(reads, coalescer, "a")
    (waiting,) = await _queued(coalescer, "b")
    coalescer.close()
    with pytest.raises(StreamClosedError, match="t is closed"):
        await coalescer.submit("c")
    reads.gate.set()
    assert await first == "A" and await waiting == "B"


async def _a_alone_and_b_batched() -> tuple[Reads, ReadCoalescer[str, str], asyncio.Task[str], asyncio.Task[str]]:
    """Two lanes; "a" read by its caller, "b" in a batch of its own: both held at the gate."""
    reads = Reads()
    coalescer: ReadCoalescer[str, str] = ReadCoalescer(reads, name="t", lanes=2)
    first = await _held(reads, coalescer, "a")
    reads.hold.add("b")
    b = asyncio.create_task(coalescer.submit("b"))
    assert await reads.call(2) == ["b"]
    return reads, coalescer, first, b


async def test_finish_waits_for_the_reads_then_fails_the_rest_and_stops_the_batches() -> None:
    reads, coalescer, first, b = await _a_alone_and_b_batched()
    coalescer.close()
    gone = RuntimeError("the store is closed")
    await coalescer.finish(0.05, gone)
    with pytest.raises(RuntimeError, match="the store is closed"):
        await b
    assert coalescer.running == 1  # the caller's own read is its own: it ends as it would
    reads.gate.set()
    assert await first == "A"
    assert coalescer.running == 0 and len(coalescer) == 0


async def test_a_cancel_of_finish_is_not_swallowed() -> None:
    reads, coalescer, first, b = await _a_alone_and_b_batched()
    finishing = asyncio.create_task(coalescer.finish(0, RuntimeError("closed")))
    await asyncio.wait({b})  # finish failed b and cancelled its batch; it now waits for the batch to end
    finishing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await finishing
    with pytest.raises(RuntimeError, match="closed"):
        await b
    reads.gate.set()
    assert await first == "A"


def test_bad_sizes_are_refused() -> None:
    async def read(keys: Sequence[str]) -> list[str]:
        return list(keys)

    with pytest.raises(ValueError, match="max_batch and max_pending must be >= 1"):
        ReadCoalescer(read, name="t", max_batch=0)
    with pytest.raises(ValueError, match="lanes and max_batch_bytes must be >= 1"):
        ReadCoalescer(read, name="t", lanes=0)
