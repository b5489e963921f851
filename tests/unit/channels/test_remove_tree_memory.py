"""``files.remove_tree`` (a failed receive's clean-up) held one entry per directory of the whole tree, with its full
path (the directories to visit, then every one visited, to remove at the end): a failed receive of 18,000
directories with 3.5 KB paths grew the receiver by 83 MB while it was removed. Depth first, it holds the directories
from the top down to the one being emptied, each with the names of its subdirectories still to do: +9 MB."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest

from iii_channels.files import remove_tree

pytestmark = pytest.mark.timeout(30)

_LEAVES = 2000


def _long_paths(top: Path) -> str:
    """``top`` / 13 levels of 250 characters / :data:`_LEAVES` directories of 250 characters: paths of ~3.5 KB."""
    path = os.fspath(top)
    os.mkdir(path)
    for level in range(13):
        path = os.path.join(path, f"{level:02d}" + "a" * 248)
        os.mkdir(path)
    for leaf in range(_LEAVES):
        os.mkdir(os.path.join(path, f"{leaf:06d}" + "b" * 244))
    return path


def test_removing_holds_the_current_branch_not_a_path_per_directory(tmp_path: Path) -> None:
    _long_paths(tmp_path / "t")
    tracemalloc.start()
    try:
        assert remove_tree(tmp_path / "t") == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert os.listdir(tmp_path) == []
    # before: 9.5 MB (~4.7 KB a directory: its path and its parent's, twice); now ~1 MB (its name, once)
    assert peak < _LEAVES * 1500, f"{peak / 1e6:.1f} MB held to remove {_LEAVES} directories"


def test_a_symlink_inside_to_a_directory_outside_is_removed_not_followed(tmp_path: Path) -> None:
    (tmp_path / "outside" / "sub").mkdir(parents=True)
    (tmp_path / "outside" / "sub" / "f").write_bytes(b"keep")
    (tmp_path / "t" / "a").mkdir(parents=True)
    (tmp_path / "t" / "a" / "f").write_bytes(b"abc")
    (tmp_path / "t" / "a" / "link").symlink_to(tmp_path / "outside")
    assert remove_tree(tmp_path / "t") == 3
    assert sorted(os.listdir(tmp_path)) == ["outside"]
    assert (tmp_path / "outside" / "sub" / "f").read_bytes() == b"keep"
