"""``files.remove_tree`` (staging trees, stale parts): it stopped at its first error, where the
``shutil.rmtree(ignore_errors=True)`` it replaced went on, leaving everything after one stubborn entry; and its
final ``rmdir`` pass went by path, so an intermediate directory swapped for a symlink meanwhile made it remove an
empty directory outside the tree."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iii_channels.files import remove_tree

pytestmark = pytest.mark.timeout(30)


def test_an_entry_that_cannot_be_removed_does_not_keep_the_rest(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    top = tmp_path / "t"
    for sub in ("a", "b", "c"):
        (top / sub).mkdir(parents=True)
        for name in ("1", "2", "3"):
            (top / sub / name).write_bytes(b"xy")
    real_unlink = os.unlink

    def unlink(name: Any, *args: Any, **kwargs: Any) -> None:
        if name == "2":
            raise PermissionError(1, "Operation not permitted", name)
        real_unlink(name, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    with pytest.raises(OSError) as raised:
        remove_tree(top)
    monkeypatch.undo()
    # before: PermissionError(1, 'Operation not permitted') at the first "2", with a/1 … c/3 left
    assert "3 removals failed" in str(raised.value), raised.value  # 3 files (their directories and t not counted)
    assert isinstance(raised.value.__cause__, PermissionError)
    left = sorted(str(p.relative_to(top)) for p in top.rglob("*"))
    assert left == ["a", "a/2", "b", "b/2", "c", "c/2"]


@pytest.fixture
def swap_after_last_scan(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """``t/a/b``: once ``b`` (the last directory) is listed, ``t/a`` becomes a symlink to ``outside``, which holds
    an empty ``b`` of its own. Yields ``outside``."""
    top, outside = tmp_path / "t", tmp_path / "outside"
    (top / "a" / "b").mkdir(parents=True)
    (outside / "b").mkdir(parents=True)
    real_scandir = os.scandir
    calls = 0

    def scandir(*args: Any) -> Any:
        nonlocal calls
        listing = real_scandir(*args)
        calls += 1
        if calls == 3:  # t, t/a, t/a/b
            os.rename(top / "a", top / "moved")
            os.symlink(outside, top / "a")
        return listing

    monkeypatch.setattr(os, "scandir", scandir)
    yield outside


def test_a_parent_swapped_for_a_symlink_removes_nothing_outside(tmp_path: Path, swap_after_last_scan: Path) -> None:
    with pytest.raises(OSError):
        remove_tree(tmp_path / "t")
    # before: outside/b was removed (rmdir("t/a/b") followed the symlink)
    assert (swap_after_last_scan / "b").is_dir()
