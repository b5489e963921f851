"""A frame sent on a socket that is already closed, before the receive side has noticed the loss, waits for the next
socket. Before, ``Connection.send`` wrote it to the dead socket (the write path saw the WebSocket still open while
its transport was closing, and the transport drops what it is given then) and reported it written: a handler's
result or a fire-and-forget call was lost without a word."""

from __future__ import annotations

import asyncio

import pytest

from iii.connection import Connection
from tests.integration.sdk.test_hbr_send_on_this_connection import FAST, Recorder, recorder

__all__ = ["recorder"]  # the fixture, imported for this module's tests

pytestmark = pytest.mark.timeout(30)


async def test_a_frame_sent_to_a_socket_already_closed_goes_out_on_the_next(recorder: Recorder) -> None:
    ready = asyncio.Event()
    conn = Connection(recorder.url, on_frame=lambda raw: None, on_ready=ready.set, reconnection=FAST)
    await conn.start()
    try:
        await asyncio.wait_for(ready.wait(), 10)
        ready.clear()
        first = conn._ws
        assert first is not None
        first.transport.abort()  # the socket is gone; the receive loop has not had a turn to notice it
        written = await conn.send('{"type":"after-the-loss"}')
        assert written is False  # queued for the next socket, not "written" to the dead one
        await asyncio.wait_for(ready.wait(), 10)  # the next socket is up and the backlog flushed
        await recorder.wait_for(lambda: '{"type":"after-the-loss"}' in recorder.texts())
        assert len(recorder.connections) == 2
    finally:
        await conn.close()


@pytest.mark.parametrize("bad", [0, -1, float("nan"), "30000", True])
def test_send_timeout_ms_is_checked_naming_it(bad: object) -> None:
    from iii import III, InitOptions

    with pytest.raises(ValueError, match="send_timeout_ms must be a"):
        III("ws://127.0.0.1:9", InitOptions(send_timeout_ms=bad))  # type: ignore[arg-type]


def test_send_timeout_ms_reaches_the_connection() -> None:
    from iii import III, InitOptions

    client = III("ws://127.0.0.1:9", InitOptions(send_timeout_ms=1500))
    try:
        assert client._conn._send_timeout == 1.5
    finally:
        client.shutdown()
