"""``receive_dir``'s staging directory was made group-writable (the umask's mode) as soon as it was made: a group
member who may write in the destination's directory could plant files, or a symlink for a directory entry through
which the next entry was written outside the destination, while it was received. It is now 0700 until it is in
place, then gets the mode a plain ``mkdir`` gives. Entry names in errors are cut short (a 200-level name of
200-character parts made a 40 KB message)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path
from typing import BinaryIO

import pytest

from iii.channels import ChannelWriter
from iii_channels import receive_dir, send_files, trees
from iii_channels.sink import ChannelSink
from iii_channels.trees import ENTRY_KEY
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)


def _mkdir_mode(tmp_path: Path) -> int:
    (tmp_path / "plain").mkdir()
    return stat.S_IMODE(os.stat(tmp_path / "plain").st_mode)


async def test_the_staging_directory_is_private_until_placed(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "src.txt").write_bytes(b"abc")
    (tmp_path / "in").mkdir()
    modes: list[int] = []
    real_create = trees._create

    def create(target: Path) -> BinaryIO:
        """Each file entry is created under the staging directory: how it looks at that moment."""
        staging = next(p for p in target.parents if p.name.startswith(".iii-part-"))
        modes.append(stat.S_IMODE(os.stat(staging).st_mode))
        return real_create(target)

    monkeypatch.setattr(trees, "_create", create)
    async with local_channel() as ch:
        _, receipt = await asyncio.gather(send_files(ch.writer, [("a/f", tmp_path / "src.txt")]),
                                          receive_dir(ch.reader, tmp_path / "in" / "d"))
    final_mode, plain_mode = stat.S_IMODE(os.stat(receipt.path).st_mode), _mkdir_mode(tmp_path)
    # before: [0o775] under umask 002, [0o755] under 022 (the umask's mode from the moment it was made)
    assert modes == [0o700], [oct(m) for m in modes]
    assert final_mode == plain_mode, (oct(final_mode), oct(plain_mode))


async def _entry(writer: ChannelWriter, body: dict[str, object]) -> None:
    async with ChannelSink(writer, trailer=True) as sink:
        await sink.send_text(json.dumps({ENTRY_KEY: body}))


@pytest.mark.parametrize("body", [
    {"path": "/".join(["p" * 200] * 200), "type": "dir"},  # too deep
    {"path": "/".join(["p" * 200] * 100) + "/..", "type": "dir"},  # unsafe
    {"path": "x" * 40_000, "type": "file", "size": 1},  # cannot be created (ENAMETOOLONG)
    {"path": "x" * 40_000, "type": "symlink"},
    {"path": "f", "type": "file", "size": "x" * 40_000},
])
async def test_a_long_name_in_an_error_is_cut_short(tmp_path: Path, body: dict[str, object]) -> None:
    async with local_channel() as ch:
        _, received = await asyncio.gather(_entry(ch.writer, body), receive_dir(ch.reader, tmp_path / "d"),
                                           return_exceptions=True)
    assert isinstance(received, Exception), repr(received)
    # before: 40,2xx characters for each but the depth error
    assert len(str(received)) < 400, (type(received), len(str(received)))
    assert "…" in str(received)
