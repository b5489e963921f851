"""A channel writer's first write cancelled while its socket connects: the connect is shared (so an abort waiting
for it reaches the reader), but when nobody else waits for it, it goes with its caller. Left running, the socket
attached after its caller was gone and nothing ever closed it: the reader waited for good, where a cancelled
connect lets the channel expire at the attach deadline."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iii import channels as channels_module
from iii.iii import III
from iii.types import Channel

pytestmark = [pytest.mark.our_engine("gates the writer's connect"), pytest.mark.timeout(30)]


class _GatedConnect:
    """``_connect`` that waits for :attr:`gate` first; :attr:`outcomes` says how each call ended."""

    def __init__(self) -> None:
        self.real = channels_module._connect
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.outcomes: list[str] = []

    async def __call__(self, *args: Any) -> Any:
        self.started.set()
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.outcomes.append("cancelled")
            raise
        self.outcomes.append("connected")
        return await self.real(*args)


async def _first_write_connecting(
        worker: III, monkeypatch: pytest.MonkeyPatch) -> tuple[_GatedConnect, Channel, asyncio.Future[None]]:
    """A new channel whose writer's first write is held in its connect (at the gate)."""
    gated = _GatedConnect()
    monkeypatch.setattr(channels_module, "_connect", gated)
    channel = await worker.create_channel_async()
    write = asyncio.ensure_future(channel.writer.write(b"first"))
    await gated.started.wait()
    return gated, channel, write


async def test_a_write_cancelled_while_connecting_takes_its_connect_with_it(
        worker: III, monkeypatch: pytest.MonkeyPatch) -> None:
    gated, channel, write = await _first_write_connecting(worker, monkeypatch)
    write.cancel()
    with pytest.raises(asyncio.CancelledError):
        await write
    assert gated.outcomes == ["cancelled"]  # before: the connect went on, its socket attached with nobody to close it
    # the writer is still usable: the next write connects afresh and the reader gets it
    gated.gate.set()
    await channel.writer.write(b"second")
    await channel.writer.close_async()
    assert await channel.reader.read_all() == b"second"


async def test_a_connect_an_abort_waits_for_survives_the_write_that_started_it(
        worker: III, monkeypatch: pytest.MonkeyPatch) -> None:
    gated, channel, write = await _first_write_connecting(worker, monkeypatch)
    abort = asyncio.ensure_future(channel.writer.abort("gave up"))
    await asyncio.sleep(0)  # (lets the abort reach its wait for the connect)
    write.cancel()
    gated.gate.set()
    await asyncio.wait_for(abort, 10)
    assert gated.outcomes == ["connected"]
    with pytest.raises(channels_module.ChannelAbortedError):
        await asyncio.wait_for(channel.reader.read_all(), 10)
