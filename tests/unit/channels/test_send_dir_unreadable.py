"""``send_dir`` of a tree it cannot read all of fails, naming the path, instead of sending the rest as complete.

``os.walk`` without ``onerror`` skipped a directory it could not list, and an entry whose ``stat`` failed was left
out: the receiver verified a tree that lacked them. These tests run as any user: the failing calls are simulated.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from iii.channels import ChannelAbortedError
from iii_channels import receive_dir, send_dir
from iii_engine.testing import local_channel


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "private").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "private" / "payroll.csv").write_text("secret rows")
    return src


async def _send_fails(src: Path, tmp_path: Path) -> tuple[BaseException, BaseException]:
    async with local_channel() as ch:
        sent, received = await asyncio.gather(send_dir(ch.writer, src), receive_dir(ch.reader, tmp_path / "dst"),
                                              return_exceptions=True)
    assert isinstance(sent, BaseException), sent
    assert isinstance(received, BaseException), received
    assert not (tmp_path / "dst").exists()
    return sent, received


async def test_a_directory_that_cannot_be_listed_fails_the_send(
        tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_scandir = os.scandir

    def scandir(path: str | os.PathLike[str] | int = ".") -> os.ScandirIterator[str]:  # type: ignore[misc]
        if not isinstance(path, int) and os.path.basename(os.fspath(path)) == "private":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    sent, received = await _send_fails(tree, tmp_path)
    assert isinstance(sent, PermissionError), repr(sent)
    assert str(sent) == f"[Errno 13] send_dir cannot read {tree / 'private'} (Permission denied); nothing was sent"
    assert isinstance(received, ChannelAbortedError), repr(received)


async def test_an_entry_that_cannot_be_looked_at_fails_the_send(
        tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_stat = os.stat

    def stat(path: str | os.PathLike[str], *args: object, **kwargs: object) -> os.stat_result:
        if os.path.basename(os.fspath(path)) == "payroll.csv":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", stat)
    sent, _ = await _send_fails(tree, tmp_path)
    assert isinstance(sent, PermissionError), repr(sent)
    assert f"send_dir cannot read {tree / 'private' / 'payroll.csv'} (Permission denied)" in str(sent)


async def test_a_dangling_symlink_is_still_left_out(tree: Path, tmp_path: Path) -> None:
    (tree / "gone").symlink_to(tree / "nowhere")
    async with local_channel() as ch:
        _, receipt = await asyncio.gather(send_dir(ch.writer, tree), receive_dir(ch.reader, tmp_path / "dst"))
    assert sorted(f.path.name for f in receipt.files) == ["a.txt", "payroll.csv"]
