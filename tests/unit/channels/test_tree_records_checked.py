"""``receive_dir`` checks the entry records (names, types, sizes) too, not only the file bytes.

A relay that changed only text messages went unnoticed: a file renamed on the way, an empty directory or an empty
file left out (neither has bytes), and ``receive_dir`` reported every file verified.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from iii.channels import ChannelReader, ChannelWriter
from iii_channels import IntegrityError, receive_dir, send_dir
from iii_channels.sink import ChannelSink
from iii_channels.trees import END_KEY, ENTRY_KEY
from iii_engine.testing import local_channel

Tamper = Callable[[str], str | None]


def _rename(text: str) -> str | None:
    return text.replace("secret.txt", "public.txt")


def _drop_empty_dir(text: str) -> str | None:
    return None if '"type": "dir"' in text and '"empty"' in text else text


def _drop_empty_file() -> Tamper:
    dropping = False

    def tamper(text: str) -> str | None:
        nonlocal dropping
        if '"path": "zero.bin"' in text:
            dropping = True
            return None
        if dropping and END_KEY in text:
            dropping = False
            return None
        return text
    return tamper


def _drop_tree_record(text: str) -> str | None:
    return None if text.startswith('{"iii_channels_tree"') else text


async def _relay(reader: ChannelReader, writer: ChannelWriter, tamper: Tamper) -> None:
    """Passes everything on, but text messages through ``tamper`` (``None``: left out)."""
    while (message := await reader.recv()) is not None:
        if isinstance(message, str):
            if (changed := tamper(message)) is not None:
                await writer.send_message_async(changed)
        else:
            await writer.write(message)
    await writer.close_async()


@pytest.mark.parametrize("tamper", [_rename, _drop_empty_dir, _drop_empty_file(), _drop_tree_record],
                         ids=["renamed", "empty-dir-dropped", "empty-file-dropped", "tree-record-dropped"])
async def test_a_relay_changing_only_text_records_fails_the_receive(tmp_path: Path, tamper: Tamper) -> None:
    src = tmp_path / "src"
    (src / "empty").mkdir(parents=True)
    (src / "secret.txt").write_text("s3cret")
    (src / "zero.bin").write_bytes(b"")
    async with local_channel() as ch:
        onward = await ch.iii.create_channel_async()
        results = await asyncio.gather(send_dir(ch.writer, src), _relay(ch.reader, onward.writer, tamper),
                                       receive_dir(onward.reader, tmp_path / "dst"), return_exceptions=True)
    assert isinstance(results[2], IntegrityError), results
    assert not (tmp_path / "dst").exists()


async def test_an_untouched_tree_passes_the_relay(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "empty").mkdir(parents=True)
    (src / "zero.bin").write_bytes(b"")
    async with local_channel() as ch:
        onward = await ch.iii.create_channel_async()
        _, _, receipt = await asyncio.gather(send_dir(ch.writer, src), _relay(ch.reader, onward.writer, str),
                                             receive_dir(onward.reader, tmp_path / "dst"))
    assert receipt.directories == ["empty"] and [f.path.name for f in receipt.files] == ["zero.bin"]


async def _older_sender(writer: ChannelWriter) -> None:
    """A stream as senders before the tree record wrote it."""
    async with ChannelSink(writer) as sink:
        await sink.send_text(json.dumps({ENTRY_KEY: {"path": "empty", "type": "dir"}}))


async def test_a_stream_without_the_tree_record_is_refused_unless_the_trailer_is_optional(tmp_path: Path) -> None:
    async with local_channel() as ch:
        results = await asyncio.gather(_older_sender(ch.writer), receive_dir(ch.reader, tmp_path / "strict"),
                                       return_exceptions=True)
        assert isinstance(results[1], IntegrityError), results
        assert "without the tree's record (iii_channels_tree)" in str(results[1])
        again = await ch.iii.create_channel_async()
        _, receipt = await asyncio.gather(_older_sender(again.writer),
                                          receive_dir(again.reader, tmp_path / "lenient", require_trailer=False))
    assert receipt.directories == ["empty"]
