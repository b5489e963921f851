"""Telemetry frames handed to the event loop from the exporter threads wait in one bounded buffer, taken by one
callback: before, each frame was a loop callback of its own, held without bound while the loop was busy (an attack
logging 3 MB records held 4.6 GB, and a call's answer waited 20 s behind 617 such callbacks)."""

from __future__ import annotations

import asyncio
import threading

from iii.telemetry_exporters import PREFIX_LOGS, SharedEngineConnection
from tests.polling import until

FRAMES = 3000
PAYLOAD = b"x" * 10_000  # 30 MB in all, twice what the buffer holds


async def test_frames_from_another_thread_wait_in_the_bounded_buffer() -> None:
    got: list[bytes] = []
    connection = SharedEngineConnection()
    connection.attach(got.append, asyncio.get_running_loop())

    def produce() -> None:
        for _ in range(FRAMES):
            connection.send_threadsafe(PREFIX_LOGS, PAYLOAD)

    thread = threading.Thread(target=produce)
    thread.start()
    thread.join()  # the loop is held meanwhile: nothing is taken before the producer is done
    await until(lambda: bool(got))
    await asyncio.sleep(0)  # (a second callback, had there been one, would have run by now)
    assert len(got) <= SharedEngineConnection.MAX_QUEUE
    assert sum(map(len, got)) <= SharedEngineConnection.MAX_QUEUE_BYTES
    assert connection._dropped == FRAMES - len(got)  # every frame is delivered or counted


async def test_frames_sent_on_the_loop_go_to_the_sink_at_once() -> None:
    got: list[bytes] = []
    connection = SharedEngineConnection()
    connection.attach(got.append, asyncio.get_running_loop())
    connection.send_threadsafe(PREFIX_LOGS, b"{}")
    assert got == [b"LOGS{}"]
