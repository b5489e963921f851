"""After the writer was closed, ``stream.write`` and ``stream.end(data)`` called on another thread's running loop
raise :class:`ChannelClosedError`, as ``send_message`` there and every call from a thread with no loop do. Before,
they raised ``ChannelLoopError`` (the loop was checked before the close), which names the wrong fault."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from iii.channels import ChannelClosedError
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)


def _on_a_loop_of_its_own(call: Callable[[], object]) -> BaseException | None:
    async def main() -> None:
        call()

    try:
        asyncio.run(main())
    except Exception as exc:
        return exc
    return None


async def test_stream_calls_after_the_close_from_another_loop_raise_closed() -> None:
    async with local_channel() as ch:
        writer = ch.writer
        await writer.write(b"x")
        writer.stream.end()
        assert await asyncio.wait_for(ch.reader.read_all(), 10) == b"x"
        for call in (lambda: writer.stream.write(b"late"), lambda: writer.stream.end(b"late"),
                     lambda: writer.send_message("late")):
            error = await asyncio.wait_for(asyncio.to_thread(_on_a_loop_of_its_own, call), 10)
            assert isinstance(error, ChannelClosedError), repr(error)  # before: ChannelLoopError for the first two
            assert "closed" in str(error)
