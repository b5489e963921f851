"""An abort whose close handshake does not end within its bound drops the connection; its debug line says what is
known: the Close frame still in the socket's buffer (a peer that does not read), or written with no reply from the
peer. Both used to read "its Close frame was not written", the second wrongly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from iii import channels as channels_module
from iii.channels import ChannelError, ChannelWriter

from .raw_ws_server import raw_ws_server, write_until_stuck

pytestmark = pytest.mark.timeout(30)


def _writer(base: str) -> ChannelWriter:
    return ChannelWriter(base, {"channel_id": "c-log", "access_key": "k", "direction": "write"})


def _abort_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "iii.channels" and "abort of channel" in r.getMessage()]


async def test_a_peer_that_never_answers_the_close_is_named_as_such(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(channels_module, "_ABORT_CLOSE_S", 0.5)
    caplog.set_level(logging.DEBUG, logger="iii.channels")
    async with raw_ws_server() as (base, peer):
        writer = _writer(base)
        await writer.write(b"partial")
        await writer.abort("gave up")
        await asyncio.wait_for(peer.ended.wait(), 5)  # dropped
    assert _abort_lines(caplog) == ["abort of channel c-log: its Close frame was written and the peer sent no Close "
                                    "reply within 0.5 s; connection dropped"]


async def test_a_peer_that_does_not_read_keeps_the_close_frame_unwritten(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(channels_module, "_ABORT_CLOSE_S", 0.5)
    caplog.set_level(logging.DEBUG, logger="iii.channels")
    async with raw_ws_server(reads=False) as (base, _):
        writer = _writer(base)
        write = await write_until_stuck(writer)
        await asyncio.wait_for(writer.abort("gave up"), 5)
        with contextlib.suppress(ChannelError, asyncio.CancelledError):
            await write
    [line] = _abort_lines(caplog)
    assert line.startswith("abort of channel c-log: its Close frame was not written out within 0.5 s (")
    assert line.endswith(" bytes still buffered: the peer does not take them); connection dropped")
