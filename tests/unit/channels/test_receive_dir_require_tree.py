"""``receive_dir(require_tree=False)`` accepts a stream from a sender before the tree record and still checks
the bytes: ``require_tree`` followed ``require_trailer``, so the only way to accept an older sender was
``require_trailer=False``, which dropped the trailer check too."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from iii.channels import ChannelWriter
from iii_channels import IntegrityError, receive_dir
from iii_channels.integrity import Digest
from iii_channels.sink import ChannelSink
from iii_channels.trees import END_KEY, ENTRY_KEY
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)


async def _older_sender(writer: ChannelWriter, *, trailer: bool = True) -> None:
    """A tree as senders before the tree record wrote it: entries, bytes, end records and the trailer."""
    digest = Digest()
    digest.update(b"abc")
    async with ChannelSink(writer, trailer=trailer) as sink:
        await sink.send_text(json.dumps({ENTRY_KEY: {"path": "empty", "type": "dir"}}))
        await sink.send_text(json.dumps({ENTRY_KEY: {"path": "a.txt", "type": "file", "size": 3}}))
        await sink.write(b"abc")
        await sink.send_text(json.dumps({END_KEY: {"bytes": 3, "sha256": digest.hexdigest()}}))


async def test_an_older_sender_is_accepted_with_the_trailer_still_required(tmp_path: Path) -> None:
    async with local_channel() as ch:
        _, receipt = await asyncio.gather(
            _older_sender(ch.writer),
            receive_dir(ch.reader, tmp_path / "dst", require_trailer=True, require_tree=False))
    assert receipt.directories == ["empty"] and (tmp_path / "dst" / "a.txt").read_bytes() == b"abc"


async def test_require_tree_false_keeps_the_trailer_check(tmp_path: Path) -> None:
    async with local_channel() as ch:
        results = await asyncio.gather(_older_sender(ch.writer, trailer=False),
                                       receive_dir(ch.reader, tmp_path / "dst", require_tree=False),
                                       return_exceptions=True)
    assert isinstance(results[1], IntegrityError), results
    assert "trailer" in str(results[1])
    assert not (tmp_path / "dst").exists()


async def test_by_default_the_tree_record_follows_require_trailer(tmp_path: Path) -> None:
    async with local_channel() as ch:
        results = await asyncio.gather(_older_sender(ch.writer), receive_dir(ch.reader, tmp_path / "strict"),
                                       return_exceptions=True)
    assert isinstance(results[1], IntegrityError), results
    assert "require_tree=False accepts such a stream" in str(results[1])
