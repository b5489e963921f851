"""``receive_file`` held the size in the sender's header only when no trailer verified: a header declaring 10 bytes,
4 bytes and a trailer matching those 4 were stored as a verified 4-byte file (``receive_dir`` refuses that for a
tree entry since 529bd83). ``send_file`` now declares no size where the size is not the length (FIFOs, devices,
``/proc``'s 0 bytes), so such sends still go through."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from iii.channels import ChannelWriter
from iii_channels import IntegrityError, receive_file, send_file
from iii_channels.files import FILE_HEADER_KEY, _declared_size
from iii_channels.sink import ChannelSink
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)


async def _send(writer: ChannelWriter, declared: int | None, data: bytes) -> None:
    async with ChannelSink(writer, trailer=True) as sink:
        await sink.send_text(json.dumps({FILE_HEADER_KEY: {"name": "f", "size": declared}}))
        await sink.write(data)


@pytest.mark.parametrize(("declared", "data", "said"), [
    (10, b"abcd", "ended after 4 of the 10 bytes the sender announced for 'f', under a trailer that matched them"),
    (4, b"abcdefghij", "10 bytes (so far) came for 'f', more than the 4 bytes the sender's header declared"),
])
async def test_the_header_size_is_held_under_a_trailer_too(tmp_path: Path, declared: int, data: bytes,
                                                           said: str) -> None:
    async with local_channel() as ch:
        _, received = await asyncio.gather(_send(ch.writer, declared, data),
                                           receive_file(ch.reader, tmp_path, require_trailer=True),
                                           return_exceptions=True)
    # before: FileReceipt(size=4 (10), verified=True, name='f') and f stored
    assert isinstance(received, IntegrityError), repr(received)
    assert said in str(received), str(received)
    assert os.listdir(tmp_path) == []


async def test_a_header_without_a_size_is_not_held(tmp_path: Path) -> None:
    async with local_channel() as ch:
        _, received = await asyncio.gather(_send(ch.writer, None, b"abcd"),
                                           receive_file(ch.reader, tmp_path, require_trailer=True))
    assert (received.size, received.verified, (tmp_path / "f").read_bytes()) == (4, True, b"abcd")


def test_send_file_declares_no_size_that_is_not_the_length(tmp_path: Path) -> None:
    (tmp_path / "data").write_bytes(b"x" * 5000)
    os.mkfifo(tmp_path / "fifo")
    assert _declared_size(os.stat(tmp_path / "data")) == 5000
    assert _declared_size(os.stat(tmp_path / "fifo")) is None
    if os.path.exists("/proc/self/status"):
        assert _declared_size(os.stat("/proc/self/status")) is None


async def test_a_fifo_is_received_whole(tmp_path: Path) -> None:
    """A FIFO's size is 0 whatever comes through it: declared, this receiver would refuse its bytes."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "in").mkdir()

    def feed() -> None:
        with open(fifo, "wb") as out:
            out.write(b"through a fifo")

    async with local_channel() as ch:
        _, _, receipt = await asyncio.gather(asyncio.to_thread(feed), send_file(ch.writer, fifo),
                                             receive_file(ch.reader, tmp_path / "in", require_trailer=True))
    assert (receipt.size, receipt.verified, (tmp_path / "in" / "fifo").read_bytes()) == (14, True, b"through a fifo")
