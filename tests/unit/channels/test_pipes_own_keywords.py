"""``from_process(w, cmd, stderr=DEVNULL)`` / ``to_process(r, cmd, stdin=…)`` failed inside asyncio with a raw
``TypeError: … got multiple values for keyword argument 'stderr'``: the adapters set those pipes themselves. They
are refused by name now, before the command starts, and the other end hears at once."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from iii.channels import ChannelAbortedError
from iii_channels import ReaderGoneError, from_process, to_process
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("keyword", ["stdout", "stderr"])
async def test_from_process_refuses_its_own_pipes_by_name(keyword: str) -> None:
    async with local_channel() as ch:
        reading = asyncio.ensure_future(ch.reader.read_all())
        with pytest.raises(TypeError, match=f"from_process sets the command's {keyword} itself .* {keyword}= cannot"):
            await from_process(ch.writer, ["echo", "hi"], **{keyword: subprocess.DEVNULL})
        with pytest.raises(ChannelAbortedError):
            await asyncio.wait_for(reading, 10)


@pytest.mark.parametrize("keyword", ["stdin", "stderr"])
async def test_to_process_refuses_its_own_pipes_by_name(keyword: str) -> None:
    async with local_channel() as ch:
        async def write() -> None:
            while True:  # until the reader is released: backpressure holds it otherwise
                await ch.writer.write(b"x" * 65536)

        writing = asyncio.ensure_future(write())
        with pytest.raises(TypeError, match=f"to_process sets the command's {keyword} itself .* {keyword}= cannot"):
            await to_process(ch.reader, ["cat"], **{keyword: subprocess.DEVNULL})
        with pytest.raises(ReaderGoneError):
            await asyncio.wait_for(writing, 10)


async def test_to_process_still_takes_stdout() -> None:
    async with local_channel() as ch:
        async def write() -> None:
            await ch.writer.write(b"abc")
            await ch.writer.close_async()

        fed, _ = await asyncio.gather(to_process(ch.reader, ["cat"], stdout=subprocess.DEVNULL), write())
    assert fed == 3
