"""Our engine invites 1 MiB frames (issue 10): a writer's 1 MiB writes cross the relay as one frame each, not as a
960 KiB frame and a 64 KiB one (twice the relay's work per frame), and a frame of that size keeps its buffers on the
engine's heap (under its pinned mmap threshold, where glibc would map and unmap each one)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from iii.channels import ChannelReader, ChannelWriter
from iii.ws_fastpath import FRAME_BUFFER
from iii_engine import Engine
from iii_engine.allocator import MMAP_THRESHOLD_BYTES
from iii_engine.server import FRAME_INVITATION
from tests.conftest import engine_test_config

pytestmark = pytest.mark.our_engine("the frame-size header is our engine's extension")

MIB = 1 << 20


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    async with Engine(config=engine_test_config()) as running:
        yield running


async def test_a_mib_write_reaches_the_reader_as_one_message(engine: Engine) -> None:
    refs = engine.channels.create(None, owner=None)
    writer, reader = ChannelWriter(engine.url, refs["writer"]), ChannelReader(engine.url, refs["reader"])
    blocks = [os.urandom(MIB) for _ in range(3)]
    chunks: list[bytes] = []

    async def send() -> None:
        for block in blocks:
            await writer.write(block)
        await writer.close_async()

    async def receive() -> None:
        # The relay forwards each frame as one message: the chunks are the writer's frames.
        while (message := await reader.recv()) is not None:
            assert isinstance(message, bytes)
            chunks.append(message)

    await asyncio.wait_for(asyncio.gather(send(), receive()), 20)
    # before: [983040, 65536] per write
    assert chunks == blocks


def test_a_mib_frame_keeps_its_buffers_under_the_engines_mmap_threshold() -> None:
    # The frame being received (header and mask key included) and its payload as bytes (CPython's header: 33 bytes).
    assert FRAME_INVITATION == MIB
    assert FRAME_BUFFER >= FRAME_INVITATION + 14
    assert max(FRAME_BUFFER, FRAME_INVITATION + 64) < MMAP_THRESHOLD_BYTES
