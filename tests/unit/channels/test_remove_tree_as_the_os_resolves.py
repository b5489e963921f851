"""``files.remove_tree`` normalised its path as text: ``base/link/..`` (``link`` a symlink to ``elsewhere/sub``) is
``elsewhere`` to the OS but ``base`` to ``os.path.normpath``, so it removed ``base``; and ``receive_dir`` into
``base/link/../dst`` left its staging directory behind when the receive failed (its clean-up looked for it under
``base``). Its error counted errors as entries and named a directory it could not remove by its base name."""

from __future__ import annotations

import asyncio
import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest

from iii.channels import ChannelWriter
from iii_channels import IntegrityError, receive_dir
from iii_channels.files import remove_tree
from iii_channels.integrity import Digest
from iii_channels.sink import ChannelSink
from iii_channels.trees import END_KEY, ENTRY_KEY
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """``base/keep/file``, and ``base/link`` -> ``elsewhere/sub`` (``elsewhere/sub/victim/f``)."""
    (tmp_path / "base" / "keep").mkdir(parents=True)
    (tmp_path / "base" / "keep" / "file").write_bytes(b"data")
    (tmp_path / "elsewhere" / "sub" / "victim").mkdir(parents=True)
    (tmp_path / "elsewhere" / "sub" / "victim" / "f").write_bytes(b"x")
    (tmp_path / "base" / "link").symlink_to(tmp_path / "elsewhere" / "sub")
    return tmp_path / "base"


def test_dot_dot_after_a_symlink_is_refused_and_nothing_is_removed(base: Path, tmp_path: Path) -> None:
    # first: 4 (base/keep/file) and base gone; then realpath, which is text too past a file, a missing entry, a
    # dangling link or a loop: base/missing/.. removed base, base/dangling/.. removed a directory outside base
    (base / "dangling").symlink_to(tmp_path / "victim" / "nope")
    (tmp_path / "victim").mkdir()
    (base / "loop").symlink_to(base / "loop")
    for given in ("link/..", "keep/file/..", "missing/..", "dangling/..", "loop/..", ".", "keep/."):
        with pytest.raises(OSError, match=r"last part is '\.' or '\.\.'"):
            remove_tree(f"{base}/{given}")
    assert (base / "keep" / "file").read_bytes() == b"data"
    assert (tmp_path / "elsewhere" / "sub" / "victim" / "f").exists() and (tmp_path / "victim").is_dir()


def test_a_last_part_that_is_a_symlink_is_never_followed(base: Path, tmp_path: Path) -> None:
    for given in (f"{base}/link", f"{base}/link/", f"{base}/link//"):
        with pytest.raises(NotADirectoryError):
            remove_tree(given)
    assert (tmp_path / "elsewhere" / "sub" / "victim" / "f").exists()
    assert remove_tree(f"{base}/link/victim") == 1  # through the symlink, as the OS goes
    assert (base / "link").is_symlink() and os.listdir(base / "link") == []


async def _short_file(writer: ChannelWriter) -> None:
    """A tree whose one file declares 10 bytes and sends 4: the receive fails after its staging was made."""
    async with ChannelSink(writer, trailer=True) as sink:
        await sink.send_text(json.dumps({ENTRY_KEY: {"path": "f", "type": "file", "size": 10}}))
        await sink.write(b"abcd")
        digest = Digest()
        digest.update(b"abcd")
        await sink.send_text(json.dumps({END_KEY: {"bytes": 4, "sha256": digest.hexdigest()}}))


async def test_a_failed_receive_through_dot_dot_leaves_no_staging(base: Path, tmp_path: Path) -> None:
    async with local_channel() as ch:
        _, received = await asyncio.gather(_short_file(ch.writer), receive_dir(ch.reader, f"{base}/link/../dst"),
                                           return_exceptions=True)
    assert isinstance(received, IntegrityError), repr(received)
    # before: ['.iii-part-<pid>-xxxxxxxx', 'sub'] (the clean-up looked for base/.iii-part-…)
    assert sorted(os.listdir(tmp_path / "elsewhere")) == ["sub"]
    assert sorted(os.listdir(base)) == ["keep", "link"]


def test_the_error_counts_removals_that_failed_and_names_them_in_full(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    top = tmp_path / "t"
    (top / "locked" / "deeper").mkdir(parents=True)
    for i in range(50):
        (top / "locked" / "deeper" / str(i)).write_bytes(b"")
    (top / "a" / "stuck").mkdir(parents=True)
    real_open, real_rmdir = os.open, os.rmdir

    def fake_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        # (opened from its parent's descriptor by name; by its full path before)
        if str(path) in (str(top / "locked"), "locked") and flags & os.O_DIRECTORY:
            raise PermissionError(errno.EACCES, "Permission denied", path)  # as chmod 000 does, but for root too
        return real_open(path, flags, *args, **kwargs)

    def fake_rmdir(path: Any, *args: Any, **kwargs: Any) -> None:
        if path == "stuck":
            raise PermissionError(errno.EPERM, "Operation not permitted", path)
        real_rmdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "rmdir", fake_rmdir)
    with pytest.raises(OSError) as raised:
        remove_tree(top)
    monkeypatch.undo()
    # locked (unlisted, its 51 entries with it) and a/stuck: 2 (a and t, left non-empty by them, not counted)
    # before: "could not remove 4 entries", the rmdir errors naming 'stuck', 'a' and 't' alone
    message = str(raised.value)
    assert "2 removals failed" in message, message
    assert "entries" not in message, message
    # the first, in the order listed (depth first: a/stuck may fail before locked is reached), in full
    assert Path(str(_chain(raised.value)[0].filename)) in {top / "locked", top / "a" / "stuck"}, raised.value
    assert (top / "a" / "stuck").is_dir()


def test_a_failed_rmdir_names_the_full_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    top = tmp_path / "t"
    (top / "a" / "stuck").mkdir(parents=True)
    real_rmdir = os.rmdir

    def fake_rmdir(path: Any, *args: Any, **kwargs: Any) -> None:
        if path == "stuck":
            raise PermissionError(errno.EPERM, "Operation not permitted", path)
        real_rmdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "rmdir", fake_rmdir)
    with pytest.raises(OSError) as raised:
        remove_tree(top)
    monkeypatch.undo()
    # before: (first: [Errno 1] Operation not permitted: 'stuck')
    assert f"(first: [Errno 1] Operation not permitted: '{top / 'a' / 'stuck'}')" in str(raised.value)
    assert "1 removal failed" in str(raised.value)  # a and t, left non-empty by it, not counted


def _chain(exc: BaseException) -> list[OSError]:
    found = []
    cause: BaseException | None = exc.__cause__
    while isinstance(cause, OSError):
        found.append(cause)
        cause = cause.__cause__
    return found
