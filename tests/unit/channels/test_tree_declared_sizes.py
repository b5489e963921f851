"""A tree entry's declared size is held to the bytes that follow it. ``receive_dir`` checked each file only against
its end record (the sender's own count and hash of what it sent), never against the ``size`` in its entry record:
a stream declaring 10 bytes and sending 4 (or 16), with matching end record, tree record and trailer, was stored as
a verified 4 (16) byte file."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from iii.channels import ChannelWriter
from iii_channels import FileChangedError, IntegrityError, receive_dir, send_files
from iii_channels.integrity import Digest
from iii_channels.sink import ChannelSink
from iii_channels.trees import END_KEY, ENTRY_KEY, TREE_KEY
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)


async def _one_file_tree(writer: ChannelWriter, declared: object, data: bytes) -> None:
    """A tree of one file ``f`` whose entry declares ``declared`` bytes, followed by ``data``; the end record, the
    tree record and the trailer all agree with what was sent."""
    records = Digest()
    count = 0
    async with ChannelSink(writer, trailer=True) as sink:
        digest = Digest()
        digest.update(data)
        for text in (json.dumps({ENTRY_KEY: {"path": "f", "type": "file", "size": declared}}), None,
                     json.dumps({END_KEY: {"bytes": len(data), "sha256": digest.hexdigest()}})):
            if text is None:
                await sink.write(data)
                continue
            records.update_text(text)
            count += 1
            await sink.send_text(text)
        await sink.send_text(json.dumps({TREE_KEY: {"records": count, "sha256": records.hexdigest()}}))


@pytest.mark.parametrize("sent", [4, 16])
async def test_an_entry_followed_by_other_than_its_declared_bytes_is_refused(tmp_path: Path, sent: int) -> None:
    async with local_channel() as ch:
        _, received = await asyncio.gather(_one_file_tree(ch.writer, 10, b"x" * sent),
                                           receive_dir(ch.reader, tmp_path / "dst"), return_exceptions=True)
    # before: a TreeReceipt whose one file held 4 (16) bytes, verified
    assert isinstance(received, IntegrityError), repr(received)
    assert "'f'" in str(received) and "declared 10 bytes" in str(received)
    assert f"received {sent} bytes" in str(received)
    assert os.listdir(tmp_path) == []  # neither the destination nor the staging directory


@pytest.mark.parametrize("declared", [None, -1, "10", True])
async def test_a_file_entry_without_a_size_is_refused(tmp_path: Path, declared: object) -> None:
    async with local_channel() as ch:
        _, received = await asyncio.gather(_one_file_tree(ch.writer, declared, b"x"),
                                           receive_dir(ch.reader, tmp_path / "dst"), return_exceptions=True)
    assert isinstance(received, IntegrityError), repr(received)
    assert f"declares size {declared!r}" in str(received)
    assert os.listdir(tmp_path) == []


async def test_an_entry_of_its_declared_size_is_stored(tmp_path: Path) -> None:
    async with local_channel() as ch:
        _, receipt = await asyncio.gather(_one_file_tree(ch.writer, 3, b"abc"), receive_dir(ch.reader, tmp_path / "d"))
    assert [(f.name, f.size, f.verified) for f in receipt.files] == [("f", 3, True)]
    assert (tmp_path / "d" / "f").read_bytes() == b"abc"


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="no /proc here")
async def test_send_files_of_a_pseudo_file_fails_at_the_sender_naming_it(tmp_path: Path) -> None:
    """/proc/self/status says 0 bytes and reads hundreds: sent, the receiver would refuse it as above."""
    async with local_channel() as ch:
        sent, received = await asyncio.gather(send_files(ch.writer, ["/proc/self/status"]),
                                              receive_dir(ch.reader, tmp_path / "dst"), return_exceptions=True)
    assert isinstance(sent, FileChangedError), repr(sent)
    assert "/proc/self/status is 0 bytes by its size" in str(sent)
    assert isinstance(received, Exception)
    assert os.listdir(tmp_path) == []
