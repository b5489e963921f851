"""An abort awaited on another loop while a sync write runs the writer's private loop in another thread, bytes
moving: the abort is handed to that running loop, its Close frame cuts the write short, and the write's end
releases the private loop. That release cancelled the abort's close handshake and closed the loop with the
writer's socket still open: nothing could close it any more, and it stayed open until collected (a socket
ResourceWarning; the engine kept the connection until then).
"""

from __future__ import annotations

import asyncio

import pytest

from iii.channels import ChannelAbortedError, ChannelClosedError, ChannelReader
from iii_engine.channels import ChannelRelay

from .test_sync_calls import _ends, _in_thread


async def _read_until_the_end(reader: ChannelReader, first: asyncio.Event) -> None:
    async for _ in reader:
        first.set()


async def test_an_abort_handed_to_a_moving_sync_write_closes_the_writers_socket(
        relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = _ends(*relay)
    first = asyncio.Event()
    reading = asyncio.ensure_future(_read_until_the_end(reader, first))
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            for _ in range(400):  # far more than the test lets through: cut short by the abort
                writer.stream.write(bytes(256 << 10))
        except ChannelClosedError as exc:
            failure.append(exc)

    producing = asyncio.ensure_future(_in_thread(produce))
    await asyncio.wait_for(first.wait(), 10)
    await asyncio.wait_for(writer.abort("stopped from elsewhere"), 10)
    await asyncio.wait_for(producing, 10)
    assert [type(exc) for exc in failure] == [ChannelClosedError]
    with pytest.raises(ChannelAbortedError):
        await asyncio.wait_for(reading, 10)
    assert writer._home.loop is not None and writer._home.loop.is_closed()
    assert writer._end is not None
    assert writer._end.ws.transport.get_extra_info("socket").fileno() == -1  # closed, not left to the collector
