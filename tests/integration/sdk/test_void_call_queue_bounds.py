"""Calls refused at a full outbound queue (the engine down): a void call's wait for room ends at its own timeout_ms,
a refused call leaves no reference cycle behind (freed at once, not at the next full collection), and a burst of
calls pushed out or refused logs one warning and then a count per interval, not one line per call."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from polling import until

from iii import InitOptions, TriggerAction
from iii.connection import Connection
from iii.errors import ConnectionLostError, OutboundQueueFullError
from iii.iii import III
from iii.iii_constants import MAX_QUEUE_SIZE, ReconnectionConfig
from iii.protocol import frames


def _nowhere() -> str:
    """A URL nothing listens at: every frame waits in the outbound queue."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"ws://127.0.0.1:{s.getsockname()[1]}"


def _void(n: int, **extra: object) -> dict[str, object]:
    return {"function_id": "nobody", "payload": {"n": n}, "action": TriggerAction.Void(), **extra}


@pytest.fixture
def offline() -> Iterator[III]:
    client = III(_nowhere())
    try:
        yield client
    finally:
        client.shutdown()


async def _fill(client: III) -> None:
    """Fill the client's outbound queue with void calls (each returns once queued)."""
    await asyncio.gather(*(client.trigger_async(_void(n)) for n in range(MAX_QUEUE_SIZE)))
    assert len(client._conn._backlog) == MAX_QUEUE_SIZE


# ------------------------------------------------------------------ the call's timeout_ms bounds its wait for room


async def test_a_send_waits_for_room_at_most_its_own_bound_when_shorter() -> None:
    conn = Connection(_nowhere(), on_frame=lambda raw: None, max_queue=1, queue_wait=30.0)
    assert await conn.send("m0") is False  # queued: the queue is full now
    started = time.monotonic()
    with pytest.raises(OutboundQueueFullError, match=r"for 0\.2 s, the call's timeout_ms\b"):
        await conn.send("m1", wait=0.2)
    assert 0.15 < time.monotonic() - started < 5
    short = Connection(_nowhere(), on_frame=lambda raw: None, max_queue=1, queue_wait=0.1)
    await short.send("m0")
    with pytest.raises(OutboundQueueFullError, match=r"for 0\.1 s, the most a send waits for room\b"):
        await short.send("m1", wait=20.0)  # the connection's own bound is the shorter: it says so
    assert not conn._waiting and not short._waiting  # the refused frames left nothing behind
    await conn.close()
    await short.close()


async def test_a_void_trigger_async_on_a_full_queue_fails_at_its_timeout_ms(offline: III) -> None:
    await _fill(offline)
    started = time.monotonic()
    with pytest.raises(OutboundQueueFullError, match=r"stayed full \(1000 frames .*for 0\.3 s, the call's timeout_ms"):
        await asyncio.wait_for(offline.trigger_async(_void(-1, timeout_ms=300)), 10)  # before: 30 s
    assert time.monotonic() - started < 5


async def test_a_void_trigger_on_the_clients_own_loop_fails_at_its_timeout_ms(offline: III) -> None:
    await _fill(offline)
    on_loop = asyncio.run_coroutine_threadsafe(offline.trigger_async(_void(-1, timeout_ms=300)), offline._loop)
    started = time.monotonic()
    with pytest.raises(OutboundQueueFullError, match=r"for 0\.3 s, the call's timeout_ms"):
        await asyncio.wait_for(asyncio.wrap_future(on_loop), 10)
    assert time.monotonic() - started < 5


async def test_a_sync_void_trigger_on_a_full_queue_fails_at_its_timeout_ms(offline: III) -> None:
    await _fill(offline)
    started = time.monotonic()
    sync = asyncio.ensure_future(asyncio.to_thread(offline.trigger, _void(-1, timeout_ms=300)))
    done, _ = await asyncio.wait([sync], timeout=10)
    assert done, "the sync void trigger still waits for room past its timeout_ms"
    with pytest.raises(OutboundQueueFullError, match=r"for 0\.3 s, the call's timeout_ms"):
        sync.result()
    assert time.monotonic() - started < 5


async def test_an_enqueue_call_on_a_full_queue_never_waits_for_room(offline: III) -> None:
    """A call with an answer (enqueue's receipt) is refused at once when no queued call can make way for it."""
    await _fill(offline)
    started = time.monotonic()
    with pytest.raises(ConnectionLostError, match="never sent: the outbound queue was full"):
        await asyncio.wait_for(offline.trigger_async({"function_id": "nobody", "payload": {}, "timeout_ms": 20_000,
                                                      "action": TriggerAction.Enqueue(queue="q")}), 10)
    assert time.monotonic() - started < 5


async def test_a_void_call_without_timeout_ms_still_waits_for_room(offline: III) -> None:
    await _fill(offline)
    waiting = asyncio.ensure_future(offline.trigger_async(_void(-1)))
    await asyncio.sleep(0.5)  # a bounded look: no event marks "still waiting"
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


# ------------------------------------------------------------------ refused calls leave no reference cycle


REFUSED = 300


def _unreachable_garbage() -> int:
    """Objects in unreachable cycles now; freed. DEBUG_SAVEALL keeps them in ``gc.garbage`` to be counted, and
    clearing that list leaves their cycles whole: without a collection after it, the next count found them again
    (with the collector off between the two, as here, a measure counted everything the baseline had found)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        found = gc.collect()
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    gc.collect()
    return found


def _in_a_fresh_interpreter(measure: str) -> int:
    """What the coroutine function ``measure`` of this module returns (objects left in cycles), run with the cycle
    collector off in an interpreter of its own. In the suite's long-lived process, threads other tests left running
    (clients reconnecting, their loops) make garbage of their own at any time, which a collection here counted
    (302 and 315 objects in one CI run, fewer than 100 alone)."""
    script = (f"import asyncio, gc, importlib.util, sys; gc.disable(); "
              f"spec = importlib.util.spec_from_file_location('measured', {__file__!r}); "
              f"module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); "
              f"print(asyncio.run(module.{measure}()))")
    tests = Path(__file__).resolve().parents[2]
    paths = os.pathsep.join(filter(None, [str(tests), str(tests.parent), os.environ.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=25,
                          env={**os.environ, "PYTHONPATH": paths}, cwd=tests.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    return int(done.stdout.split()[-1])


@asynccontextmanager
async def _offline() -> AsyncIterator[III]:
    client = III(_nowhere())
    try:
        yield client
    finally:
        await client.shutdown_async()


async def _refused_at_a_full_queue() -> int:
    async with _offline() as offline:
        await _fill(offline)
        crowd = [asyncio.ensure_future(offline.trigger_async(_void(n))) for n in range(MAX_QUEUE_SIZE)]  # wait
        try:
            await until(lambda: len(offline._conn._waiting) == MAX_QUEUE_SIZE)
            _unreachable_garbage()
            refused = await asyncio.gather(*(offline.trigger_async(_void(n)) for n in range(REFUSED)),
                                           return_exceptions=True)
            assert all(isinstance(r, OutboundQueueFullError) for r in refused)
            del refused
            sync_refused = 0
            for n in range(20):  # the sync form (from a thread)
                try:
                    await asyncio.to_thread(offline.trigger, _void(n))
                except OutboundQueueFullError:
                    sync_refused += 1
            assert sync_refused == 20
            return _unreachable_garbage()
        finally:
            for call in crowd:
                call.cancel()
            await asyncio.gather(*crowd, return_exceptions=True)


def test_void_calls_refused_at_a_full_queue_are_freed_without_the_collector() -> None:
    garbage = _in_a_fresh_interpreter("_refused_at_a_full_queue")
    assert garbage < 100, f"{garbage} objects left in cycles by {REFUSED + 20} refused calls"  # before: ~14,000


async def _failed_once_reconnection_gave_up() -> int:
    client = III(_nowhere(), InitOptions(reconnection_config=ReconnectionConfig(max_retries=0)))
    try:
        await until(lambda: client._conn.gave_up)
        _unreachable_garbage()
        keyed = await asyncio.gather(*(client.trigger_async({"function_id": "nobody", "payload": n})
                                       for n in range(REFUSED)), return_exceptions=True)
        void = await asyncio.gather(*(client.trigger_async(_void(n)) for n in range(REFUSED)),
                                    return_exceptions=True)
        assert all(isinstance(r, ConnectionLostError) for r in keyed + void)
        del keyed, void
        return _unreachable_garbage()
    finally:
        await client.shutdown_async()


def test_calls_failed_once_reconnection_gave_up_are_freed_without_the_collector() -> None:
    garbage = _in_a_fresh_interpreter("_failed_once_reconnection_gave_up")
    assert garbage < 100, f"{garbage} objects left in cycles by {2 * REFUSED} failed calls"


async def _waits_for_room_that_ran_out() -> int:
    async with _offline() as offline:
        await _fill(offline)
        with pytest.raises(OutboundQueueFullError):  # the first one's one-time allocations
            await offline.trigger_async(_void(0, timeout_ms=5))
        _unreachable_garbage()
        ran_out = 0
        for n in range(100):
            try:
                await offline.trigger_async(_void(n, timeout_ms=5))
            except OutboundQueueFullError:
                ran_out += 1
        assert ran_out == 100
        return _unreachable_garbage()


def test_void_calls_whose_wait_for_room_ran_out_are_freed_without_the_collector() -> None:
    garbage = _in_a_fresh_interpreter("_waits_for_room_that_ran_out")
    # before: 2,899 (asyncio.timeout's __aexit__ frame, in the TimeoutError's traceback, kept the CancelledError)
    assert garbage < 100, f"{garbage} objects left in cycles by 100 waits for room that ran out"


async def _failed_sync_calls() -> int:
    # A sync call waits on a ThreadWaiter, which kept the error it raised: the error's traceback holds the frame of
    # wait(), which holds the waiter (before: about 13 objects per call left in cycles).
    client = III(_nowhere(), InitOptions(reconnection_config=ReconnectionConfig(max_retries=0)))
    try:
        await until(lambda: client._conn.gave_up)

        def calls() -> int:
            failed = 0
            for n in range(200):
                try:
                    client.trigger({"function_id": "nobody", "payload": n})
                except ConnectionLostError:
                    failed += 1
            return failed

        await asyncio.to_thread(calls)  # the first calls' one-time allocations (thread state, caches)
        _unreachable_garbage()
        assert await asyncio.to_thread(calls) == 200
        return _unreachable_garbage()
    finally:
        await client.shutdown_async()


def test_sync_calls_that_failed_are_freed_without_the_collector() -> None:
    garbage = _in_a_fresh_interpreter("_failed_sync_calls")
    assert garbage < 100, f"{garbage} objects left in cycles by 200 failed sync calls"


# ------------------------------------------------------------------ a burst of lost calls: bounded warnings


_MADE_WAY = re.compile(r"(\d+) queued call\(s\) made way")
_REFUSED = re.compile(r"(\d+) call\(s\) refused")


def _counted(records: list[logging.LogRecord], pattern: re.Pattern[str]) -> int:
    return sum(int(m.group(1)) for r in records if (m := pattern.search(r.getMessage())))


class _Lines(logging.Handler):
    """The connection's warnings, with an event set by each one."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.event.set()


@pytest.fixture
def lines() -> Iterator[_Lines]:
    handler = _Lines()
    logger = logging.getLogger("iii.connection")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


async def test_a_burst_of_calls_pushed_out_logs_one_line_and_an_exact_count(lines: _Lines) -> None:
    dropped: list[str] = []
    conn = Connection(_nowhere(), on_frame=lambda raw: None, max_queue=2, on_dropped=dropped.append)
    burst = 5000
    for n in range(burst):
        conn.send_soon(f"call-{n}", f"k{n}")  # each past the second pushes the oldest out
    assert len(dropped) == burst - 2
    assert len(lines.records) == 1 and _counted(lines.records, _MADE_WAY) == 1  # before: 4998 lines
    assert "latest: 'call-0'" in lines.records[0].getMessage()
    await conn.close()  # the interval's count, not logged yet, is logged now
    assert len(lines.records) == 2
    assert _counted(lines.records, _MADE_WAY) == len(dropped)  # every loss counted, once


async def test_a_lost_call_is_named_by_its_function_and_whole_invocation_id(lines: _Lines) -> None:
    # before: "latest: '{\"type\":\"invokefunction\",\"invocation_id\":\"1cc50391-…-3bb5d441eb09\"" (the frame's first
    # 80 characters: the function unseen)
    conn = Connection(_nowhere(), on_frame=lambda raw: None, max_queue=1, on_dropped=lambda key: None)
    calls = [(str(uuid.uuid4()), f"orders::pay-{n}") for n in range(2)]
    for invocation_id, function_id in calls:
        conn.send_soon(frames.invoke_function(function_id, {"n": 1}, invocation_id=invocation_id), invocation_id)
    (record,) = lines.records
    assert f"latest: 'orders::pay-0' (invocation '{calls[0][0]}')" in record.getMessage()
    await conn.close()


async def test_a_lost_calls_name_is_its_own_quoted_and_escaped(lines: _Lines) -> None:
    # a data field named function_id never names the call (the real id was past the name pattern's length), and
    # characters that split or reorder a log line are escaped (U+2028 made the warning read as two lines)
    for function_id, data in (("x" * 300, {"function_id": "admin::forged"}),
                              ("pay\u2028WARNING iii.connection: forged line", {})):
        conn = Connection(_nowhere(), on_frame=lambda raw: None, max_queue=1, on_dropped=lambda key: None)
        conn.send_soon(frames.invoke_function(function_id, data, invocation_id="i0"), "i0")
        conn.send_soon(frames.invoke_function("next", {}, invocation_id="i1"), "i1")
        await conn.close()
    messages = [record.getMessage() for record in lines.records if "latest: " in record.getMessage()]
    assert len(messages) == 2 and all(len(message.splitlines()) == 1 for message in messages), messages
    assert not any("admin::forged" in message for message in messages), messages
    assert messages[0].endswith(f"latest: '{'x' * 256}' (invocation 'i0')")
    assert messages[1].endswith(r"latest: 'pay\u2028WARNING iii.connection: forged line' (invocation 'i0')")


async def test_calls_refused_at_a_queue_full_of_void_calls_are_counted_per_interval(
    lines: _Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("iii.connection.DROP_LOG_INTERVAL_S", 0.3)
    dropped: list[str] = []
    conn = Connection(_nowhere(), on_frame=lambda raw: None, max_queue=2, on_dropped=dropped.append)
    await conn.send("void-a")
    await conn.send("void-b")
    for n in range(1000):
        conn.send_soon(f"call-{n}", f"k{n}")  # no call queued to push out: each is refused
    assert len(dropped) == 1000 and len(lines.records) == 1
    lines.event.clear()
    await asyncio.wait_for(lines.event.wait(), 5)  # the end of the interval logs the rest, unasked
    assert len(lines.records) == 2 and "latest" not in lines.records[1].getMessage()
    assert _counted(lines.records, _REFUSED) == 1000
    await conn.close()
    assert sum("Outbound queue full" in r.getMessage() for r in lines.records) == 2  # nothing left to log


async def test_a_burst_of_calls_while_the_engine_is_down_logs_a_bounded_number_of_lines(
    offline: III, lines: _Lines
) -> None:
    burst = 3000
    calls = [asyncio.ensure_future(offline.trigger_async({"function_id": "nobody", "payload": n,
                                                          "timeout_ms": 20_000})) for n in range(burst)]
    try:
        while sum(c.done() for c in calls) < burst - MAX_QUEUE_SIZE:
            await asyncio.wait([c for c in calls if not c.done()], timeout=10, return_when=asyncio.FIRST_COMPLETED)
        failed = [c for c in calls if c.done()]
        assert all(isinstance(c.exception(), ConnectionLostError) for c in failed)
        full = [r for r in lines.records if "Outbound queue full" in r.getMessage()]
        assert len(full) <= 2, f"{len(full)} lines for {len(failed)} calls pushed out"  # before: 2000
        assert _counted(full, _MADE_WAY) >= 1
    finally:
        for c in calls:
            c.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
