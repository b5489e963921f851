"""Telemetry frames handed to the event loop from the exporter threads wait in one bounded buffer, taken by one
callback: before, each frame was a loop callback of its own, held without bound while the loop was busy (an attack
logging 3 MB records held 4.6 GB, and a call's answer waited 20 s behind 617 such callbacks)."""

from __future__ import annotations

import asyncio
import threading

from iii.telemetry_exporters import FLUSH_TURN_FRAMES, PREFIX_LOGS, SharedEngineConnection
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
    await until(lambda: len(got) + connection._dropped == FRAMES)  # every frame is delivered or counted
    assert len(got) <= SharedEngineConnection.MAX_QUEUE
    assert sum(map(len, got)) <= SharedEngineConnection.MAX_QUEUE_BYTES


async def test_a_flush_hands_a_few_frames_a_loop_turn() -> None:
    """All at once, 1,000 frames overflowed the connection's share for telemetry in one turn (a burst of 2,000
    small records from one thread stored a median 606 of them, 2,000 before the buffer)."""
    turns: list[int] = []
    connection = SharedEngineConnection()
    connection.attach(lambda frame: turns.append(len(turns)), asyncio.get_running_loop())
    sizes: list[int] = []
    thread = threading.Thread(target=lambda: [connection.send_threadsafe(PREFIX_LOGS, b"{}") for _ in range(300)])
    thread.start()
    thread.join()
    while len(turns) < 300:
        before = len(turns)
        await asyncio.sleep(0)  # one loop turn
        sizes.append(len(turns) - before)
    assert max(sizes) <= FLUSH_TURN_FRAMES and len([n for n in sizes if n]) >= 300 // FLUSH_TURN_FRAMES


async def test_a_flush_lost_with_a_closed_loop_does_not_stop_later_ones() -> None:
    """A flush scheduled on a loop that closed left its flag set for good: every later frame was buffered and never
    delivered (0 of 2,000 after a hand-over)."""
    connection = SharedEngineConnection()
    closed = asyncio.new_event_loop()
    closed.close()
    connection.attach(lambda frame: None, closed)
    sender = threading.Thread(target=connection.send_threadsafe, args=(PREFIX_LOGS, b"{}"))
    sender.start()
    sender.join()
    got: list[bytes] = []
    connection.attach(got.append, asyncio.get_running_loop())  # handed over, as a surviving client takes it
    thread = threading.Thread(target=lambda: [connection.send_threadsafe(PREFIX_LOGS, b"[]") for _ in range(100)])
    thread.start()
    thread.join()
    await until(lambda: got.count(b"LOGS[]") == 100)


async def test_frames_sent_on_the_loop_go_to_the_sink_at_once() -> None:
    got: list[bytes] = []
    connection = SharedEngineConnection()
    connection.attach(got.append, asyncio.get_running_loop())
    connection.send_threadsafe(PREFIX_LOGS, b"{}")
    assert got == [b"LOGS{}"]
