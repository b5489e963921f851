"""``iii-channel send`` after the function answered: an upload that stops moving is given up, a slow source is not.

The stall window is shortened here; ``test_cli_send_to_non_reader`` runs the real one end to end.
"""

from __future__ import annotations

import asyncio

import pytest

from iii_channels import cli
from iii_engine.channels import ChannelRelay

from .relay_server import relay_server

WINDOW_S = 0.2


@pytest.fixture(autouse=True)
def short_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "_ANSWERED_STALL_S", WINDOW_S)


async def test_a_write_nobody_takes_is_a_stall() -> None:
    async with relay_server(ChannelRelay(attach_timeout_s=20.0)) as (base, relay):
        refs = relay.create(None, owner=None)
        writer = cli._WatchedWriter(base, refs["writer"])

        async def upload() -> int:
            while True:  # no reader: the relay's buffers fill, then a write waits
                await writer.write(bytes(1 << 20))

        transfer = asyncio.ensure_future(upload())
        try:
            assert await asyncio.wait_for(cli._ended(transfer, writer), 20) is False
            assert not transfer.done()
            assert writer.waited() >= WINDOW_S
            assert writer.bytes_written > 0  # it did move before it stopped
        finally:
            relay.discard(refs["writer"]["channel_id"])  # closes the writer at once (an abort would wait 2 s)
            transfer.cancel()
            await asyncio.gather(transfer, return_exceptions=True)
        assert writer.waited() == 0.0  # nothing under way any more


async def test_a_silent_source_is_not_a_stall() -> None:
    """Stdin quiet for many windows while nothing waits on the socket: the upload is still waited for."""
    writer = cli._WatchedWriter("ws://127.0.0.1:1", {"channel_id": "c", "access_key": "k", "direction": "write"})
    loop = asyncio.get_running_loop()
    transfer: asyncio.Future[int] = loop.create_future()
    loop.call_later(5 * WINDOW_S, transfer.set_result, 7)  # the source's next bytes, then its end
    assert await asyncio.wait_for(cli._ended(transfer, writer), 10) is True
    assert transfer.result() == 7
