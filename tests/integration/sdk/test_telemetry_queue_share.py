"""Telemetry is best effort, a call is not: a full outbound queue drops a telemetry frame to make room for a call,
and telemetry never takes more than half of the queue. Before, 1,600 log records (one telemetry frame each) behind
a slow engine filled the queue and the next ``trigger`` failed with "never sent: the outbound queue was full"."""

from __future__ import annotations

import asyncio

from iii.connection import Connection
from tests.integration.sdk.test_connection import Recorder, recorder

__all__ = ["recorder"]  # the fixture, imported for pytest

_DOWN = "ws://127.0.0.1:1"  # never started: every frame waits in the queue


def _queued(conn: Connection) -> list[str | bytes]:
    return [frame for frame, _ in conn._backlog]


async def test_a_queue_flooded_with_telemetry_still_takes_a_call() -> None:
    dropped: list[str] = []
    conn = Connection(_DOWN, on_frame=lambda raw: None, on_dropped=dropped.append, max_queue=10)
    for n in range(40):
        conn.send_soon(f"LOGS{n}", droppable=True)
    conn.send_soon("call", "inv-1")
    assert dropped == [], "the call was refused while the queue held only telemetry"
    assert conn.queued_keys() == {"inv-1"}
    assert conn.dropped == 40 - 5  # telemetry got at most half the queue; the rest was counted as dropped
    await conn.close()


async def test_telemetry_never_takes_more_than_half_of_the_queue() -> None:
    conn = Connection(_DOWN, on_frame=lambda raw: None, max_queue=10)
    for n in range(10):
        conn.send_soon(f"LOGS{n}", droppable=True)
    assert _queued(conn) == [f"LOGS{n}" for n in range(5)]
    assert conn.dropped == 5
    for n in range(5):  # the other half is left to calls and the loop's own frames
        conn.send_soon(f"own{n}")
    assert len(_queued(conn)) == 10
    await conn.close()


async def test_a_full_queue_drops_the_oldest_telemetry_frame_before_any_call() -> None:
    dropped: list[str] = []
    conn = Connection(_DOWN, on_frame=lambda raw: None, on_dropped=dropped.append, max_queue=6)
    conn.send_soon("call0", "inv-0")
    for n in range(3):
        conn.send_soon(f"LOGS{n}", droppable=True)
    conn.send_soon("own0")
    conn.send_soon("call1", "inv-1")  # full now
    conn.send_soon("call2", "inv-2")
    assert await conn.send("void") is False  # a fire-and-forget frame takes a telemetry slot instead of waiting
    assert dropped == []
    assert _queued(conn) == ["call0", "LOGS2", "own0", "call1", "call2", "void"]
    assert conn.dropped == 2
    conn.send_soon("call3", "inv-3")
    assert conn.dropped == 3 and dropped == []
    conn.send_soon("call4", "inv-4")  # no telemetry left: the oldest call makes way, as before
    assert dropped == ["inv-0"]
    assert _queued(conn) == ["own0", "call1", "call2", "void", "call3", "call4"]
    await conn.close()


async def test_queued_telemetry_and_calls_go_out_in_order_on_connect(recorder: Recorder) -> None:
    ready = asyncio.Event()
    conn = Connection(recorder.url, on_frame=lambda raw: None, on_ready=ready.set, max_queue=4)
    conn.send_soon("LOGS0", droppable=True)
    conn.send_soon("call0", "inv-0")
    conn.send_soon("LOGS1", droppable=True)
    try:
        await conn.start()
        await asyncio.wait_for(ready.wait(), 10)
        conn.send_soon("LOGS2", droppable=True)
        await recorder.wait_for(lambda: len(recorder.frames) >= 4)
        assert recorder.frames == ["LOGS0", "call0", "LOGS1", "LOGS2"]
        assert conn.dropped == 0
    finally:
        await conn.close()
