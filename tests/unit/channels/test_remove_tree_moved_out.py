"""remove_tree with a subtree moved out of the tree by another process while the walk is below it: nothing
outside the tree is removed (descriptors follow a moved directory; the path from the top is checked)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from iii_channels.files import remove_tree


@pytest.mark.parametrize(("depth", "move_level"), [(200, 3), (60, 3), (60, 45)],
                         ids=["above-the-window-deep", "above-the-window", "inside-the-window"])
def test_a_subtree_moved_out_meanwhile_is_left_where_it_was_moved(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, depth: int, move_level: int) -> None:
    top, out = tmp_path / "t", tmp_path / "out"
    out.mkdir()
    for i in range(3):
        (out / f"witness{i}").write_bytes(b"x")
    level = top
    for i in range(depth):
        level /= f"d{i}"
        (level / "side").mkdir(parents=True)
        (level / "side" / "f").write_bytes(b"x")
    moved_from = top.joinpath(*[f"d{i}" for i in range(move_level + 1)])
    real_open = os.open
    planted: list[Path] = []

    def hook(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        # at the deepest directory's open (the walk far below the move): moved out, and files planted there
        if not planted and os.fspath(path).endswith(f"d{depth - 1}"):
            os.rename(moved_from, out / "moved")
            for where, _, _ in os.walk(out / "moved"):
                if os.path.basename(where) == "side":
                    planted.append(Path(where, "late"))
                    planted[-1].write_bytes(b"never in the tree")
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", hook)
    with pytest.raises(OSError) as raised:
        remove_tree(top)
    monkeypatch.undo()
    assert planted
    assert [p for p in planted if not p.exists()] == []  # before: every one removed (13 of 13 at 200/3)
    assert sorted(os.listdir(out)) == ["moved", "witness0", "witness1", "witness2"]
    assert "moved out while being removed" in str(raised.value)
    assert "1 removal failed" in str(raised.value)
    cause = raised.value.__cause__
    assert isinstance(cause, OSError) and cause.errno in (errno.ENOENT, errno.ESTALE)
    assert cause.filename == os.fspath(moved_from)  # the directory moved out, by its path in the tree
    # what is still in the tree is the chain down to where the subtree was (left, not emptied through it)
    assert moved_from.parent.is_dir() and not moved_from.exists()
