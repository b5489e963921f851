"""Trees deeper than Python's recursion limit. On 3.11 ``os.walk``, ``shutil.rmtree`` and ``Path.rglob`` recurse
per level: a peer's ``d/d/d/…`` 1,100 entries deep (and no tree record) made ``receive_dir`` raise
``RecursionError`` from its clean-up instead of its own error, left the ``.iii-part-…`` staging directory, and
every later ``receive_file`` / ``receive_dir`` next to it raised ``RecursionError`` too (reclaiming it).
``send_dir`` of a tree ~1,000 deep raised a bare ``RecursionError``. Now both ends refuse more than
``MAX_TREE_DEPTH`` levels by name, and staging trees are removed without recursion."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from iii.channels import ChannelWriter
from iii_channels import LimitExceededError, receive_dir, receive_file, send_dir, send_file, send_files
from iii_channels.files import PART_PREFIX, remove_tree
from iii_channels.sink import ChannelSink
from iii_channels.trees import ENTRY_KEY, MAX_TREE_DEPTH
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)


def _chain(top: Path, levels: int, file: bytes | None = None) -> str:
    """``top/d/d/…`` with ``levels`` directories below ``top`` (made one at a time: no recursion), and ``file``
    as ``f`` in the deepest; the deepest."""
    path = os.fspath(top)
    os.mkdir(path)
    for _ in range(levels):
        path = os.path.join(path, "d")
        os.mkdir(path)
    if file is not None:
        with open(os.path.join(path, "f"), "wb") as fh:
            fh.write(file)
    return path


@pytest.fixture
def tmp_path(tmp_path: Path) -> Iterator[Path]:
    """pytest's, emptied without recursion afterwards: its own clean-up (shutil.rmtree) fails on these trees."""
    yield tmp_path
    for entry in os.listdir(tmp_path):
        path = tmp_path / entry
        if path.is_dir() and not path.is_symlink():
            remove_tree(path)


async def _deep_dirs(writer: ChannelWriter, levels: int) -> None:
    async with ChannelSink(writer) as sink:
        name = "d"
        for _ in range(levels):
            await sink.send_text(json.dumps({ENTRY_KEY: {"path": name, "type": "dir"}}))
            name += "/d"


async def test_a_received_tree_deeper_than_the_bound_is_refused_by_name_and_nothing_stays(tmp_path: Path) -> None:
    async with local_channel() as ch:
        _, received = await asyncio.gather(_deep_dirs(ch.writer, 1100), receive_dir(ch.reader, tmp_path / "dst"),
                                           return_exceptions=True)
    # before: RecursionError('maximum recursion depth exceeded …') and the .iii-part-… directory left
    assert isinstance(received, LimitExceededError), repr(received)
    assert f"({MAX_TREE_DEPTH + 1} levels)" in str(received) and "MAX_TREE_DEPTH" in str(received)
    assert os.listdir(tmp_path) == []


async def test_a_tree_at_the_bound_is_sent_and_received(tmp_path: Path) -> None:
    _chain(tmp_path / "src", MAX_TREE_DEPTH - 1, b"abc")
    async with local_channel() as ch:
        sent, receipt = await asyncio.gather(send_dir(ch.writer, tmp_path / "src"),
                                             receive_dir(ch.reader, tmp_path / "dst"))
    assert sent == 3 and len(receipt.directories) == MAX_TREE_DEPTH - 1
    [stored] = receipt.files
    assert stored.name is not None and len(stored.name.split("/")) == MAX_TREE_DEPTH and stored.verified


async def test_send_dir_refuses_a_tree_deeper_than_the_bound_naming_it(tmp_path: Path) -> None:
    _chain(tmp_path / "src", 1000)
    async with local_channel() as ch:
        sent, received = await asyncio.gather(send_dir(ch.writer, tmp_path / "src"),
                                              receive_dir(ch.reader, tmp_path / "dst"), return_exceptions=True)
    # before: a bare RecursionError from os.walk
    assert isinstance(sent, LimitExceededError), repr(sent)
    assert f"send_dir {tmp_path / 'src'}" in str(sent) and "MAX_TREE_DEPTH" in str(sent)
    assert isinstance(received, Exception)
    assert sorted(os.listdir(tmp_path)) == ["src"]


async def test_a_dead_receivers_staging_tree_of_any_depth_is_reclaimed(tmp_path: Path) -> None:
    stale = tmp_path / f"{PART_PREFIX}abcdefgh"  # no PID in the name: removed once old
    _chain(stale, 1100, b"x" * 10)
    os.utime(stale, (0, 0))
    (tmp_path / "x.txt").write_text("x")
    async with local_channel() as ch:
        _, receipt = await asyncio.gather(send_file(ch.writer, tmp_path / "x.txt"),
                                          receive_file(ch.reader, tmp_path / "copy.txt"))
    # before: RecursionError from reclaim_stale_parts (Path.rglob), in every receive in this directory
    assert receipt.verified and (tmp_path / "copy.txt").read_text() == "x"
    assert sorted(os.listdir(tmp_path)) == ["copy.txt", "x.txt"]


async def test_send_files_refuses_a_name_deeper_than_the_bound_as_a_limit(tmp_path: Path) -> None:
    """One depth check (``check_entry_path``) for both ends, raising the limit's own error."""
    (tmp_path / "f").write_bytes(b"x")
    name = "/".join(["d"] * (MAX_TREE_DEPTH + 1))
    async with local_channel() as ch:
        sent, received = await asyncio.gather(send_files(ch.writer, [(name, tmp_path / "f")]),
                                              receive_dir(ch.reader, tmp_path / "dst"), return_exceptions=True)
    # before: ValueError("path 'd/d/…' has 257 levels, more than MAX_TREE_DEPTH (256)")
    assert isinstance(sent, LimitExceededError), repr(sent)
    assert f"({MAX_TREE_DEPTH + 1} levels)" in str(sent) and "MAX_TREE_DEPTH" in str(sent)
    assert isinstance(received, Exception)
