"""A write after the engine closed the writer for a message over its ``max_message_size`` (1009) raises the
channel's :class:`ChannelConnectionError`, every time. Before, the first one raised ``AttributeError: 'NoneType'
object has no attribute 'call_soon'``: websockets' send aborts the transport of a closed connection, and asyncio's
socket transport, lost after it wrote out its buffer, fails that abort."""

from __future__ import annotations

import asyncio
import logging

import pytest

from iii.channels import ChannelAbortedError, ChannelConnectionError, ChannelReader, ChannelWriter
from iii_engine import Engine
from iii_engine.config import ChannelSettings
from tests.conftest import engine_test_config

pytestmark = pytest.mark.timeout(30)


async def test_a_write_after_a_1009_raises_the_channel_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL)  # the engine logs the refused message
    config = engine_test_config(channels=ChannelSettings(max_message_size=1 << 20))
    async with Engine(config=config) as engine:
        refs = engine.channels.create(None, owner=None)
        writer, reader = ChannelWriter(engine.url, refs["writer"]), ChannelReader(engine.url, refs["reader"])
        reading = asyncio.ensure_future(reader.read_all())
        await writer.send_message_async("x" * (4 << 20))  # one message, never cut: 4 MiB, over the limit
        end = writer._end
        assert end is not None
        await asyncio.wait_for(asyncio.shield(end.ws.connection_lost_waiter), 10)  # the engine closed it: gone
        for _ in range(2):
            with pytest.raises(ChannelConnectionError, match="closed abnormally with code 1009"):
                await writer.write(b"tail")
        with pytest.raises(ChannelAbortedError):
            await asyncio.wait_for(reading, 10)
