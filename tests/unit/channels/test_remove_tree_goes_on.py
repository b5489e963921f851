"""``files.remove_tree`` (staging trees, stale parts): it stopped at its first error, where the
``shutil.rmtree(ignore_errors=True)`` it replaced went on, leaving everything after one stubborn entry. (A directory
swapped for a symlink meanwhile: test_remove_tree_moved_out_by_path.py.)"""

from __future__ import annotations

import os
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
