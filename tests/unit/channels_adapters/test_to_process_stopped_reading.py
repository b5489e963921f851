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


async def test_a_command_that_stops_taking_its_input_without_exiting_is_killed_after_idle_timeout() -> None:
    async with local_channel() as ch:
        feeding = asyncio.ensure_future(_feed(ch.writer))  # 4 MiB: more than the pipe holds
        began = asyncio.get_running_loop().time()
        with pytest.raises(ProcessError) as caught:
            # before: waited for good, exit_timeout counting only once its stdin is closed, which never came
            await to_process(ch.reader, ["sleep", "3600"], exit_timeout=0.5, idle_timeout=0.5)
        took = asyncio.get_running_loop().time() - began
        message = str(caught.value)
        assert "stopped taking its input (its stdin took none of the bytes offered for 0.5 s (idle_timeout)" in \
            message, message
        assert "it was killed" in message and took < 10, (message, took)
        await asyncio.gather(feeding, return_exceptions=True)


async def test_to_fd_into_a_pipe_nobody_reads_fails_after_idle_timeout() -> None:
    import os

    from iii_channels import OutputIdleError, to_fd

    read_end, write_end = os.pipe()
    try:
        async with local_channel() as ch:
            feeding = asyncio.ensure_future(_feed(ch.writer))
            with pytest.raises(OutputIdleError) as caught:
                await to_fd(ch.reader, write_end, idle_timeout=0.5)  # before: waited for good
            assert "took none of the bytes offered for 0.5 s (idle_timeout), after" in str(caught.value)
            await asyncio.gather(feeding, return_exceptions=True)  # the writer is released
    finally:
        os.close(read_end)
        os.close(write_end)
