"""A writer flooding empty (or tiny) messages into a channel nobody reads is stopped like any other: each unread
message counts its payload plus ``MESSAGE_CHARGE`` against the socket's receive buffer. Counted by payload alone,
empty messages never paused the writer's socket (an engine went from 68 MB to 1.1 GB in 20 s) and 1-byte messages
held ~480 MB per channel before it paused."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import websockets

from iii.channels import build_channel_url
from iii.ws_fastpath import MESSAGE_CHARGE, RECEIVE_CHUNK, _FastReceive
from iii_engine.channels import ChannelRelay

from .relay_server import relay_server

FRAMES = 200_000


@pytest.mark.parametrize("payload", [b"", b"x"], ids=["empty", "one-byte"])
async def test_a_flood_of_tiny_messages_pauses_the_writer_socket(monkeypatch: pytest.MonkeyPatch,
                                                                 payload: bytes) -> None:
    seen: list[_FastReceive] = []
    deliver = _FastReceive._deliver

    def watched(self: _FastReceive, *args: Any) -> None:
        if self not in seen:
            seen.append(self)
        deliver(self, *args)

    monkeypatch.setattr(_FastReceive, "_deliver", watched)
    # No reader attaches (its deadline is far off): the channel's queue fills, then the writer's socket holds the rest
    async with relay_server(ChannelRelay(attach_timeout_s=60.0)) as (base, relay):
        ref = relay.create(3, owner="w")["writer"]
        writer = await websockets.connect(
            build_channel_url(base, ref["channel_id"], ref["access_key"], ref["direction"]),
            ping_interval=None, compression=None)
        try:
            # binary frames, masked with a zero key (payload as is): 6-7 bytes each on the wire
            writer.transport.write((b"\x82" + bytes([0x80 | len(payload)]) + b"\0\0\0\0" + payload) * FRAMES)

            def settled() -> bool:  # paused, or every frame read and held (before)
                return any(conn._paused or len(conn._inbox) >= FRAMES - 10 for conn in seen)

            for _ in range(2000):  # the engine reads what arrives; at most 20 s
                if settled():
                    break
                await asyncio.sleep(0.01)
            (conn,) = seen
            held = len(conn._inbox)
            assert conn._paused, f"{held:,} unread messages and the writer's socket was never paused"
            # paused once over its mark; what one read brought (at most RECEIVE_CHUNK's 1 MiB) is held past it
            most = conn._high // (MESSAGE_CHARGE + len(payload)) + RECEIVE_CHUNK[1] // (6 + len(payload))
            assert held <= most, (held, most)
        finally:
            writer.transport.abort()
