"""``to_stream``'s end: it returns only once every byte went to the stream's socket. ``drain()`` returns with up to
64 KiB still buffered; a peer that went away before taking them failed only the close's ``wait_closed()``, whose
error was dropped, so ``to_stream`` returned success with the last 13-53 KB never sent, and a peer that read nothing
held it in ``wait_closed()`` for ever. Also: a source whose integrity check failed read as a clean end afterwards."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator

import pytest

from iii.channels import ChannelClosedError
from iii_channels import ChannelSource, IntegrityError, from_iterable, to_stream
from iii_channels.integrity import Digest
from iii_engine.testing import local_channel
from tests.polling import until

_BUFFER = 8192  # the kernel buffers asked for on both ends (the kernel may double them): a small, known capacity


def _pair() -> tuple[socket.socket, socket.socket]:
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
    return ours, theirs


def _capacity() -> int:
    """Bytes such a socketpair's kernel buffers take with nobody reading."""
    a, b = _pair()
    a.setblocking(False)
    taken = 0
    try:
        while True:
            taken += a.send(b"x" * 1000)
    except BlockingIOError:
        return taken
    finally:
        a.close()
        b.close()


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for at in range(0, len(data), 10_000):
        yield data[at:at + 10_000]


async def _unread_tail(close_timeout: float, peer_goes: bool) -> BaseException | int:
    """``to_stream`` of the kernel's capacity plus 30,000 bytes into a peer that reads nothing (and, ``peer_goes``,
    closes once the tail waits in asyncio's buffer): what it returned or raised."""
    data = os.urandom(_capacity() + 30_000)
    async with local_channel() as channel:
        ours, theirs = _pair()
        _, stream = await asyncio.open_connection(sock=ours)
        copy = asyncio.ensure_future(to_stream(channel.reader, stream, close_timeout=close_timeout))
        await from_iterable(channel.writer, _chunks(data))
        if peer_goes:
            await until(lambda: stream.transport.get_write_buffer_size() > 0)
            theirs.close()
        try:
            return await copy
        except Exception as exc:
            return exc
        finally:
            theirs.close()


async def test_a_peer_gone_with_the_tail_unsent_fails_the_copy() -> None:
    outcome = await _unread_tail(close_timeout=30, peer_goes=True)
    assert isinstance(outcome, ConnectionError), outcome  # it returned the whole count, as if all was sent


async def test_a_peer_that_takes_nothing_fails_the_copy_after_close_timeout() -> None:
    outcome = await _unread_tail(close_timeout=0.3, peer_goes=False)
    assert isinstance(outcome, TimeoutError) and "close_timeout" in str(outcome), outcome


@pytest.mark.parametrize("bad", [-1, 0, float("nan"), float("inf")])
async def test_a_bad_close_timeout_is_refused(bad: float) -> None:
    async with local_channel() as channel:
        ours, theirs = socket.socketpair()
        _, stream = await asyncio.open_connection(sock=ours)
        with pytest.raises(ValueError, match="close_timeout"):
            await to_stream(channel.reader, stream, close_timeout=bad)
        stream.close()
        theirs.close()


async def test_a_source_whose_integrity_check_failed_keeps_failing() -> None:
    drawn: list[tuple[int, int | None]] = []
    async with local_channel() as channel:
        source = ChannelSource(channel.reader, require_trailer=True,
                               progress=lambda done, total: drawn.append((done, total)))
        await from_iterable(channel.writer, _chunks(b"hello"), trailer=False)
        with pytest.raises(IntegrityError):
            await source.read_all()
        with pytest.raises(ChannelClosedError, match="integrity check failed"):
            await source.read_all()  # it read b"": a clean end
        with pytest.raises(ChannelClosedError):
            await source.readline()


async def test_a_source_failing_its_integrity_check_mid_stream_keeps_failing() -> None:
    """A second trailer raised once, then the source read a clean end with ``verified`` True."""
    digest = Digest()
    digest.update(b"hello")
    async with local_channel() as channel:
        source = ChannelSource(channel.reader)
        await channel.writer.write(b"hello")
        await channel.writer.send_message_async(digest.trailer())
        await channel.writer.send_message_async(digest.trailer())  # a second one
        await channel.writer.close_async()
        with pytest.raises(IntegrityError, match="second integrity trailer"):
            await source.read_all()
        with pytest.raises(ChannelClosedError, match="integrity check failed"):
            await source.read_all()
        assert not source.verified
