"""Attacks on the relay reader's shared steps (3db0f44): LocalReader.recv through LiveChannel.reader_next."""

from __future__ import annotations

import asyncio

import pytest
from websockets.exceptions import ConnectionClosed

from iii_engine.channels import ChannelRelay, LocalChannelEnd


def _open(relay: ChannelRelay, ref: dict[str, str]) -> LocalChannelEnd:
    return relay.open_local(ref["channel_id"], ref["access_key"], ref["direction"])


async def test_a_reader_closed_while_another_task_waits_in_recv() -> None:
    relay = ChannelRelay()
    refs = relay.create(4, owner=None)
    reader = _open(relay, refs["reader"])
    writer = _open(relay, refs["writer"])
    waiting = asyncio.ensure_future(reader.recv())
    await asyncio.sleep(0)  # the task is inside recv, waiting for data
    await reader.close()
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(waiting, 5)
    # the writer is told the reader left; nothing it sends is taken by the closed reader
    with pytest.raises(ConnectionClosed):
        for _ in range(100):
            await asyncio.wait_for(writer.send(b"x"), 5)
    with pytest.raises(ConnectionClosed):
        await reader.recv()
