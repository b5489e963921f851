"""``to_process`` with a command that exits 0 without reading all of its input says it stopped reading: the error
said "failed with exit status 0", which hides why the rest of the stream went nowhere."""

from __future__ import annotations

import asyncio

import pytest

from iii.channels import ChannelWriter
from iii_channels import ChannelSink, ProcessError, to_process
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)


async def _feed(writer: ChannelWriter) -> None:
    async with ChannelSink(writer) as out:
        for _ in range(64):
            await out.write(b"z" * 65536)


@pytest.mark.parametrize("command", ["head -c 100 >/dev/null", "exec 0<&-; exit 0"])
async def test_a_command_that_stops_reading_is_named_so(command: str) -> None:
    async with local_channel() as ch:
        feeding = asyncio.ensure_future(_feed(ch.writer))
        with pytest.raises(ProcessError) as caught:
            await to_process(ch.reader, ["sh", "-c", command])
        message = str(caught.value)
        assert "stopped reading its input before the end of the stream" in message, message
        assert "failed with" not in message  # before: "... failed with exit status 0"
        assert caught.value.returncode == 0
        await asyncio.gather(feeding, return_exceptions=True)  # the writer hears the reader left


async def test_a_non_zero_exit_still_names_its_status() -> None:
    async with local_channel() as ch:
        feeding = asyncio.ensure_future(_feed(ch.writer))
        with pytest.raises(ProcessError, match="failed with exit status 3"):
            await to_process(ch.reader, ["sh", "-c", "head -c 100 >/dev/null; exit 3"])
        await asyncio.gather(feeding, return_exceptions=True)
