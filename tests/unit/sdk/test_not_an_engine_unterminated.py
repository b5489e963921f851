"""A server that answers the WebSocket upgrade with bytes and no line end, then closes (a TLS server's alert, as a
``wss://``-only port sends to a ``ws://`` URL), is not an iii engine: ``register_worker`` says so after
``NOT_AN_ENGINE_TRIES`` answers. Before, websockets' "connection closed while reading HTTP status line" was taken
for a forwarder closing before any answer: retried for 30 s, then "cannot reach the engine". A server that closes
without a byte is still waited for (``test_not_an_engine_edges``)."""

from __future__ import annotations

import asyncio
import time

import pytest

from iii import InitOptions, ReconnectionConfig, register_worker
from iii.connection import NOT_AN_ENGINE_TRIES, not_an_engine
from iii.ws_fastpath import EOF_WORDS_KNOWN, bytes_before_close

FAST = ReconnectionConfig(initial_delay_ms=10, max_delay_ms=20, jitter_factor=0.0)
TLS_ALERT = b"\x15\x03\x01\x00\x02\x02\x46"  # a fatal alert record: protocol_version


def test_this_websockets_says_how_many_bytes_came_before_the_close() -> None:
    assert EOF_WORDS_KNOWN  # else the check below always answers "no answer" (the upgrade that moves it fails here)


async def test_a_tls_alert_answer_is_not_an_engine_within_its_tries() -> None:
    answers = 0

    async def alert(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answers
        answers += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(TLS_ALERT)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(alert, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        started = time.monotonic()
        with pytest.raises(ConnectionError) as caught:
            await asyncio.to_thread(register_worker, f"ws://127.0.0.1:{port}",
                                    InitOptions(reconnection_config=FAST))
    assert "did not answer as an iii engine" in str(caught.value), caught.value
    assert "7 byte(s) with no line end" in str(caught.value)
    assert answers == NOT_AN_ENGINE_TRIES and time.monotonic() - started < 10


def test_no_byte_before_the_close_is_still_no_answer() -> None:
    from websockets.exceptions import InvalidMessage

    inner = EOFError("stream ends after 0 bytes, before end of line")
    outer = EOFError("connection closed while reading HTTP status line")
    outer.__cause__ = inner
    failure = InvalidMessage("did not receive a valid HTTP response")
    failure.__cause__ = outer
    assert bytes_before_close(outer) == 0
    assert not_an_engine(failure) is None
