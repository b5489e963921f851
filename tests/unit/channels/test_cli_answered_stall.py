"""``iii-channel send`` after the function answered: an upload whose bytes stop moving is given up, a slow source
or a slow reader is not.

The stall window is shortened here; ``test_cli_send_stall`` runs ``--stall-timeout`` end to end.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from iii.channels import ChannelReader, ChannelWriter
from iii_channels import cli
from iii_engine.channels import ChannelRelay

from .relay_server import relay_server

WINDOW_S = 0.2


async def test_a_write_nobody_takes_is_a_stall() -> None:
    async with relay_server(ChannelRelay(attach_timeout_s=20.0)) as (base, relay):
        refs = relay.create(None, owner=None)
        writer = cli._WatchedWriter(base, refs["writer"])

        async def upload() -> int:
            while True:  # no reader: the relay's buffers fill, then a write waits
                await writer.write(bytes(1 << 20))

        transfer = asyncio.ensure_future(upload())
        try:
            assert await asyncio.wait_for(cli._ended(transfer, writer, WINDOW_S), 20) is False
            assert not transfer.done()
            since = writer.waiting_since()
            assert since is not None and time.monotonic() - since >= WINDOW_S
            assert writer.bytes_written > 0  # it did move before it stopped
        finally:
            relay.discard(refs["writer"]["channel_id"])  # closes the writer at once (an abort would wait 2 s)
            transfer.cancel()
            await asyncio.gather(transfer, return_exceptions=True)
        assert writer.waiting_since() is None  # nothing under way any more


async def test_a_silent_source_is_not_a_stall() -> None:
    """Stdin quiet for many windows while nothing waits on the socket: the upload is still waited for."""
    writer = cli._WatchedWriter("ws://127.0.0.1:1", {"channel_id": "c", "access_key": "k", "direction": "write"})
    loop = asyncio.get_running_loop()
    transfer: asyncio.Future[int] = loop.create_future()
    loop.call_later(5 * WINDOW_S, transfer.set_result, 7)  # the source's next bytes, then its end
    assert await asyncio.wait_for(cli._ended(transfer, writer, WINDOW_S), 10) is True
    assert transfer.result() == 7


async def test_a_reader_that_moves_slower_than_one_write_is_not_a_stall() -> None:
    """Each write waits longer than the window for a reader that reads steadily but slowly: the bytes move all the
    while, so the upload goes on (the rule "one write waited the window" gave it up)."""
    window_s, rate, block, blocks = 0.5, 32_000_000, 32 << 20, 3
    async with relay_server(ChannelRelay(attach_timeout_s=20.0)) as (base, relay):
        refs = relay.create(None, owner=None)
        writer = cli._WatchedWriter(base, refs["writer"])
        reader = ChannelReader(base, refs["reader"])
        waits: list[float] = []

        async def upload() -> int:
            for _ in range(blocks):
                started = time.monotonic()
                await writer.write(bytes(block))
                waits.append(time.monotonic() - started)
            await writer.close_async()
            return writer.bytes_written

        async def read_slowly() -> int:
            started, count = time.monotonic(), 0
            while (chunk := await reader.read_chunk()) is not None:
                count += len(chunk)
                ahead = count / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)  # the reader's pace, not a synchronisation
            return count

        reading = asyncio.ensure_future(read_slowly())
        transfer = asyncio.ensure_future(upload())
        try:
            assert await asyncio.wait_for(cli._ended(transfer, writer, window_s), 25) is True
            assert transfer.result() == blocks * block
            assert await asyncio.wait_for(reading, 10) == blocks * block
        finally:
            relay.discard(refs["writer"]["channel_id"])  # a failure must not leave the relay waiting for the ends
            for task in (transfer, reading):
                task.cancel()
            await asyncio.gather(transfer, reading, return_exceptions=True)
        assert max(waits) > window_s, waits  # a write did wait longer than the window: the case under test


async def test_a_tiny_stall_timeout_does_not_spin() -> None:
    # --stall-timeout 1e-300 passes the flag's check; the watch then polled every 1e-301 s: a busy loop on a core
    # for the whole transfer.
    writer = cli._WatchedWriter("ws://127.0.0.1:1", {"channel_id": "c", "access_key": "k", "direction": "write"})
    looks = 0
    moved = writer.moved

    def counting() -> object:
        nonlocal looks
        looks += 1
        return moved()

    writer.moved = counting  # type: ignore[method-assign]
    transfer = asyncio.ensure_future(asyncio.sleep(0.2, result=0))  # a slow source: nothing waits on the socket
    assert await asyncio.wait_for(cli._ended(transfer, writer, 1e-300), 5) is True
    assert looks <= 30, looks  # a look every 10 ms at most


async def test_a_close_waiting_behind_the_buffers_is_not_a_stall(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every byte written, the close waits while the reader takes what the engine and the sockets buffer (tens of
    # MiB): none of this writer's bytes move meanwhile. Before, that wait counted: a reader slower than the buffers
    # per stall time failed the send as "answered without reading the channel … 64.0 MiB of 64.0 MiB went out".
    closing = asyncio.Event()
    reader_done = asyncio.Event()

    async def close_behind_the_buffers(self: ChannelWriter) -> None:
        closing.set()
        await reader_done.wait()

    monkeypatch.setattr(ChannelWriter, "close_async", close_behind_the_buffers)
    writer = cli._WatchedWriter("ws://127.0.0.1:1", {"channel_id": "c", "access_key": "k", "direction": "write"})
    transfer = asyncio.ensure_future(writer.close_async())
    await closing.wait()
    watching = asyncio.ensure_future(cli._ended(transfer, writer, WINDOW_S))
    done, _ = await asyncio.wait({watching}, timeout=WINDOW_S * 3)
    assert not done, "a close waiting behind the buffers was taken for a stall"
    reader_done.set()
    assert await asyncio.wait_for(watching, 5) is True
