"""``receive_dir``'s refusal past ``max_entries`` names the parameter, its value, the count reached and the entry
refused, as the one past ``max_name_bytes`` does: the user knows what to raise.

Before: "channel …: the tree exceeds the limit of 3 entries" (neither the parameter nor the entry named)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from iii.channels import ChannelWriter
from iii_channels import ChannelSink, LimitExceededError, ReaderGoneError, receive_dir
from iii_channels.trees import ENTRY_KEY
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)


async def _dirs_then_endless_data(writer: ChannelWriter, names: list[str]) -> None:
    """The directories named, then a file entry whose bytes never end: only the receiver's failure stops it."""
    async with ChannelSink(writer) as sink:
        for name in names:
            await sink.send_text(json.dumps({ENTRY_KEY: {"path": name, "type": "dir"}}))
        await sink.send_text(json.dumps({ENTRY_KEY: {"path": "f", "type": "file", "size": 1 << 40}}))
        while True:
            await sink.write(bytes(1 << 20))


async def test_the_refusal_names_max_entries_its_value_and_the_entry(tmp_path: Path) -> None:
    async with local_channel(buffer_size=2) as ch:
        sent, received = await asyncio.gather(_dirs_then_endless_data(ch.writer, ["a", "b", "c", "d"]),
                                              receive_dir(ch.reader, tmp_path / "out", max_entries=3),
                                              return_exceptions=True)
    assert isinstance(received, LimitExceededError), received
    assert received.limit == 3
    assert str(received) == (f"channel {ch.reader.ref.channel_id}: the tree, 4 entries with 'd', exceeds the limit "
                             "of 3 entries (max_entries)")
    assert isinstance(sent, ReaderGoneError), sent
    assert os.listdir(tmp_path) == []
