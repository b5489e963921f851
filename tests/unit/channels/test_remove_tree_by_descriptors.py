"""``files.remove_tree`` opened each directory by its full path: past ``PATH_MAX`` (4,096 bytes: ~2,100 levels of
one-character names, 20 of 255 bytes) every open failed with ``ENAMETOOLONG`` and the whole tree stayed, though it
said "whatever their depth". It kept every failure as an ``OSError`` with its full path until the end (156 MB for
100,000), counted a subdirectory removed by someone else after the listing as a failure (leaving its ancestors),
named the child when the parent was the one replaced, and refused ``""`` as "last part is '.' or '..'"."""

from __future__ import annotations

import errno
import os
import subprocess
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iii_channels.files import _TREE_FDS, remove_tree

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def tmp_path(tmp_path: Path) -> Iterator[Path]:
    """pytest's, emptied by ``rm -rf`` afterwards (a tree left by a failure is too deep for its clean-up)."""
    yield tmp_path
    subprocess.run(["rm", "-rf", "--", *(os.fspath(tmp_path / entry) for entry in os.listdir(tmp_path))],
                   check=True)


def _chain(top: Path, levels: int, name: str = "d", file: bytes = b"abc") -> None:
    """``top/name/name/…`` ``levels`` deep, ``f`` holding ``file`` in the deepest: made from descriptors, never
    by a long path."""
    os.mkdir(top)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(levels):
            os.mkdir(name, dir_fd=fd)
            deeper = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = deeper
        written = os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=fd)
        os.write(written, file)
        os.close(written)
    finally:
        os.close(fd)


@pytest.mark.parametrize(("levels", "name"), [(2_100, "d"), (20, "x" * 255)])
def test_a_tree_past_path_max_is_removed(tmp_path: Path, levels: int, name: str) -> None:
    # before: OSError ENAMETOOLONG (File name too long), the whole tree left
    _chain(tmp_path / "t", levels, name)
    assert remove_tree(tmp_path / "t") == 3
    assert os.listdir(tmp_path) == []


def test_the_directory_descriptors_held_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _chain(tmp_path / "t", 300)
    real_scandir = os.scandir
    most = 0

    def scandir(*args: Any) -> Any:
        nonlocal most
        most = max(most, len(os.listdir("/proc/self/fd")))
        return real_scandir(*args)

    before = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(os, "scandir", scandir)
    assert remove_tree(tmp_path / "t") == 3
    # one descriptor per level of the branch would be 300; the top and the deepest _TREE_FDS (+ listdir's own)
    assert most - before <= _TREE_FDS + 2, (most, before)
    assert len(os.listdir("/proc/self/fd")) == before and os.listdir(tmp_path) == []


def test_failures_are_counted_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    long_dir = tmp_path / "t" / ("x" * 250) / ("y" * 250) / ("z" * 250) / "locked"
    long_dir.mkdir(parents=True)
    fd = os.open(long_dir, os.O_RDONLY | os.O_DIRECTORY)
    for n in range(3000):
        os.close(os.open(f"f{n:05d}", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
    os.close(fd)
    real_unlink = os.unlink

    def unlink(name: Any, *args: Any, **kwargs: Any) -> None:
        if str(name).startswith("f"):
            raise PermissionError(errno.EPERM, "Operation not permitted", name)
        real_unlink(name, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    tracemalloc.start()
    try:
        with pytest.raises(OSError) as raised:
            remove_tree(tmp_path / "t")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "3000 removals failed" in str(raised.value), raised.value
    assert raised.value.__cause__ is not None
    assert Path(str(raised.value.__cause__.filename)).parent == long_dir
    # before: 3,000 errors of ~1 KB paths held; now one directory's names
    assert peak < 2_000_000, f"{peak / 1e6:.1f} MB"


def test_a_subdirectory_removed_by_someone_else_meanwhile_is_gone_already(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t" / "a" / "gone").mkdir(parents=True)
    (tmp_path / "t" / "b").mkdir()
    real_open = os.open

    removed = []

    def fake_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        # listed, then removed by another process's clean-up before it is opened (where the walk has its parent
        # now: the directory it opens it from)
        if str(path).endswith("gone") and not removed:
            os.rmdir(path, dir_fd=kwargs.get("dir_fd"))
            removed.append(path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    # before: OSError "1 removal failed (first: ... No such file or directory: '.../t/a/gone')", t and t/a left
    assert remove_tree(tmp_path / "t") == 0
    assert removed and os.listdir(tmp_path) == []


def test_a_failure_deep_down_is_named_by_a_bounded_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _chain(tmp_path / "t", 2500, "dd")
    real_unlink = os.unlink

    def unlink(name: Any, *args: Any, **kwargs: Any) -> None:
        if name == "f":
            raise PermissionError(errno.EPERM, "Operation not permitted", name)
        real_unlink(name, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    with pytest.raises(OSError) as raised:
        remove_tree(tmp_path / "t")
    first = str(raised.value.__cause__.filename) if raised.value.__cause__ else ""
    # its 7.5 KB path cut in the middle: the start and the last parts kept
    assert len(first) == 4096 and first.startswith(os.fspath(tmp_path / "t" / "dd")) and first.endswith("/dd/f")
    assert "…" in first and len(str(raised.value)) < 4096 + 2 * len(os.fspath(tmp_path)) + 200
    assert "1 removal failed" in str(raised.value)
    monkeypatch.undo()
    assert remove_tree(tmp_path / "t") == 3


def test_a_parent_replaced_is_the_one_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "base" / "t").mkdir(parents=True)
    real_scandir = os.scandir

    def scandir(*args: Any) -> Any:
        if (tmp_path / "base" / "t").is_dir():  # t listed: its parent is swapped for another directory
            os.rename(tmp_path / "base", tmp_path / "moved")
            os.mkdir(tmp_path / "base")
        return real_scandir(*args)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(OSError) as raised:
        remove_tree(tmp_path / "base" / "t")
    assert raised.value.__cause__ is not None and raised.value.__cause__.errno == errno.ESTALE
    # before: named base/t, the directory that was not replaced
    assert raised.value.__cause__.filename == os.fspath(tmp_path / "base"), raised.value
    assert (tmp_path / "moved" / "t").is_dir()


def test_an_empty_path_is_refused_as_such() -> None:
    with pytest.raises(OSError, match="empty path") as raised:
        remove_tree("")
    assert raised.value.errno == errno.EINVAL
