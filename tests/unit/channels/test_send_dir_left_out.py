"""``send_dir`` leaves out what is gone or points nowhere, as its docstring says, and fails only on what it cannot
read: a subdirectory removed between its parent's listing and its own failed the whole send
(FileNotFoundError), and a self-referencing symlink (``ln -s loop loop``) failed it with ELOOP where a dangling
symlink is skipped."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from iii_channels import receive_dir, send_dir
from iii_channels.trees import _walk
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "sub" / "b.txt").write_text("b")
    return src


async def test_a_self_referencing_symlink_is_left_out(tree: Path, tmp_path: Path) -> None:
    (tree / "loop").symlink_to("loop")
    async with local_channel() as ch:
        _, receipt = await asyncio.gather(send_dir(ch.writer, tree), receive_dir(ch.reader, tmp_path / "dst"))
    assert sorted(f.name for f in receipt.files) == ["a.txt", "sub/b.txt"]  # before: OSError [Errno 40]


async def test_a_subdirectory_removed_before_it_is_scanned_is_left_out(
        tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_scandir = os.scandir

    def scandir(path: str | os.PathLike[str] | int = ".") -> os.ScandirIterator[str]:  # type: ignore[misc]
        if not isinstance(path, int) and os.path.basename(os.fspath(path)) == "sub":
            raise FileNotFoundError(2, "No such file or directory", os.fspath(path))  # removed meanwhile
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    async with local_channel() as ch:
        _, receipt = await asyncio.gather(send_dir(ch.writer, tree), receive_dir(ch.reader, tmp_path / "dst"))
    assert [f.name for f in receipt.files] == ["a.txt"]  # before: FileNotFoundError, send_dir cannot read …/sub
    assert receipt.directories == []  # gone, not sent as an empty directory


def test_the_tree_root_removed_before_it_is_scanned_still_fails(
        tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No tree is not an empty tree: that one is never sent as a complete, empty directory."""
    real_scandir = os.scandir

    def scandir(path: str | os.PathLike[str] | int = ".") -> os.ScandirIterator[str]:  # type: ignore[misc]
        if not isinstance(path, int) and os.fspath(path) == os.fspath(tree):
            raise FileNotFoundError(2, "No such file or directory", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(FileNotFoundError, match="send_dir cannot read"):
        _walk(tree)
