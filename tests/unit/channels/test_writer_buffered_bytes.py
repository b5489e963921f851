"""``ChannelWriter.buffered_bytes``: what the writer's connection still holds for a peer that does not take it (the
CLI's stall watch reads it instead of the SDK's private socket end)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from iii.channels import ChannelError, ChannelWriter

from .raw_ws_server import raw_ws_server, write_until_stuck

pytestmark = pytest.mark.timeout(30)


async def test_bytes_held_for_a_peer_that_does_not_read_show_until_the_connection_goes() -> None:
    async with raw_ws_server(reads=False) as (base, _):
        writer = ChannelWriter(base, {"channel_id": "c-held", "access_key": "k", "direction": "write"})
        assert writer.buffered_bytes == 0  # not connected
        write = await write_until_stuck(writer)
        held = writer.buffered_bytes
        assert held > 0
        await asyncio.sleep(0)
        assert writer.buffered_bytes == held  # nothing moves: the peer takes nothing
        end = writer._end
        assert end is not None
        end.abort()
        with contextlib.suppress(ChannelError):
            await asyncio.wait_for(write, 5)
        assert writer.buffered_bytes == 0  # dropped with the connection
