"""``ChannelSource.read_all`` stopped by its ``idle_timeout`` (:class:`ChannelIdleError`, a ``TimeoutError``) puts
what it had read back for the next read, as the same read cut by ``asyncio.wait_for`` does: a retried ``read_all``
returns the whole stream, not its second half."""

from __future__ import annotations

import asyncio

import pytest

from iii_channels import ChannelIdleError, ChannelSource
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)


async def test_read_all_that_meets_the_idle_timeout_puts_what_it_read_back() -> None:
    async with local_channel() as ch:
        source = ChannelSource(ch.reader, idle_timeout=0.3)
        await ch.writer.write(b"first-half ")
        with pytest.raises(ChannelIdleError, match=r"nothing from the writer for 0.3 s \(after 11 bytes\)") as caught:
            await asyncio.wait_for(source.read_all(), 10)
        # Put back for the next read, as a cancelled read_all does: none of it is the caller's twice.
        assert caught.value.partial == b""
        await ch.writer.write(b"second-half")
        await ch.writer.close_async()
        # Before: b"second-half" (the first half was only in .partial, so the retry returned half a stream).
        assert await asyncio.wait_for(source.read_all(), 10) == b"first-half second-half"
