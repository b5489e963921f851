"""``writer.stream.write`` / ``end`` take bytes-like data only, as ``ChannelSink.write`` and the reference do:
``bytes(data)`` sent five zero bytes for ``5`` and b'\\x01\\x02' for ``[1, 2]``. Refused with ``TypeError``
(the reference's exception) before anything is queued, with a loop running or none; the writer stays usable."""

from __future__ import annotations

import asyncio

import pytest

from iii.channels import ChannelWriter
from iii_channels import ChannelSource
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)

_NOT_BYTES = [5, [1, 2], 1.5, None]  # a str is a text message (tests/unit/channels/test_writes_of_text.py)


def _refused_everywhere(writer: ChannelWriter) -> list[str]:
    messages = []
    for value in _NOT_BYTES:
        for call in (writer.stream.write, writer.stream.end):
            if call == writer.stream.end and value is None:
                continue  # end() with no data: just the close
            with pytest.raises(TypeError) as caught:
                call(value)  # type: ignore[arg-type]
            messages.append(str(caught.value))
    return messages


@pytest.mark.parametrize("loop_running", [True, False])
async def test_non_bytes_data_is_refused_and_nothing_is_sent(loop_running: bool) -> None:
    async with local_channel() as ch:
        writer = ch.writer

        def use() -> list[str]:
            messages = _refused_everywhere(writer)
            writer.stream.write(bytearray(b"ab"))
            writer.stream.end(memoryview(b"--cd")[2:])
            return messages

        # no loop running: the sync calls run the writer on its private loop, in this thread
        messages = use() if loop_running else await asyncio.to_thread(use)
        assert await asyncio.wait_for(ChannelSource(ch.reader).read_all(), 10) == b"abcd"  # before: b'\x00' * 5...
        assert "WritableStream.write takes bytes-like data or a str (sent as a text message), not int" in messages
        assert "WritableStream.end takes bytes-like data or a str (sent as a text message), not list" in messages
