"""Random mixes of write sizes through the engine arrive byte for byte (SHA-256 compared), with the relay's
guessed whole-frame reads and one-send large frames at work (the engine invites frames of up to 960 KiB): sizes
that repeat, sizes one off the guess, empty writes, text messages between, a reader that keeps up and one that
lags (the relay's socket to it then takes part of a large frame and its transport the rest)."""

from __future__ import annotations

import asyncio
import hashlib
import random

import pytest

from iii.channels import ChannelReader, ChannelWriter
from iii_engine import Engine
from iii_engine.server import FRAME_INVITATION

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("a random mix against our relay's fast path")]


def _sizes(rng: random.Random, total: int) -> list[int]:
    base = rng.choice([FRAME_INVITATION, FRAME_INVITATION + 65536, 65536, 300_000])
    sizes: list[int] = []
    while sum(sizes) < total:
        pick = rng.random()
        if pick < 0.4:
            sizes.append(base)
        elif pick < 0.55:
            sizes.append(base + rng.choice([-14, -10, -1, 1, 10, 14]))
        elif pick < 0.65:
            sizes.append(0)
        elif pick < 0.8:
            sizes.append(rng.randint(1, 300))
        else:
            sizes.append(rng.randint(1, 3 << 20))
    return sizes


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("lagging", [False, True], ids=["keeps-up", "lags"])
async def test_random_write_sizes_arrive_byte_for_byte(engine: Engine, seed: int, lagging: bool) -> None:
    rng = random.Random(seed)
    refs = engine.channels.create(None, owner=None)
    writer, reader = ChannelWriter(engine.url, refs["writer"]), ChannelReader(engine.url, refs["reader"])
    sizes = _sizes(rng, 24 << 20)
    sent = hashlib.sha256()
    texts: list[str] = []

    async def send() -> None:
        for number, size in enumerate(sizes):
            data = rng.randbytes(size)
            sent.update(data)
            await writer.write(data)
            if number % 7 == 3:
                texts.append(f"note {number}")
                await writer.send_message_async(texts[-1])
        await writer.close_async()

    got = hashlib.sha256()
    received = 0
    heard: list[str] = []

    async def receive() -> None:
        nonlocal received
        while (message := await reader.recv()) is not None:
            if isinstance(message, str):
                heard.append(message)
                continue
            got.update(message)
            received += len(message)
            if lagging:
                await asyncio.sleep(0.002)  # pacing, not waiting: the relay's socket to us fills meanwhile

    await asyncio.wait_for(asyncio.gather(send(), receive()), 25)
    assert received == sum(sizes)
    assert got.hexdigest() == sent.hexdigest()
    assert heard == texts
