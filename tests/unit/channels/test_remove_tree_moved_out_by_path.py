"""``files.remove_tree`` with another process moving one of the tree's directories out by its path, at every
moment of the walk in turn (the k-th call it makes to ``os``): nothing the moved directory holds is removed.

Before, each directory was emptied in place through its descriptor, after finding it again by its path from the
top: (1) moved out with a symlink left at its old name, ``os.stat`` of that path followed the symlink in its middle
and found it "in place", and its files were unlinked where it had been moved; (2) moved out between that check
and its unlinks, its files were unlinked where it now was (the check and the unlinks are not one step). Now each
directory is renamed into a private quarantine directory inside the top before anything in it is unlinked: its path
in the tree is gone, so a move by that path finds nothing (or, done before, takes it out whole, never emptied)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from iii_channels.files import remove_tree

pytestmark = pytest.mark.timeout(30)

_HOOKED = ("open", "scandir", "stat", "lstat", "fstat", "unlink", "rmdir", "rename", "mkdir")


def _tree(top: Path, files: int) -> None:
    """``top/a/b`` holding ``files`` files, ``top/a`` 3 more, ``top/c/h``."""
    (top / "a" / "b").mkdir(parents=True)
    (top / "c").mkdir()
    (top / "c" / "h").write_bytes(b"h")
    for i in range(files):
        (top / "a" / "b" / f"f{i}").write_bytes(b"x")
    for i in range(3):
        (top / "a" / f"g{i}").write_bytes(b"y")


def _remove_moving_at(call: int, tmp: Path, files: int, move: Callable[[Path, Path], None],
                      monkeypatch: pytest.MonkeyPatch) -> tuple[bool, list[Path]]:
    """``remove_tree`` of a fresh tree, ``move(top, out)`` done at its ``call``-th call to ``os``: whether that
    call was reached, and the files the move took out of the tree."""
    top, out = tmp / "t", tmp / "out"
    out.mkdir()
    _tree(top, files)
    calls = 0
    reached = False
    moved: list[Path] = []
    busy = False

    def hooked(real: Callable[..., Any]) -> Callable[..., Any]:
        def call_os(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls, reached, busy
            if not busy:
                calls += 1
                if calls == call:
                    reached, busy = True, True
                    try:
                        move(top, out)
                        moved.extend(Path(where, f) for where, _, names in os.walk(out) for f in names)
                    except FileNotFoundError:
                        pass  # not at its name any more (or gone): nothing taken out
                    finally:
                        busy = False
            return real(*args, **kwargs)
        return call_os

    for name in _HOOKED:
        monkeypatch.setattr(os, name, hooked(getattr(os, name)))
    try:
        remove_tree(top)
    except OSError:
        pass  # a failure counted is fine; what matters is what it removed
    finally:
        monkeypatch.undo()
    return reached, moved


def _at_every_call(tmp_path: Path, files: int, move: Callable[[Path, Path], None],
                   monkeypatch: pytest.MonkeyPatch) -> int:
    """The move at each call of the walk in turn; the runs where it took files out (all of which must stay)."""
    took_out = 0
    for call in range(1, 2000):
        tmp = tmp_path / str(call)
        tmp.mkdir()
        reached, moved = _remove_moving_at(call, tmp, files, move, monkeypatch)
        if not reached:
            return took_out
        gone = [p for p in moved if not p.exists()]
        assert gone == [], f"the move at call {call}: {len(gone)} of {len(moved)} files removed outside the tree"
        took_out += bool(moved)
    raise AssertionError("the walk never ended")


def test_a_directory_moved_out_with_a_symlink_at_its_old_name_keeps_its_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def move(top: Path, out: Path) -> None:
        os.rename(top / "a", out / "a")
        os.symlink(out / "a", top / "a")

    # before: the move once the walk was in a/b: a/b's 20 files removed in out/a/b (the path t/a/b, through the
    # symlink t/a, found the directory held "in place")
    took_out = _at_every_call(tmp_path, 20, move, monkeypatch)
    assert took_out > 0  # (the moves before the walk reached a: a left whole)


def test_a_directory_moved_out_while_it_is_emptied_keeps_its_files(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def move(top: Path, out: Path) -> None:
        os.rename(top / "a" / "b", out / "b")

    # before: the move after a/b was found in place, before its unlinks: the rest of its 40 files removed in out/b
    took_out = _at_every_call(tmp_path, 40, move, monkeypatch)
    assert took_out > 0


def test_a_directory_replaced_between_its_open_and_its_rename_is_put_back_and_left(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    top = tmp_path / "t"
    _tree(top, 5)
    real_rename = os.rename
    swapped: list[str] = []

    def rename(src: Any, dst: Any, *, src_dir_fd: int | None = None, dst_dir_fd: int | None = None) -> None:
        if src == "b" and not swapped:  # a/b opened, found to be the one listed: swapped for an empty directory
            swapped.append(src)
            real_rename("b", "aside", src_dir_fd=src_dir_fd, dst_dir_fd=src_dir_fd)
            os.mkdir("b", dir_fd=src_dir_fd)
        real_rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError) as raised:
        remove_tree(top)
    monkeypatch.undo()
    assert swapped
    assert "1 removal failed" in str(raised.value) and "replaced while being removed" in str(raised.value)
    assert raised.value.__cause__ is not None and raised.value.__cause__.filename == os.fspath(top / "a" / "b")
    # the one renamed (not the one opened) put back; the one opened never emptied; both back in the tree
    assert sorted(os.listdir(top)) == ["a"] and sorted(os.listdir(top / "a")) == ["aside", "b"]
    assert os.listdir(top / "a" / "b") == [] and len(os.listdir(top / "a" / "aside")) == 5


def test_an_empty_directory_put_at_the_tops_name_is_not_removed(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # attack on ea6c64b3, A1: the tree moved away mid-walk and another process's empty directory made at its name:
    # that directory was removed and the call reported success (25 of 30 rounds with a real second process)
    top = tmp_path / "t"
    (top / "a" / "b").mkdir(parents=True)
    (top / "a" / "b" / "f").write_bytes(b"x")
    real_rmdir = os.rmdir
    swapped = []

    def rmdir(name: Any, *args: Any, **kwargs: Any) -> None:
        if not swapped and str(name).startswith(".iii-removing-"):  # the quarantine's, just before the top's
            os.rename(top, tmp_path / "moved")
            os.mkdir(top)
            swapped.append(os.lstat(top).st_ino)
        real_rmdir(name, *args, **kwargs)

    monkeypatch.setattr(os, "rmdir", rmdir)
    with pytest.raises(OSError, match="moved out while being removed"):
        remove_tree(top)
    assert swapped and top.is_dir() and os.lstat(top).st_ino == swapped[0]  # the other's directory is still there
