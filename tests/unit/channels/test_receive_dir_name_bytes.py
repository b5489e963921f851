"""``receive_dir`` bounds the bytes of the entry names it holds (``max_name_bytes``, 64 MiB by default): each name
is held until the receipt is returned, and a sender's empty entries with 3.7 KB names (14 levels of 250
characters, within every other limit) grew the receiver by ~3.7-4.6 KB each, ~4 GB within ``max_entries``'
default of 1,000,000. Past the bound: the limit error ``max_entries`` raises, nothing left, the sender told."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
from pathlib import Path

import pytest

from iii.channels import ChannelWriter
from iii_channels import ChannelSink, LimitExceededError, ReaderGoneError, receive_dir
from iii_channels.trees import ENTRY_KEY
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)

# 100 UTF-8 bytes, 50 characters: the bound counts bytes
_NAMES = [f"{i:02d}" + "é" * 49 for i in range(10)]


async def _dirs_then_endless_data(writer: ChannelWriter, names: list[str]) -> None:
    """The directories named, then a file entry whose bytes never end: only the receiver's failure stops it."""
    async with ChannelSink(writer) as sink:
        for name in names:
            await sink.send_text(json.dumps({ENTRY_KEY: {"path": name, "type": "dir"}}))
        await sink.send_text(json.dumps({ENTRY_KEY: {"path": "f", "type": "file", "size": 1 << 40}}))
        while True:
            await sink.write(bytes(1 << 20))


async def test_names_past_the_bound_fail_the_receive(tmp_path: Path) -> None:
    assert all(len(name.encode()) == 100 for name in _NAMES)
    async with local_channel(buffer_size=2) as ch:
        sent, received = await asyncio.gather(_dirs_then_endless_data(ch.writer, _NAMES),
                                              receive_dir(ch.reader, tmp_path / "out", max_name_bytes=950),
                                              return_exceptions=True)
    # before: TypeError, no such parameter (and no bound at all)
    assert isinstance(received, LimitExceededError), received
    assert received.limit == 950
    assert f"the tree's entry names, 1000 bytes with {_NAMES[9]!r}, exceeds the limit of 950 bytes " \
           "(max_name_bytes)" in str(received)
    assert isinstance(sent, ReaderGoneError), sent
    assert os.listdir(tmp_path) == []


async def test_names_up_to_the_bound_are_received(tmp_path: Path) -> None:
    async def dirs(writer: ChannelWriter) -> None:
        async with ChannelSink(writer, trailer=True) as sink:
            for name in _NAMES:
                await sink.send_text(json.dumps({ENTRY_KEY: {"path": name, "type": "dir"}}))

    async with local_channel() as ch:
        _, receipt = await asyncio.gather(dirs(ch.writer), receive_dir(ch.reader, tmp_path / "out",
                                                                       max_name_bytes=1000, require_tree=False))
    assert receipt.directories == _NAMES
    assert sorted(os.listdir(tmp_path / "out")) == _NAMES


def test_the_default_bound() -> None:
    from iii_channels.trees import DEFAULT_MAX_NAME_BYTES

    default = inspect.signature(receive_dir).parameters["max_name_bytes"].default
    assert default == DEFAULT_MAX_NAME_BYTES == 64 * 1024 * 1024


@pytest.mark.parametrize("bad", [0, -1])
async def test_a_bound_below_one_is_refused_and_the_writer_released(tmp_path: Path, bad: int) -> None:
    async with local_channel(buffer_size=2) as ch:
        sent, received = await asyncio.gather(_dirs_then_endless_data(ch.writer, []),
                                              receive_dir(ch.reader, tmp_path / "out", max_name_bytes=bad),
                                              return_exceptions=True)
    assert isinstance(received, ValueError) and f"max_name_bytes must be at least 1 (or None), got {bad}" in str(
        received)
    assert isinstance(sent, ReaderGoneError), sent
    assert os.listdir(tmp_path) == []
