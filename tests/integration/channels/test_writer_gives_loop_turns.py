"""A channel writer whose reader keeps up still lets its event loop run other tasks: websockets' drain gives the
loop a turn only while the socket's buffer is over its mark, and a writer looping on writes kept its loop from
everything else, its reader's leaving included (a REST client gone was heard by its handler 10 s late)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable

import pytest

from iii import register_worker
from iii.channels import ChannelWriter
from iii.iii_types import StreamChannelRef
from iii.ws_fastpath import YIELD_EVERY_S
from tests.conftest import EngineProcess

pytestmark = pytest.mark.our_engine("starts our engine as a process")

READER = r"""
import asyncio, json, sys
from iii.channels import ChannelReader
from iii.iii_types import StreamChannelRef

async def main():
    size = 0
    async for chunk in ChannelReader(sys.argv[1], StreamChannelRef(**json.loads(sys.argv[2]))):
        size += len(chunk)
    print(size)

asyncio.run(main())
"""

CHUNK = b"x" * 65536
CHUNKS = 3000  # ~190 MiB, each write after 0.3 ms of work: slow enough for a reader in a process of its own
BUSY_S = 0.0003


async def test_a_writer_whose_reader_keeps_up_gives_its_loop_turns(
        engine_process: Callable[..., Awaitable[EngineProcess]]) -> None:
    engine = await engine_process()
    worker = await asyncio.to_thread(register_worker, engine.url)
    try:
        channel = await asyncio.to_thread(worker.create_channel)
        reader = await asyncio.create_subprocess_exec(
            sys.executable, "-c", READER, engine.url, json.dumps(channel.reader_ref.model_dump()),
            stdout=asyncio.subprocess.PIPE)
        writer = ChannelWriter(engine.url, StreamChannelRef(**channel.writer_ref.model_dump()))
        late: list[float] = []
        writing = True

        async def tick() -> None:
            while writing:
                asked = time.monotonic()
                await asyncio.sleep(0.001)
                late.append(time.monotonic() - asked)

        ticker = asyncio.ensure_future(tick())
        started = time.monotonic()
        for _ in range(CHUNKS):
            busy_until = time.perf_counter() + BUSY_S
            while time.perf_counter() < busy_until:
                pass
            await writer.write(CHUNK)
        took = time.monotonic() - started
        writing = False
        await ticker
        await writer.close_async()
        out, _ = await asyncio.wait_for(reader.communicate(), 20)
        assert int(out) == len(CHUNK) * CHUNKS
        # before: one tick, as late as the whole write (1-3 s), or none at all
        assert len(late) >= 5 and max(late) < max(0.5, 40 * YIELD_EVERY_S), (len(late), max(late, default=None),
                                                                             took)
    finally:
        await asyncio.to_thread(worker.shutdown)
