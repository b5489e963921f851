"""A frame sent with ``Connection.send_on_this_connection`` (the bridge's ``fire``) at an outbound queue full behind
a stalled engine: queued telemetry makes way for it, as it does for a call, instead of the frame being refused with
"never sent: the outbound queue is full" while half of the queue held nothing but telemetry."""

from __future__ import annotations

import asyncio

import pytest

from iii import ReconnectionConfig
from iii.connection import _BEST_EFFORT, Connection
from iii.errors import ConnectionLostError
from tests.integration.sdk.test_hbr_send_on_this_connection import Recorder, connected, recorder, stall

__all__ = ["recorder"]  # the fixture, imported for pytest


async def test_telemetry_makes_way_for_a_frame_pinned_to_the_socket_at_a_full_queue(recorder: Recorder) -> None:
    conn = await connected(recorder, max_queue=10)
    try:
        await stall(recorder, conn)
        while len(conn._backlog) < conn._max_queue:
            if conn._best_effort < 5:
                conn.send_soon("LOGS", droppable=True)
            else:
                conn.send_soon("own")
        dropped_before = conn.dropped
        pinned = asyncio.ensure_future(conn.send_on_this_connection("pinned"))
        await asyncio.sleep(0)  # handed over (the task's first step)
        assert not pinned.done(), pinned  # queued, not refused
        assert conn.dropped == dropped_before + 1  # the oldest telemetry frame made way, counted
        assert conn._best_effort == sum(1 for _, key in conn._backlog if key is _BEST_EFFORT)
        recorder.connections[0].transport.resume_reading()
        assert await asyncio.wait_for(pinned, 10) is True
        await recorder.wait_for(lambda: "pinned" in recorder.texts())
        assert recorder.texts()[-1] == "pinned"  # behind everything handed over before it
    finally:
        await conn.close()


async def test_after_giving_up_a_send_at_a_queue_full_with_telemetry_is_refused_not_queued_for_nothing() -> None:
    """Reconnection gave up: a fire-and-forget frame is refused (its sender hears it was never sent) even when the
    full queue holds telemetry that could make way; queued, it would wait for a connection nothing will make."""
    failed = asyncio.Event()
    conn = Connection("ws://127.0.0.1:1", on_frame=lambda raw: None, max_queue=4,
                      on_state=lambda state: failed.set() if state == "failed" else None,
                      reconnection=ReconnectionConfig(max_retries=0, initial_delay_ms=1, max_delay_ms=1))
    try:
        for n in range(2):
            conn.send_soon(f"LOGS{n}", droppable=True)
            conn.send_soon(f"own{n}")
        await conn.start()
        await asyncio.wait_for(failed.wait(), 10)
        with pytest.raises(ConnectionLostError, match="never sent"):
            await conn.send("void")
        assert [frame for frame, _ in conn._backlog] == ["LOGS0", "own0", "LOGS1", "own1"]
        assert conn.dropped == 0
    finally:
        await conn.close()
