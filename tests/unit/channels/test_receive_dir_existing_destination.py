"""``receive_dir`` into an existing empty directory keeps that directory: before, the tree was staged next to it
and renamed over it, so a new directory took its place (a destination made with mode 0700, or 2770 and a group,
came back 0755 with another inode, its setgid bit, group and extended attributes lost); a mount point or the
current directory (``.``) failed with EBUSY after the whole transfer, naming the staging path; ``""`` was taken
for ``.``; and ``../x``, x the current directory, left the process in an unlinked directory. Now the entries are
staged inside it and moved into it at the end, with the same promise: on failure it is left empty."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import functools
import json
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from iii.channels import ChannelWriter
from iii_channels import ChannelSink, IntegrityError, ReaderGoneError, receive_dir, send_dir, send_files, trees
from iii_channels.trees import ENTRY_KEY
from iii_engine.testing import local_channel
from tests.polling import until

pytestmark = pytest.mark.timeout(30)

_PART = ".iii-part-"


def _tree(root: Path) -> dict[str, bytes | None]:
    """Relative path -> content (None for directories), ``.iii-part-*`` entries included."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


def _source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "top.txt").write_bytes(b"top")
    (src / "sub" / "inner.bin").write_bytes(os.urandom(3000))
    (src / "empty").mkdir()
    return src


def _identity(path: Path) -> tuple[int, int, int, int, int]:
    info = os.stat(path)
    return info.st_dev, info.st_ino, info.st_mode, info.st_uid, info.st_gid


@pytest.mark.parametrize("mode", [0o700, 0o2770], ids=["0700", "2770"])
async def test_an_existing_empty_destination_is_kept_as_it_is(tmp_path: Path, mode: int) -> None:
    dest, reference = tmp_path / "dest", tmp_path / "reference"
    for made in (dest, reference):
        made.mkdir()
        if os.geteuid() == 0:
            os.chown(made, -1, 65534)  # another group (nogroup), as a shared directory has
        os.chmod(made, mode)
    os.setxattr(dest, "user.iii_test", b"kept")
    before = _identity(dest)
    # what a plain open() / mkdir() in such a directory gives (the umask's mode, its group, setgid inherited)
    (reference / "f").touch()
    (reference / "d").mkdir()
    src = _source(tmp_path)
    async with local_channel() as ch:
        _, receipt = await asyncio.gather(send_dir(ch.writer, src), receive_dir(ch.reader, dest))
    # before: (dev, another inode, 0o40755, 0, 0): a new directory in its place
    assert _identity(dest) == before, (oct(before[2]), oct(os.stat(dest).st_mode))
    assert os.getxattr(dest, "user.iii_test") == b"kept"
    assert _tree(dest) == _tree(src)  # and no .iii-part-* left in it
    assert receipt.path == dest and {f.path for f in receipt.files} == {dest / "top.txt", dest / "sub" / "inner.bin"}
    plain_file, plain_dir = os.stat(reference / "f"), os.stat(reference / "d")
    for name in ("top.txt", "sub/inner.bin"):
        got = os.stat(dest / name)
        assert (stat.S_IMODE(got.st_mode), got.st_gid) == (stat.S_IMODE(plain_file.st_mode), plain_file.st_gid), name
    for name in ("sub", "sub/deeper", "empty"):
        got = os.stat(dest / name)
        assert (stat.S_IMODE(got.st_mode), got.st_gid) == (stat.S_IMODE(plain_dir.st_mode), plain_dir.st_gid), name
    assert [name for name in os.listdir(tmp_path) if name.startswith(_PART)] == []


@pytest.mark.parametrize("named", [".", "../cwd"])
async def test_the_current_directory_as_the_destination(tmp_path: Path, named: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    src = _source(tmp_path)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    before = _identity(Path("."))
    async with local_channel() as ch:
        results = await asyncio.gather(send_dir(ch.writer, src), receive_dir(ch.reader, named),
                                       return_exceptions=True)
    # before: "." OSError EBUSY after the whole transfer; "../cwd" a success that left the cwd unlinked and empty
    assert not isinstance(results[1], BaseException), results
    assert _identity(Path(".")) == before and os.stat(".").st_nlink > 0
    assert _tree(Path(".")) == _tree(src) == _tree(tmp_path / "cwd")


async def test_an_empty_path_is_refused_before_anything_is_read(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "big").write_bytes(bytes(8 << 20))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    async with local_channel(buffer_size=2) as ch:
        sent, received = await asyncio.gather(send_dir(ch.writer, tmp_path / "src"), receive_dir(ch.reader, ""),
                                              return_exceptions=True)
    # before: all 8 MiB received, then OSError EBUSY '.iii-part-…' -> '.', the sender told it succeeded
    assert isinstance(received, ValueError), received
    assert "receive_dir: the destination is an empty path" in str(received)
    assert isinstance(sent, ReaderGoneError), sent
    assert os.listdir(".") == []


async def test_a_failed_receive_leaves_the_existing_directory_empty(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir(mode=0o700)
    before = _identity(dest)

    async def bad_sender(writer: ChannelWriter) -> None:
        async with ChannelSink(writer, trailer=True) as sink:
            await sink.send_text(json.dumps({ENTRY_KEY: {"path": "ok", "type": "dir"}}))
            await sink.send_text(json.dumps({ENTRY_KEY: {"path": "../escape", "type": "dir"}}))

    async with local_channel() as ch:
        results = await asyncio.gather(bad_sender(ch.writer), receive_dir(ch.reader, dest), return_exceptions=True)
    assert isinstance(results[1], IntegrityError), results
    assert _identity(dest) == before and os.listdir(dest) == []
    assert sorted(os.listdir(tmp_path)) == ["dest"]


async def test_an_entry_added_meanwhile_fails_the_receive_and_nothing_is_moved_in(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (tmp_path / "a.txt").write_text("theirs")

    async def sender(writer: ChannelWriter) -> int:
        # the receive checked it empty once its staging directory is there
        await until(lambda: any(name.startswith(_PART) for name in os.listdir(dest)))
        (dest / "intruder").write_text("mine")
        return await send_files(writer, [tmp_path / "a.txt"])

    async with local_channel() as ch:
        results = await asyncio.gather(sender(ch.writer), receive_dir(ch.reader, dest), return_exceptions=True)
    assert isinstance(results[1], FileExistsError), results
    assert f"receive_dir: {dest} gained 'intruder' while the tree was received: nothing was moved into it" in str(
        results[1])
    assert _tree(dest) == {"intruder": b"mine"}


async def test_a_move_that_fails_moves_the_others_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    src = _source(tmp_path)
    moves: list[str] = []

    def fail_the_second(src_fd: int, name: str, dst_fd: int) -> None:
        moves.append(name)
        if len(moves) == 2:  # the second entry moved into the destination
            raise OSError(5, "Input/output error")

    _on_moves(monkeypatch, fail_the_second)
    async with local_channel() as ch:
        results = await asyncio.gather(send_dir(ch.writer, src), receive_dir(ch.reader, dest), return_exceptions=True)
    monkeypatch.undo()
    assert isinstance(results[1], OSError) and not isinstance(results[1], FileExistsError), results
    assert "; nothing of the tree was left in it" in str(results[1]) and "Input/output error" in str(results[1])
    assert len(moves) == 3  # two moves in (one failed), one back
    assert os.listdir(dest) == []


async def test_a_part_a_killed_receive_left_inside_is_removed(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    stale = dest / ".iii-part-3999999-abcdefgh"  # a pid above the kernel's limit: never a live receiver
    (stale / "half").mkdir(parents=True)
    (stale / "half" / "f").write_bytes(b"partial")
    src = _source(tmp_path)
    async with local_channel() as ch:
        # before: FileExistsError (not an empty directory)
        await asyncio.gather(send_dir(ch.writer, src), receive_dir(ch.reader, dest))
    assert _tree(dest) == _tree(src)


async def test_a_live_receive_inside_refuses_a_second_one(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    live = dest / f".iii-part-{os.getpid()}-abcdefgh"
    live.mkdir(parents=True)
    fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a receiver holds its staging directory
        async with local_channel() as ch:
            results = await asyncio.gather(send_dir(ch.writer, _source(tmp_path)), receive_dir(ch.reader, dest),
                                           return_exceptions=True)
    finally:
        os.close(fd)
    assert isinstance(results[1], FileExistsError), results
    assert f"receive_dir: {dest} exists and is not an empty directory: it holds {live.name!r} (a receive into it " \
           "in progress)" in str(results[1])
    assert os.listdir(dest) == [live.name]


async def test_a_missing_destination_ending_in_dot_dot_is_refused_up_front(tmp_path: Path) -> None:
    async with local_channel() as ch:
        results = await asyncio.gather(send_dir(ch.writer, _source(tmp_path)),
                                       receive_dir(ch.reader, tmp_path / "missing" / ".."), return_exceptions=True)
    assert isinstance(results[1], FileNotFoundError), results
    assert "name the new directory itself" in str(results[1])
    assert not (tmp_path / "missing").exists()


async def test_a_new_destination_is_still_one_rename(tmp_path: Path) -> None:
    """Unchanged: a destination that does not exist appears whole, with the mode a plain mkdir gives."""
    (tmp_path / "plain").mkdir()
    src = _source(tmp_path)
    async with local_channel() as ch:
        await asyncio.gather(send_dir(ch.writer, src), receive_dir(ch.reader, tmp_path / "new" / "copy"))
    assert _tree(tmp_path / "new") == {"copy": None, **{f"copy/{k}": v for k, v in _tree(src).items()}}
    assert stat.S_IMODE(os.stat(tmp_path / "new" / "copy").st_mode) == stat.S_IMODE(os.stat(tmp_path / "plain").st_mode)


# ----------------------------------------------------------------------- moves that never replace (re-attack F1)
# Since the tree is moved into an existing destination entry by entry, another process may make an entry under a
# name not yet moved. rename(2) replaced it (a file, a symlink, an empty directory) and the receive succeeded:
# 171 of 171 files another process made during the moves of 20,000 entries held the receiver's data.

Hook = Callable[[int, str, int], None]


def _on_moves(monkeypatch: pytest.MonkeyPatch, hook: Hook) -> None:
    """Call ``hook(src_fd, name, dst_fd)`` before each move of an entry between the staging directory and the
    destination (in or back), then move it as the receiver does: through ``_move_no_replace``, or the
    ``os.rename`` with directory descriptors that did it before."""
    if hasattr(trees, "_move_no_replace"):
        real_move = trees._move_no_replace

        def move(src_fd: int, name: str, dst_fd: int) -> None:
            hook(src_fd, name, dst_fd)
            real_move(src_fd, name, dst_fd)

        monkeypatch.setattr(trees, "_move_no_replace", move)
        return
    real_rename = os.rename

    def rename(src_path: Any, dst_path: Any, **kwargs: Any) -> None:
        if "dst_dir_fd" in kwargs:
            hook(kwargs["src_dir_fd"], src_path, kwargs["dst_dir_fd"])
        real_rename(src_path, dst_path, **kwargs)

    monkeypatch.setattr(os, "rename", rename)


def _flat_source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "full").mkdir(parents=True)
    (src / "full" / "in.txt").write_bytes(b"received, inside")
    (src / "hollow").mkdir()
    for name in ("a.txt", "b.txt", "c.txt", "d.txt"):
        (src / name).write_bytes(f"received {name}".encode())
    return src


def _without_renameat2(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """Make the receiver take the raw system call (a C library without the wrapper), or its fallback: no
    renameat2 at all (such a C library off x86_64/aarch64, another system), the kernel or file system refusing its
    flag (EINVAL), or no hard links either (EPERM, vfat)."""
    if how == "renameat2":
        return
    if how == "syscall":  # a C library without the wrapper (glibc before 2.28): the raw system call
        class WithoutWrapper:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                self._libc = real_cdll(*args, **kwargs)

            def __getattr__(self, name: str) -> Any:
                if name == "renameat2":
                    raise AttributeError(name)
                return getattr(self._libc, name)

        real_cdll = ctypes.CDLL
        with pytest.MonkeyPatch.context() as patched:
            patched.setattr(ctypes, "CDLL", WithoutWrapper)
            raw = trees._renameat2.__wrapped__()
        assert isinstance(raw, functools.partial), raw
        monkeypatch.setattr(trees, "_renameat2", lambda: raw)
        return
    if how == "EINVAL":
        def refusing(*args: Any) -> int:
            ctypes.set_errno(errno.EINVAL)
            return -1

        monkeypatch.setattr(trees, "_renameat2", lambda: refusing)
        return
    monkeypatch.setattr(trees, "_renameat2", lambda: None)
    if how == "no-links":
        def no_link(*args: Any, **kwargs: Any) -> None:
            raise PermissionError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(os, "link", no_link)


_WAYS = ["renameat2", "syscall", "EINVAL", "no-renameat2", "no-links"]


@pytest.mark.parametrize("how", _WAYS)
async def test_entries_made_meanwhile_under_names_not_yet_moved_are_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    src = _flat_source(tmp_path)
    theirs: dict[str, str] = {}

    def another_process(src_fd: int, name: str, dst_fd: int) -> None:
        if theirs or not os.path.samestat(os.fstat(dst_fd), os.stat(dest)):
            return
        # the first move into the destination is about to be made: every other name is taken meanwhile, each by
        # what rename(2) would replace (an empty directory for a directory; a file or a symlink for a file)
        for i, other in enumerate(sorted(n for n in os.listdir(src_fd) if n != name)):
            if stat.S_ISDIR(os.stat(other, dir_fd=src_fd).st_mode):
                os.mkdir(dest / other)
                theirs[other] = "empty directory"
            elif i % 2:
                os.symlink("their-target", dest / other)
                theirs[other] = "symlink"
            else:
                fd = os.open(dest / other, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.write(fd, b"another process's data")
                os.close(fd)
                theirs[other] = "file"

    _without_renameat2(monkeypatch, how)
    _on_moves(monkeypatch, another_process)
    async with local_channel() as ch:
        results = await asyncio.gather(send_dir(ch.writer, src), receive_dir(ch.reader, dest), return_exceptions=True)
    monkeypatch.undo()
    assert len(theirs) == 5, theirs
    # before: a TreeReceipt, every one of their entries replaced by the receiver's
    assert isinstance(results[1], FileExistsError), results
    found = re.fullmatch(rf"\[Errno 17\] receive_dir: {re.escape(str(dest))} gained '([^']+)' while the tree was "
                         "moved into it: that entry was left as it is; nothing of the tree was left in it",
                         str(results[1]))
    assert found is not None and found[1] in theirs, str(results[1])
    assert sorted(os.listdir(dest)) == sorted(theirs)  # the entry moved in first was moved back, and removed
    for name, kind in theirs.items():
        if kind == "empty directory":
            assert (dest / name).is_dir() and not (dest / name).is_symlink() and os.listdir(dest / name) == [], name
        elif kind == "symlink":
            assert os.readlink(dest / name) == "their-target", name
        else:
            assert not (dest / name).is_symlink() and (dest / name).read_bytes() == b"another process's data", name
    assert sorted(os.listdir(tmp_path)) == ["dest", "src"]


async def test_a_move_back_never_replaces_either(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rollback moves entries back into the staging directory: an entry found there under the same name is
    not replaced (the one moved in stays where it is, and the error says so) instead of being lost."""
    dest = tmp_path / "dest"
    dest.mkdir()
    src = _flat_source(tmp_path)
    into: list[str] = []

    def fail_the_second(src_fd: int, name: str, dst_fd: int) -> None:
        if not os.path.samestat(os.fstat(dst_fd), os.stat(dest)):
            return
        into.append(name)
        if len(into) == 2:
            # in the staging directory, under the name of the one moved in: what rename(2) would replace
            if stat.S_ISDIR(os.stat(into[0], dir_fd=dst_fd).st_mode):
                os.mkdir(into[0], dir_fd=src_fd)
            else:
                os.close(os.open(into[0], os.O_WRONLY | os.O_CREAT | os.O_EXCL, dir_fd=src_fd))
            raise OSError(errno.EIO, "Input/output error")

    _on_moves(monkeypatch, fail_the_second)
    async with local_channel() as ch:
        results = await asyncio.gather(send_dir(ch.writer, src), receive_dir(ch.reader, dest), return_exceptions=True)
    monkeypatch.undo()
    assert isinstance(results[1], OSError) and not isinstance(results[1], FileExistsError), results
    assert f"cannot move the entry {into[1]!r} into {dest} (Input/output error); 1 entries moved in could not be " \
           f"moved back, such as {into[0]!r}" in str(results[1])
    # before: moved back over the directory made there (or failing to, then named as left), removed with it
    assert _tree(dest) == {k: v for k, v in _tree(src).items() if k.split("/")[0] == into[0]}, into


@pytest.mark.parametrize("how", _WAYS)
async def test_a_tree_is_moved_in_whole_without_renameat2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          how: str) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    src = _source(tmp_path)
    _without_renameat2(monkeypatch, how)
    async with local_channel() as ch:
        _, receipt = await asyncio.gather(send_dir(ch.writer, src), receive_dir(ch.reader, dest))
    monkeypatch.undo()
    assert _tree(dest) == _tree(src)  # and no .iii-part-* left in it
    assert all(os.stat(f.path).st_nlink == 1 for f in receipt.files)  # a file linked in is unlinked from the part
    assert sorted(os.listdir(tmp_path)) == ["dest", "src"]


@pytest.mark.parametrize("how", _WAYS)
def test_move_no_replace_refuses_every_kind_of_entry_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           how: str) -> None:
    _without_renameat2(monkeypatch, how)
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    (ours / "d").mkdir(parents=True)
    (ours / "f").write_bytes(b"ours")
    theirs.mkdir()
    (theirs / "f").mkdir()  # an empty directory: rename(2) of a directory replaces it
    os.symlink("elsewhere", theirs / "d")
    src_fd, dst_fd = (os.open(d, os.O_RDONLY | os.O_DIRECTORY) for d in (ours, theirs))
    try:
        for name in ("d", "f"):
            with pytest.raises(FileExistsError) as caught:
                trees._move_no_replace(src_fd, name, dst_fd)
            assert caught.value.filename == name
        os.rmdir(theirs / "f")
        trees._move_no_replace(src_fd, "f", dst_fd)
    finally:
        os.close(src_fd)
        os.close(dst_fd)
    assert sorted(os.listdir(ours)) == ["d"] and (theirs / "f").read_bytes() == b"ours"
    assert os.readlink(theirs / "d") == "elsewhere" and (ours / "d").is_dir()
