"""``receive_dir`` refuses a tree entry named like a partial transfer (``.iii-part-<pid>-…``), at any depth, as
``receive_file`` refuses such a file name: stored, the next receive into that directory took it for a dead
receiver's leftover and removed it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from iii.channels import ChannelWriter
from iii_channels import ChannelSink, IntegrityError, receive_dir, send_dir, send_files
from iii_channels.trees import ENTRY_KEY
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)

_DEAD_PART = ".iii-part-3999999-abcdefgh"  # a pid above the kernel's limit: never a live receiver


async def _send_entries(writer: ChannelWriter, paths: list[str]) -> None:
    """A sender that names its directories as given (``send_dir`` leaves ``.iii-part-*`` entries out)."""
    async with ChannelSink(writer) as out:
        for path in paths:
            await out.send_text(json.dumps({ENTRY_KEY: {"path": path, "type": "dir"}}))


@pytest.mark.parametrize("path", [_DEAD_PART, f"logs/{_DEAD_PART}", f"{_DEAD_PART}/inner"])
async def test_a_part_name_in_the_tree_is_refused(tmp_path: Path, path: str) -> None:
    async with local_channel() as ch:
        parts = path.split("/")
        entries = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]  # each directory after its parents
        results = await asyncio.gather(_send_entries(ch.writer, entries),
                                       receive_dir(ch.reader, tmp_path / "dst"), return_exceptions=True)
    assert isinstance(results[1], IntegrityError), results  # before: a TreeReceipt
    refused = path.removesuffix("/inner")
    assert f"refusing the sender's path {refused!r}: .iii-part-* names are kept for partial" in str(results[1])
    assert not (tmp_path / "dst").exists()


async def test_send_dir_leaves_out_a_partial_transfer_left_in_the_tree(tmp_path: Path) -> None:
    # before: sent, and every receiver refused the whole tree ("refusing the sender's path '.iii-part-…'")
    (tmp_path / "src" / _DEAD_PART / "sub").mkdir(parents=True)
    (tmp_path / "src" / _DEAD_PART / "sub" / "half").write_bytes(b"h")
    (tmp_path / "src" / "logs").mkdir()
    (tmp_path / "src" / "logs" / ".iii-part-k3_9zq0a").write_bytes(b"p")
    (tmp_path / "src" / "logs" / "kept.txt").write_bytes(b"k")
    async with local_channel() as ch:
        _, receipt = await asyncio.gather(send_dir(ch.writer, tmp_path / "src"),
                                          receive_dir(ch.reader, tmp_path / "dst"))
    assert sorted(p.relative_to(tmp_path / "dst").as_posix() for p in (tmp_path / "dst").rglob("*")) == [
        "logs", "logs/kept.txt"]
    assert [(f.size, f.verified) for f in receipt.files] == [(1, True)]


async def test_send_files_refuses_a_part_name_before_sending(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    async with local_channel() as ch:
        with pytest.raises(ValueError, match="kept for partial transfers"):
            await send_files(ch.writer, [(f"a/{_DEAD_PART}", tmp_path / "f")])
