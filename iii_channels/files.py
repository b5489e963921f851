"""Send and receive files through channels in constant memory.

``receive_file`` writes to a temporary name in the target directory and renames it only once the stream ended
normally and (when a trailer came) was verified; on any failure the temporary file is removed, so a partial file
never appears under the final name, and the reader is closed so the writer learns at once (``ReaderGoneError``).

A receiver that dies without cleaning up (``kill -9``, power loss) leaves its ``.iii-part-<pid>-…`` behind. The
owner holds an exclusive ``flock`` on it while writing, so the next receive in that directory
(:func:`reclaim_stale_parts`) can tell a dead part (unlocked, owner PID gone) from a live one and removes it.

``send_file`` first sends a text header ``{"iii_channels_file": {"name": …, "size": …}}`` so the receiver knows
the size for its progress bar, then the bytes, then the integrity trailer.

Example (the receiver's progress knows the total from the header; no part file is left behind):
    >>> import asyncio, tempfile
    >>> from iii_engine.testing import local_channel
    >>> async def transfer(writer, reader, tmp: str, seen: list[tuple[int, int | None]]) -> FileReceipt:
    ...     _, receipt = await asyncio.gather(
    ...         send_file(writer, f"{tmp}/big.iso", chunk_size=40_000),
    ...         receive_file(reader, f"{tmp}/copy.iso", progress=lambda done, total: seen.append((done, total))))
    ...     return receipt
    >>> async def demo() -> tuple[int, bool, tuple[int, int | None], list[str]]:
    ...     async with local_channel() as ch:
    ...         seen: list[tuple[int, int | None]] = []
    ...         with tempfile.TemporaryDirectory() as tmp:
    ...             Path(tmp, "big.iso").write_bytes(bytes(100_000))
    ...             receipt = await transfer(ch.writer, ch.reader, tmp, seen)
    ...             names = sorted(os.listdir(tmp))
    ...         return receipt.size, receipt.verified, seen[-1], names
    >>> asyncio.run(demo())
    (100000, True, (100000, 100000), ['big.iso', 'copy.iso'])
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import secrets
import stat
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NoReturn

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.channels import ChannelReader, ChannelWriter

from .errors import FileChangedError, IntegrityError
from .integrity import Digest
from .progress import Progress, check_progress, printable
from .sink import ChannelSink
from .source import ChannelSource, _release_writer

FILE_HEADER_KEY = "iii_channels_file"
DEFAULT_CHUNK = 1024 * 1024
PART_PREFIX = ".iii-part-"
# A part whose name carries no owner PID (made before owners were recorded), or whose PID is alive but which
# nobody locks, is only reclaimed after this long untouched: its writer could be between create and lock.
STALE_PART_AGE_S = 3600.0

log = logging.getLogger("iii_channels.files")


def new_file_mode() -> int:
    """``0o666`` minus the process umask: the mode ``open()`` would give a new file (``mkstemp`` uses 0600).

    Example:
        >>> new_file_mode() & 0o600
        384
    """
    return 0o666 & ~_umask_value()


def _new_dir_mode() -> int:
    """``0o777`` minus the process umask: the mode ``mkdir()`` would give (``mkdtemp`` uses 0700)."""
    return new_file_mode() | (0o111 & ~_umask_value())


def _umask_value() -> int:
    global _umask
    if _umask is None:
        _umask = _read_umask()
    return _umask


_umask: int | None = None


def _read_umask() -> int:
    # Reading it from /proc avoids os.umask()'s set-and-restore, which races with other threads creating files.
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def check_receive_target(path: str | os.PathLike[str]) -> tuple[bool, Path]:
    """``(is_directory, directory_to_write_in)`` for a receive target, or an error naming what is wrong.

    A path ending in ``/`` must be an existing directory (``FileNotFoundError`` / ``NotADirectoryError``), so a
    missing directory never turns into a file of that name; a file path needs an existing directory to live in;
    either directory must be writable (``PermissionError``).

    Example:
        >>> check_receive_target(tempfile.gettempdir() + "/")[0]
        True
    """
    text = os.fspath(path)
    if not text:
        raise ValueError("the receive target is an empty path")
    target = Path(text)
    if os.path.isdir(target):
        directory, is_dir = target, True
    elif text.endswith(os.sep) or (os.altsep is not None and text.endswith(os.altsep)):
        if os.path.lexists(target):
            raise NotADirectoryError(f"{text} is not a directory")
        raise FileNotFoundError(f"directory {text} does not exist")
    else:
        directory, is_dir = target.parent, False
        if os.path.lexists(directory) and not os.path.isdir(directory):
            raise NotADirectoryError(f"{directory} (the directory of {text}) is not a directory")
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"directory {directory} (for {text}) does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write to directory {directory}")
    if not is_dir:
        check_replaceable(target)
    return is_dir, directory


def check_replaceable(path: str | os.PathLike[str]) -> None:
    """Nothing, when ``path`` does not exist or is a regular file; ``FileExistsError`` naming it and what it is
    otherwise (a symlink, FIFO, device, socket or directory).

    Why: a received file is placed by renaming a new file over the target, which replaces whatever is there: a FIFO
    someone waits on became a regular file (its reader got nothing), a symlink was replaced (its target kept its old
    contents), and ``--out /dev/null`` run as root would replace the device node.

    Example:
        >>> check_replaceable("/dev/null")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileExistsError: /dev/null is a character device, not a regular file: refusing to replace it ...
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise FileExistsError(f"{os.fspath(path)} is {_file_kind(mode)}, not a regular file: refusing to replace it "
                              "with the received file (remove it, or name another path)")


def _file_kind(mode: int) -> str:
    """What a file of ``mode`` is, in words.

    Example:
        >>> _file_kind(stat.S_IFIFO), _file_kind(stat.S_IFLNK)
        ('a FIFO', 'a symlink')
    """
    kinds = ((stat.S_ISLNK, "a symlink"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))
    return next((words for test, words in kinds if test(mode)), "not a regular file")


async def _abort_writer(writer: ChannelWriter, reason: str) -> None:
    """Abort a channel whose sender fails before it wrote anything, so the reader hears now: a writer that never
    attached reaches it only at the channel's attach deadline (300 s on our engine) as ``ChannelExpiredError``.
    Errors are swallowed: this runs on a failure path, and the error that got it here is the one to report."""
    with contextlib.suppress(Exception):
        await asyncio.shield(writer.abort(reason))


def check_chunk_size(chunk_size: object) -> int:
    """``chunk_size`` if it is a positive ``int``; ``TypeError`` / ``ValueError`` naming it otherwise.

    ``0`` would read nothing and send every file as empty, under a trailer that verifies; a negative size would
    read each file whole into memory.

    Example:
        >>> check_chunk_size(0)
        Traceback (most recent call last):
        ...
        ValueError: chunk_size must be at least 1 byte, got 0
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(f"chunk_size must be a number of bytes (int), got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1 byte, got {chunk_size}")
    return chunk_size


def _create_part_file(directory: str | os.PathLike[str]) -> tuple[int, str]:
    """A new, locked ``.iii-part-<pid>-…`` file in ``directory``: ``(fd, path)``; the lock lives with the fd."""
    fd, name = tempfile.mkstemp(prefix=f"{PART_PREFIX}{os.getpid()}-", dir=directory)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.fchmod(fd, new_file_mode())
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
    return fd, name


def _lock_part_dir(path: str | os.PathLike[str]) -> int:
    """Lock the ``.iii-part-<pid>-…`` staging directory ``path`` as live; close the returned fd to release."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def reclaim_stale_parts(directory: str | os.PathLike[str]) -> dict[Path, int]:
    """Remove the ``.iii-part-*`` files and staging directories in ``directory`` that no live receiver owns;
    returns what was removed, with the bytes each held.

    Only names a receiver gives its parts are looked at (``.iii-part-<pid>-`` and ``tempfile``'s random
    characters, nothing more): a file stored under another ``.iii-part-…`` name is never touched.
    An entry is live while its owner holds the ``flock`` (taken right after creation, kept until the rename).
    An unlocked entry is removed when the PID in its name is gone, or when it is older than
    :data:`STALE_PART_AGE_S` (no PID in the name, or the PID was reused). Symlinks are never followed.

    Example:
        >>> reclaim_stale_parts("/nonexistent")
        {}
    """
    removed: dict[Path, int] = {}
    try:
        entries = [e for e in os.scandir(directory) if _is_part_name(e.name)]
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return removed
    for entry in entries:
        with contextlib.suppress(OSError):
            size = _reclaim(Path(entry.path))
            if size is not None:
                log.info("removed the stale partial transfer %s (%d bytes)", entry.path, size)
                removed[Path(entry.path)] = size
    return removed


def _reclaim(path: Path) -> int | None:
    """Remove ``path`` if it is a dead part; its size in bytes if removed, else ``None``."""
    info = os.lstat(path)
    is_dir = stat.S_ISDIR(info.st_mode)
    if not (is_dir or stat.S_ISREG(info.st_mode)):
        return None
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | (os.O_DIRECTORY if is_dir else 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # its owner is writing it
        held = os.fstat(fd)
        if (held.st_dev, held.st_ino) != (info.st_dev, info.st_ino):
            return None  # replaced meanwhile
        pid = _owner_pid(path.name)
        old = time.time() - held.st_mtime > STALE_PART_AGE_S
        if not old and (pid is None or _pid_alive(pid)):
            return None
        if is_dir:
            size = remove_tree(path)
        else:
            size = held.st_size
            os.unlink(path)
        return size
    finally:
        os.close(fd)


def remove_tree(path: str | os.PathLike[str]) -> int:
    """Remove the directory ``path`` and everything under it; returns the bytes its regular files held.

    Nothing outside the tree is unlinked, even while another process moves its directories: each directory is
    renamed, before anything in it is unlinked, into a quarantine directory it makes inside ``path`` (a random
    ``.iii-removing-…`` name, mode 0o700), and emptied there. A descriptor follows its directory wherever it is
    moved, and a check by path cannot be one step with the unlinks after it; a directory in the quarantine has no
    path in the tree any more (a move by its old path finds nothing), and only this user (or root) may take an
    entry out of a 0o700 directory. What it renamed is found to be the directory it opened (``st_dev``,
    ``st_ino``), else it is put back and left ("replaced while being removed", a failure). A directory moved out
    before its turn is gone already, left whole where it is now; a symlink left at its name is never followed (it
    stays, and counts as a failure: "Not a directory"). The top itself is removed only if the entry at its name still
    is the directory emptied. The quarantine protects against other users' processes only: one of this user (or root)
    that moves entries out of it can have files unlinked where it moved them. The files directly in ``path`` are
    ``path``'s own, unlinked wherever it is. A directory it cannot rename (not writable, a mount point) is a failure,
    left whole.

    Iterative (an explicit stack, depth first, each directory removed once emptied), unlike ``shutil.rmtree`` /
    ``Path.rglob`` on Python 3.11, which recurse per level, and by directory descriptors, never by a path from
    ``path`` down (past ``PATH_MAX``, 4,096 bytes, one fails with ``ENAMETOOLONG``): a staging tree of any depth (a
    peer's ``d/d/d/…``, 10,000 levels, or 20 levels of 255-byte names) is removed, never left behind. It holds the
    directories from ``path`` down to the one being emptied (a name, a name in the quarantine and an identity each,
    with the names of the subdirectories it has left), and one directory's names at a time: never a path per
    directory of the tree. At most :data:`_TREE_FDS` of those directories are held open (the deepest); one above
    them is opened again from the quarantine, and found to be the same. Each directory is opened from its parent's
    descriptor and found to be the one listed; one removed by someone else between its listing and its rename is
    gone already, not a failure. ``path`` is used as given, never normalised as text (``base/link/..`` is not
    ``base`` to the OS); an empty path, or one whose last part is ``.`` or ``..``, is refused (``OSError``
    ``EINVAL``), as ``rm`` refuses it: name the directory itself. Its last part is never followed: a symlink, even
    written ``link/``, is ``NotADirectoryError``. Symlinks inside are removed, never followed. ``path`` itself is
    removed from within its parent, found to be the directory it was. An entry it cannot remove does not stop it:
    the rest is removed, then one ``OSError`` counts the removals that failed (a directory it cannot list counts
    once, whatever it holds; the directories above a failure, left non-empty by it and put back in place from the
    quarantine, are not tried nor counted) and names the first one, by its full path in the tree (past 4,096
    characters cut in the middle), its cause; the others are counted, not kept.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     deep = Path(tmp, "t")
        ...     deep.mkdir()
        ...     for _ in range(1200):
        ...         deep /= "d"
        ...         deep.mkdir()
        ...     _ = (deep / "f").write_bytes(b"abc")
        ...     remove_tree(Path(tmp, "t")), os.listdir(tmp)
        (3, [])
    """
    top, parent, name = _tree_top(os.fspath(path))
    info = os.lstat(top)
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", top)
    top_parent = os.stat(parent)
    size = 0
    failed = 0
    first: OSError | None = None
    # Depth first: the stack holds the directories from top down to the one being emptied, each with its
    # subdirectories still to do (names), and a directory is removed as soon as it is empty. Not one entry per
    # directory of the tree (a failed receive's 18,000 directories of 3.5 KB paths held them all, +83 MB).
    stack: list[_Level] = []
    quarantine = -1  # its descriptor, once made (the first time top has a subdirectory)
    quarantine_name = ""
    taken: set[str] = set()  # the names in the quarantine: the stack's directories' there

    def fail(exc: OSError, *names: str, path: str | None = None) -> None:
        """Count a removal that failed; the first is kept, named by its full path (``path``, else the stack's
        directories then ``names``): the others are counted, not kept (100,000 of them held 156 MB)."""
        nonlocal failed, first
        failed += 1
        if first is None:
            if path is None:
                path = os.path.join(top, *(level.name for level in stack[1:]), *names)
            first = _named(exc, _path_shown(path))

    def listed(fd: int, level: _Level) -> None:
        """``level``'s directory (open as ``fd``, the deepest, in the quarantine or top) emptied of its files and
        symlinks, its subdirectories noted."""
        nonlocal size
        try:
            # Unlinked once listed, not while (a directory changed under its reader may skip entries); kept as
            # names and sizes, not the listing's entries (each holds its name twice and its stat).
            others: list[tuple[str, int]] = []  # (name, bytes if a regular file)
            with os.scandir(fd) as listing:
                for entry in listing:
                    try:
                        entry_info = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # gone already
                    except OSError as exc:
                        fail(exc, entry.name)
                        level.held = True
                        continue
                    if stat.S_ISDIR(entry_info.st_mode):
                        level.todo.append((entry.name, (entry_info.st_dev, entry_info.st_ino)))
                    else:
                        others.append((entry.name, entry_info.st_size if stat.S_ISREG(entry_info.st_mode) else 0))
            for other, other_size in others:
                try:
                    os.unlink(other, dir_fd=fd)
                    size += other_size
                except FileNotFoundError:
                    continue  # gone already
                except OSError as exc:
                    fail(exc, other)
                    level.held = True
        except OSError as exc:
            fail(exc)
            level.held = True

    def moved_in(above: _Level, at: int, child: str, identity: tuple[int, int]) -> _Level | None:
        """The subdirectory ``child`` of ``above`` (open as ``at``) opened, found to be the one listed, renamed
        into the quarantine and found there; ``None``: gone already, or the failure counted (``above`` left)."""
        try:
            fd = os.open(child, _DIR_FLAGS, dir_fd=at)
        except FileNotFoundError:
            return None  # removed by someone else since it was listed (or moved out): gone already
        except OSError as exc:
            fail(exc, child)
            above.held = True
            return None
        try:
            held = os.fstat(fd)
            if (held.st_dev, held.st_ino) != identity:
                raise OSError(errno.ESTALE, "replaced while being removed")
            there = _free_name(child, len(stack), taken)
            os.rename(child, there, src_dir_fd=at, dst_dir_fd=quarantine)
            found = os.stat(there, dir_fd=quarantine, follow_symlinks=False)
            if (found.st_dev, found.st_ino) != identity:
                # replaced between its open and its rename: the one renamed is put back, the one opened left
                try:
                    os.rename(there, child, src_dir_fd=quarantine, dst_dir_fd=at)
                except OSError:
                    taken.add(there)  # (left in the quarantine: its name stays taken, the top non-empty)
                raise OSError(errno.ESTALE, "replaced while being removed")
        except FileNotFoundError:
            os.close(fd)
            return None  # removed or moved out after its open, before its rename: never touched, gone already
        except OSError as exc:
            os.close(fd)
            fail(exc, child)
            above.held = True
            return None
        taken.add(there)
        level = _Level(identity, child, there)
        level.fd = fd
        return level

    def reopened(level: _Level) -> int | None:
        """``level`` (the deepest, closed to bound the descriptors) opened again from the quarantine and found to
        be the same; ``None``: the failure counted, and ``level`` left with what it still holds."""
        try:
            fd = os.open(level.there, _DIR_FLAGS, dir_fd=quarantine)
            held = os.fstat(fd)
        except OSError as exc:
            fail(exc)
        else:
            if (held.st_dev, held.st_ino) == level.identity:
                return fd
            os.close(fd)
            fail(OSError(errno.ESTALE, "replaced in the quarantine while being removed"))
        level.held = True
        level.todo.clear()
        return None

    def put_back(level: _Level, above: _Level) -> None:
        """``level``, left non-empty by a failure, renamed back from the quarantine to its name in ``above``
        (the deepest now): what a failure leaves is where it was, as named."""
        at = above.fd if above.fd is not None else reopened(above)
        above.fd = at
        if at is None:
            return  # (counted; level stays in the quarantine)
        try:
            os.rename(level.there, level.name, src_dir_fd=quarantine, dst_dir_fd=at)
            taken.discard(level.there)
        except OSError as exc:
            fail(exc, path=os.path.join(top, quarantine_name, level.there))  # named where it is left

    try:
        root = _Level((info.st_dev, info.st_ino), name, "")
        stack.append(root)
        try:
            opened = os.open(top, _DIR_FLAGS)
        except FileNotFoundError:
            stack.clear()  # removed by someone else since its lstat: gone already
        except OSError as exc:
            fail(exc)
            stack.clear()
        else:
            root.fd = opened
            if _identity(os.fstat(opened)) != root.identity:
                fail(OSError(errno.ESTALE, "replaced while being removed"))
                stack.clear()
                os.close(opened)
        if stack and root.fd is not None:
            listed(root.fd, root)
            if root.todo:
                try:
                    quarantine, quarantine_name = _made_quarantine(root.fd)
                except OSError as exc:
                    fail(exc, path=top)  # nowhere to empty its subdirectories: all left
                    root.held = True
                    root.todo.clear()
        while stack:
            level = stack[-1]
            if level.todo:
                at = level.fd if level.fd is not None else reopened(level)
                level.fd = at
                if at is None:
                    continue
                child_name, child_identity = level.todo.pop()
                child = moved_in(level, at, child_name, child_identity)
                if child is None or child.fd is None:
                    continue
                stack.append(child)
                if len(stack) > _TREE_FDS:
                    # descriptors bounded: the one _TREE_FDS up (never the top) is closed, opened again from the
                    # quarantine if it is needed again
                    far = stack[-_TREE_FDS - 1]
                    if far.fd is not None and far is not root:
                        os.close(far.fd)
                        far.fd = None
                listed(child.fd, child)
                continue
            if level is root:
                break
            stack.pop()
            above = stack[-1]
            if level.fd is not None:
                os.close(level.fd)
                level.fd = None
            if not level.held:
                try:
                    os.rmdir(level.there, dir_fd=quarantine)
                    taken.discard(level.there)
                    continue
                except OSError as exc:
                    fail(exc, level.name)
            # left non-empty by an error below, or its rmdir failed: put back, and those above it neither tried
            # nor counted
            above.held = True
            put_back(level, above)
        if stack:
            if quarantine >= 0 and root.fd is not None:
                os.close(quarantine)
                quarantine = -1
                try:
                    os.rmdir(quarantine_name, dir_fd=root.fd)
                except OSError as exc:
                    if not root.held:  # (else left non-empty by a failure counted)
                        fail(exc, quarantine_name)
                        root.held = True
            if not root.held:
                try:
                    _rmdir_in(parent, (top_parent.st_dev, top_parent.st_ino), name, root.identity)
                except FileNotFoundError:
                    # opened and emptied by this walk, so not removed by someone else: moved out of its parent
                    fail(OSError(errno.ENOENT, "moved out while being removed"), path=top)
                except OSError as exc:
                    # a parent found replaced is named, not the directory in it
                    fail(exc, path=parent if exc.errno == errno.ESTALE else top)
    finally:
        for level in stack:
            if level.fd is not None:
                os.close(level.fd)
        if quarantine >= 0:
            os.close(quarantine)
    if first is not None:
        raise OSError(first.errno, f"could not remove all of it: {failed} removal{'' if failed == 1 else 's'} "
                      f"failed (first: {first})", top) from first
    return size


_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
# remove_tree's directory descriptors held open: the top, its quarantine and the deepest levels of the branch being
# removed (a directory above them is opened again from the quarantine); at most two more for a moment (a listing's,
# and a subdirectory's before it is found to be the one listed)
_TREE_FDS: Final = 32
_QUARANTINE_PREFIX: Final = ".iii-removing-"
_SHOWN_PATH: Final = 4096  # characters of a path in remove_tree's error, past which its middle is cut


class _Level:
    """A directory :func:`remove_tree` is emptying: its identity, its name in its parent and in the quarantine
    (``there``), its descriptor while held open, the subdirectories it still has to remove (name, identity as
    listed), and whether an error below leaves it non-empty."""

    __slots__ = ("fd", "held", "identity", "name", "there", "todo")

    def __init__(self, identity: tuple[int, int], name: str, there: str) -> None:
        self.identity = identity
        self.name = name
        self.there = there
        self.fd: int | None = None
        self.todo: list[tuple[str, tuple[int, int]]] = []
        self.held = False


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def _made_quarantine(at: int) -> tuple[int, str]:
    """A new directory in the directory open as ``at``, random name, mode 0o700: its descriptor and name. Only its
    owner (this user) or root may rename an entry out of it; found to be this user's and closed to others, else
    ``OSError`` (someone else's put at its name).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     at = os.open(tmp, os.O_RDONLY)
        ...     fd, name = _made_quarantine(at)
        ...     mode = stat.S_IMODE(os.fstat(fd).st_mode)
        ...     for opened in (fd, at):
        ...         os.close(opened)
        ...     name.startswith(_QUARANTINE_PREFIX), oct(mode), os.listdir(tmp) == [name]
        (True, '0o700', True)
    """
    for _ in range(100):
        name = f"{_QUARANTINE_PREFIX}{secrets.token_hex(8)}"
        try:
            os.mkdir(name, 0o700, dir_fd=at)
            break
        except FileExistsError:
            continue
    else:
        raise OSError(errno.EEXIST, "no free name for a quarantine directory")
    fd = os.open(name, _DIR_FLAGS, dir_fd=at)
    held = os.fstat(fd)
    if held.st_uid != os.geteuid() or held.st_mode & 0o077:
        os.close(fd)
        raise OSError(errno.EPERM, "replaced while being made (not this user's, or open to others)", name)
    return fd, name


def _free_name(name: str, depth: int, taken: set[str]) -> str:
    """``name`` if it is not ``taken``, else one made of ``depth`` (each level of a branch has its own) that is not.

    The directory's own name where it can: what a killed run leaves in the quarantine, and the errors the OS gives,
    still say which it was; a branch ``d/d/d`` has one ``d`` there at a time.

    Example:
        >>> _free_name("a", 3, set()), _free_name("d", 3, {"d"}), _free_name("d", 3, {"d", "3"})
        ('a', '3', '3.1')
    """
    if name not in taken:
        return name
    free, n = str(depth), 0
    while free in taken:
        n += 1
        free = f"{depth}.{n}"
    return free


def _path_shown(path: str) -> str:
    """``path`` for an error, past :data:`_SHOWN_PATH` characters cut in the middle (its start and its last parts
    kept): a 10,000-level tree's paths are 20 KB.

    Example:
        >>> _path_shown("a/b"), len(_path_shown("/top/" + "d/" * 5000 + "f"))
        ('a/b', 4096)
    """
    if len(path) <= _SHOWN_PATH:
        return path
    keep = _SHOWN_PATH - 1
    head = keep // 4
    return f"{path[:head]}…{path[-(keep - head):]}"


def _tree_top(path: str) -> tuple[str, str, str]:
    """``(path, parent, name)`` of the directory to remove at ``path``, its ``parent`` a path to open as given.

    Never normalised as text: ``base/link/..`` is the parent of ``link``'s target, which ``normpath`` would make
    ``base``. A last part ``.`` or ``..`` names no entry of a parent and is refused: resolving it (``realpath``) is
    text too past a file, a missing entry or a dangling link, where it named directories the OS does not find there.
    Trailing slashes are dropped, so a symlink written ``link/`` is not followed.

    Example:
        >>> _tree_top("a/b/"), _tree_top("t"), _tree_top("/x/y")
        (('a/b', 'a', 'b'), ('t', '.', 't'), ('/x/y', '/x', 'y'))
        >>> try:
        ...     _tree_top("a/b/..")
        ... except OSError as exc:
        ...     print(exc.filename, exc.errno == errno.EINVAL)
        a/b/.. True
    """
    if not path:
        raise OSError(errno.EINVAL, "refusing to remove an empty path (name the directory)", path)
    stripped = path.rstrip("/") or path
    parent, name = os.path.split(stripped)
    if not name:
        raise OSError(errno.EINVAL, "refusing to remove a path with no last part (name the directory itself)", path)
    if name in (".", ".."):
        raise OSError(errno.EINVAL, "refusing to remove a path whose last part is '.' or '..' (name the directory "
                      "itself)", path)
    return stripped, parent or ".", name


def _named(exc: OSError, path: str) -> OSError:
    """``exc`` naming ``path`` in full: one raised relative to a directory's descriptor names the entry alone."""
    if exc.filename == path or exc.errno is None:
        return exc
    named = OSError(exc.errno, exc.strerror, path)
    named.__cause__ = exc
    return named


def _rmdir_in(parent: str, identity: tuple[int, int], name: str, own: tuple[int, int]) -> None:
    """``rmdir`` ``name`` in the directory ``parent``, if ``parent`` still is the directory ``identity`` names and
    ``name`` in it still is the directory ``own`` names (an empty directory another process put at the name of the
    tree it moved away was removed, and the call reported success: 25 of 30 rounds in an attack; what is left is the
    moment between this check and the ``rmdir``)."""
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        held = os.fstat(fd)
        if (held.st_dev, held.st_ino) != identity:
            raise OSError(errno.ESTALE, "replaced while being removed", parent)
        if _identity(os.stat(name, dir_fd=fd, follow_symlinks=False)) != own:
            raise FileNotFoundError(errno.ENOENT, "moved out while being removed", name)
        os.rmdir(name, dir_fd=fd)
    finally:
        os.close(fd)


# What tempfile.mkstemp / mkdtemp make of PART_PREFIX + "<pid>-" (or of PART_PREFIX alone, before owners were
# recorded): exactly 8 characters of its alphabet, nothing after (no dot, no dash). Only such names can be our
# leftovers; any other ".iii-part-…" (a file stored under that name before receivers refused it, a directory a user
# named ".iii-part-cache", which an older match of any length removed once it was an hour old) stays.
_PART_NAME = re.compile(re.escape(PART_PREFIX) + r"(?:([0-9]+)-)?[a-z0-9_]{8}")


def _is_part_name(name: str) -> bool:
    """Whether ``name`` is one ``_create_part_file`` or a staging directory could have.

    Example:
        >>> _is_part_name(".iii-part-4242-k3_9zq0a"), _is_part_name(".iii-part-3999999-report.txt")
        (True, False)
        >>> _is_part_name(".iii-part-k3_9zq0a"), _is_part_name(".iii-part-cache"), _is_part_name(".iii-part-notes")
        (True, False, False)
    """
    return _PART_NAME.fullmatch(name) is not None


def _owner_pid(name: str) -> int | None:
    match = _PART_NAME.fullmatch(name)
    pid = int(match.group(1)) if match is not None and match.group(1) is not None else None
    return pid if pid else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    # A zombie has exited (its locks are gone) but still answers kill(pid, 0).
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as proc_stat:
            return proc_stat.read().rpartition(")")[2].split()[:1] not in (["Z"], ["X"])
    except OSError:
        return True


@dataclass(frozen=True)
class FileReceipt:
    """What ``receive_file`` wrote: final path, size, SHA-256, and whether a trailer verified it."""

    path: Path
    size: int
    sha256: str
    verified: bool
    name: str | None = None


def file_header(name: str, size: int | None) -> str:
    """The header text message ``send_file`` sends first.

    Example:
        >>> _parse_file_header(file_header("a.txt", 3))
        ('a.txt', 3)
    """
    return json.dumps({FILE_HEADER_KEY: {"name": name, "size": size}})


def _short(name: str) -> str:
    """``name``, its first 40 and last 16 characters only when it is longer: a sender's name goes into errors,
    and a crafted one (40 KB of a 200-level name) would be most of the message. Not ``iii.protocol.codec.clip``:
    that keeps the head alone (``'d/d/…(89 chars)``), and the tail of a path is the entry that failed.

    Example:
        >>> _short("a.txt"), _short("d/" * 40 + "end.txt")
        ('a.txt', 'd/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/…/d/d/d/d/end.txt')
    """
    return name if len(name) <= 60 else f"{name[:40]}…{name[-16:]}"


def _shown(value: object) -> str:
    """``repr`` of a sender's value for an error, a long string (or ``repr``) cut as :func:`_short` does."""
    return repr(_short(value)) if isinstance(value, str) else _short(repr(value))


def checked_file_name(name: str) -> str:
    """``name`` if it is a plain file name to create in a directory; ``ValueError`` naming the problem otherwise.

    The name comes from the sender, so anything that could leave the directory is refused, not "cleaned". The
    rules are :func:`name_part_problem`'s, the same for every part of a ``receive_dir`` entry.

    Example:
        >>> checked_file_name("report.pdf")
        'report.pdf'
        >>> checked_file_name("../etc/passwd")
        Traceback (most recent call last):
        ...
        ValueError: refusing the sender's file name '../etc/passwd': it contains a path separator
        >>> checked_file_name(".iii-part-1-x")
        Traceback (most recent call last):
        ...
        ValueError: refusing the sender's file name '.iii-part-1-x': .iii-part-* names are kept for partial transfers
    """
    if "/" in name or (os.altsep is not None and os.altsep in name):
        raise ValueError(f"refusing the sender's file name {_shown(name)}: it contains a path separator")
    problem = name_part_problem(name)
    if problem is not None:
        raise ValueError(f"refusing the sender's file name {_shown(name)}: {problem}")
    return name


NAME_MAX = 255
"""Most bytes of one file name (Linux's ``NAME_MAX``, most file systems'): a longer name failed only at the final
rename, after the whole file had been received."""


# What name_part_problem refuses in a name: the control characters (Unicode category Cc: C0, DEL, C1 such as NEL
# U+0085 and CSI U+009B), the line and paragraph separators (Zl, Zp: str.splitlines splits at them as at a newline),
# and the bidi embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069: "\u202egpj.exe" shows as
# "exe.jpg"): the nine of the Trojan Source attack (CVE-2021-42574), which Rust's text_direction_codepoint lints refuse
# too. The bidi marks (U+200E, U+200F, U+061C) are accepted: alone they reorder no letters (the spoof needs an
# override or an embedding), and right-to-left names use them; where a name is shown, they are escaped (printable).
# So are the C1 controls as raw bytes: a name that is not UTF-8 comes as Python's surrogateescape writes it, a byte
# 0x80-0xFF as U+DC80-U+DCFF, and os.fsencode("\udc9b") is the byte 0x9b, CSI to a terminal that reads Latin-1 (it
# stored b"\x9b2J\x9b31mOK"). The other bytes (U+DCA0-U+DCFF: "\udce9", an é from a Latin-1 sender) stay accepted.
_UNSAFE_IN_NAME = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\udc80-\udc9f]")


def name_part_problem(part: str) -> str | None:
    """Why ``part`` cannot be one name (a file's, or a part of a tree entry's path) that a receiver creates, or
    ``None`` when it can. Refused: empty, ``.``, ``..``; a backslash (a path separator on Windows: the same tree
    must not mean other paths there); a control character (a newline, a tab, NUL, ESC, the C1 controls such as NEL
    and CSI, as characters or as raw bytes of a name that is not UTF-8, ``"\\udc9b"``: they break every line-based
    listing of the files, or drive a terminal that shows the name); a line or
    paragraph separator (U+2028, U+2029); a bidi embedding, override or isolate (U+202A-U+202E, U+2066-U+2069: they
    show the name's characters in another order); a ``.iii-part-*`` name (kept for partial transfers); more than
    :data:`NAME_MAX` bytes. The character refused is named, escaped, with its place (1 for the first).
    (``/`` is the caller's to judge: it separates the parts of a tree entry.)

    Example:
        >>> name_part_problem("a.txt"), name_part_problem("a\\\\b")
        (None, 'it contains a path separator (a backslash, one on Windows)')
        >>> name_part_problem("a\\nb")
        'it contains a control character: \\\\n at character 2'
        >>> print(name_part_problem("photo\\u202egpj.exe"))
        it contains a bidi control (it shows the name's characters out of order): \\u202e at character 6
        >>> print(name_part_problem(b"\\x9b2J".decode(errors="surrogateescape")))
        it contains a control character as a raw byte (0x9b, not UTF-8): \\udc9b at character 1
        >>> name_part_problem(b"caf\\xe9".decode(errors="surrogateescape")) is None  # Latin-1, not a control
        True
        >>> name_part_problem("x" * 300)
        'a name of 300 bytes, more than the 255 a file name may have'
    """
    if part in ("", ".", ".."):
        return "it is empty, '.' or '..'"
    if "\\" in part:
        return "it contains a path separator (a backslash, one on Windows)"
    # A name of printable ASCII (most names) has none of them: one C-level scan each, no regular expression.
    unsafe = None if part.isascii() and part.isprintable() else _UNSAFE_IN_NAME.search(part)
    if unsafe is not None:
        char = unsafe.group()
        kind = ("a control character" if char <= "\x9f" else "a line or paragraph separator" if char in "\u2028\u2029"
                else f"a control character as a raw byte (0x{ord(char) - 0xDC00:02x}, not UTF-8)" if char >= "\udc80"
                else "a bidi control (it shows the name's characters out of order)")
        return f"it contains {kind}: {printable(char)} at character {unsafe.start() + 1}"
    if part.startswith(PART_PREFIX):
        # such a file would look like a partial transfer to reclaim_stale_parts
        return f"{PART_PREFIX}* names are kept for partial transfers"
    try:
        size = len(os.fsencode(part))
    except UnicodeEncodeError:
        return "it cannot be encoded as a file name"
    if size > NAME_MAX:
        return f"a name of {size} bytes, more than the {NAME_MAX} a file name may have"
    return None


def _parse_file_header(text: str) -> tuple[str, int | None] | None:
    """``(name, size)`` from a header message, ``None`` if ``text`` is not one, ``ValueError`` if it starts as one
    but is not well formed: ``name`` a ``str``, ``size`` an ``int`` of 0 or more (not a bool) or absent/null.

    Why so strict: the receiver holds the file to that size, and ``3.9``, ``"3"`` and ``true`` were read as 3, 3
    and 1, ``1e400`` raised ``OverflowError``, a name ``12345`` was stored as ``'12345'`` and a header nested
    100,000 deep raised ``RecursionError``; a malformed header read as "no header" would skip the size check.

    Example:
        >>> _parse_file_header('{"iii_channels_file": {"name": "a.txt", "size": 3.9}}')
        Traceback (most recent call last):
        ...
        ValueError: malformed file header: '{"iii_channels_file": {"name": "a.txt", "size": 3.9}}'
    """
    if not text.startswith('{"' + FILE_HEADER_KEY + '"'):
        return None
    try:
        body = json.loads(text)[FILE_HEADER_KEY]
        name, size = body["name"], body.get("size")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        name = size = None
    sized = size is None or (type(size) is int and size >= 0)
    if not isinstance(name, str) or not sized:
        raise ValueError(f"malformed file header: {text[:200]!r}")
    return name, size


async def send_file(
    writer: ChannelWriter,
    path: str | os.PathLike[str],
    *,
    progress: Progress = None,
    trailer: bool = True,
    chunk_size: int = DEFAULT_CHUNK,
    header: bool = True,
    close: bool = True,
) -> int:
    """Stream the file at ``path`` into ``writer``; returns the bytes sent. Aborts the channel on failure, also
    when the file cannot be sent at all (missing, a directory, unreadable) or ``chunk_size`` is not a positive
    ``int``, and when a regular file changed while it was read (truncated, grown, rewritten, replaced:
    :class:`~iii_channels.errors.FileChangedError`, the receiver gets ``ChannelAbortedError``).

    Example:
        >>> import asyncio, tempfile
        >>> from iii_engine.testing import local_channel
        >>> async def demo() -> tuple[int, str | None, bytes]:
        ...     async with local_channel() as ch:
        ...         with tempfile.TemporaryDirectory() as tmp:
        ...             Path(tmp, "report.csv").write_bytes(b"a,b\\n1,2\\n")
        ...             (Path(tmp) / "inbox").mkdir()
        ...             sending = send_file(ch.writer, Path(tmp, "report.csv"), chunk_size=4)
        ...             sent, receipt = await asyncio.gather(sending, receive_file(ch.reader, Path(tmp, "inbox")))
        ...             data = receipt.path.read_bytes()
        ...         return sent, receipt.name, data
        >>> asyncio.run(demo())
        (8, 'report.csv', b'a,b\\n1,2\\n')
    """
    path = Path(path)
    try:
        check_chunk_size(chunk_size)
        check_progress(progress)
        if header:  # the receivers' rules, before anything is sent (a name with a tab was sent, and refused)
            checked_file_name(path.name)
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(f"send_file: {path} is a directory (send_dir sends a tree)")
    except BaseException as exc:
        await _abort_writer(writer, f"send_file could not start: {exc!r}")
        raise
    size = _declared_size(info)
    sink = ChannelSink(writer, trailer=trailer, progress=progress, total=size, label=path.name)
    try:
        if header:
            await sink.send_text(file_header(path.name, size))
        await _send_file_bytes(sink, path, info, chunk_size)
        if close:
            await sink.close()
        else:
            await sink.drain()
    except BaseException as exc:
        await sink.abort(f"send_file failed: {exc.abort_reason if isinstance(exc, FileChangedError) else repr(exc)}")
        raise
    return sink.bytes_written


def _declared_size(info: os.stat_result) -> int | None:
    """The size ``send_file``'s header declares for a file of stat ``info``, which the receiver holds it to:
    ``None`` (no size) for a FIFO or device, and for a file with no blocks, as pseudo-files (``/proc``'s 0 bytes,
    ``/sys``'s 4096) have, whose size is not their length (an empty file has none either: nothing to declare)."""
    if not stat.S_ISREG(info.st_mode) or info.st_blocks == 0:
        return None
    return info.st_size


async def _send_file_bytes(sink: ChannelSink, path: Path, before: os.stat_result, chunk_size: int,
                          digest: Digest | None = None) -> None:
    """Write the bytes of the file at ``path`` into ``sink`` (and ``digest``), ``chunk_size`` at a time. When
    ``before`` (its ``os.stat`` before its header went out) is a regular file, :class:`FileChangedError` if another
    file is found under that name when it is opened (before a byte is read), as soon as a read goes past the size it
    declares (:func:`_declared_size`: no byte past it is sent), or, once read to its end, if it changed size or
    modification time.

    Why: a file truncated, appended to or rewritten while it was read was sent as it came, under a trailer that
    verified what was sent, so the receiver stored a copy of no version of it (32 MiB announced, 5 MiB stored,
    ``verified`` true). Other files (FIFOs, devices) have no size to hold to and are not checked; nor are
    pseudo-files whose size never changes (``/proc``'s 0, ``/sys``'s 4096, whatever they hold).

    Opened with ``O_NONBLOCK``, so the open never waits (a FIFO's blocked a thread until a writer came, which no
    cancel could end, and ``asyncio.run`` waited for it at exit: a ``send_dir`` whose listed file was swapped for a
    FIFO hung for good). Symlinks are followed, as documented; the opened file is the one ``before`` described. A
    regular file is read in a thread; a FIFO or device through the event loop once it is readable (as ``from_fd``
    reads a pipe), so a FIFO nobody writes to waits for its writer without a thread and a cancel ends the wait.
    """
    loop = asyncio.get_running_loop()
    read = 0
    opening = loop.run_in_executor(None, _open_to_send, path)
    try:
        fd = await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(_close_opened)  # opened meanwhile: closed once it is
        raise
    try:
        opened = os.fstat(fd)
        # the type too: a file removed and a FIFO made under its name may get its inode number at once
        if stat.S_ISREG(before.st_mode) and (opened.st_dev, opened.st_ino, stat.S_IFMT(opened.st_mode)) != (
                before.st_dev, before.st_ino, stat.S_IFREG):
            what = "another file" if stat.S_ISREG(opened.st_mode) else _file_kind(opened.st_mode)
            _changed(path, f"was replaced by {what}", read)
        chunks: AsyncIterable[bytes]
        if stat.S_ISREG(opened.st_mode):
            chunks = _regular_chunks(fd, chunk_size)
        else:
            chunks = _fd_chunks(fd, chunk_size)
        # A file appended to as it is read (a log) was read, and sent, for as long as it grew: 876 MiB of a file
        # declared 58 MiB, failed only once its growth stopped. Its declared size is a bound known from the start.
        limit = _declared_size(before)
        async for chunk in chunks:
            if limit is not None and read + len(chunk) > limit:
                _changed(path, f"grew past its size of {limit} bytes (at least {read + len(chunk)} bytes now)", read)
            read += len(chunk)
            if digest is not None:
                digest.update(chunk)
            await sink.write(chunk)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(before.st_mode):
        return
    if after.st_size != before.st_size:
        _changed(path, f"changed size from {before.st_size} to {after.st_size} bytes", read)
    if after.st_mtime_ns != before.st_mtime_ns:
        _changed(path, "was modified", read)


async def _ready(fd: int, writing: bool) -> bool:
    """Wait until ``fd`` can be read (data or its end) or, ``writing``, written; ``False`` at once when the loop
    cannot watch it (a regular file, whose reads and writes never wait for a peer; a loop without
    ``add_reader``)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    add, remove = (loop.add_writer, loop.remove_writer) if writing else (loop.add_reader, loop.remove_reader)
    try:
        add(fd, lambda: None if ready.done() else ready.set_result(None))
    except (OSError, ValueError, NotImplementedError):
        return False
    try:
        await ready
    finally:
        remove(fd)
    return True


async def _fd_chunks(fd: int, size: int) -> AsyncIterable[bytes]:
    """The fd's data until its end, ``size`` bytes a read at most. A pipe, FIFO, tty or socket is read once the
    loop says it is readable, not in a thread: a read blocked in a thread cannot be cancelled, and ``asyncio.run``
    waits for it at exit, so a ``send -`` whose stdin went quiet could not exit after its transfer failed. (Also
    why a FIFO nobody has opened to write yet is not taken for one at its end: its first read waits for it.)"""
    loop = asyncio.get_running_loop()
    while True:
        if await _ready(fd, writing=False):
            try:
                chunk = os.read(fd, size)
            except BlockingIOError:  # an O_NONBLOCK fd drained by another reader meanwhile
                continue
        else:
            chunk = await loop.run_in_executor(None, os.read, fd, size)
        if not chunk:
            return
        yield chunk


def _open_to_send(path: Path) -> int:
    """``path`` opened to be read, without waiting (``O_NONBLOCK``: a FIFO's open returns at once) and without
    becoming our controlling terminal. A regular file gets blocking reads back (its reads never wait anyway)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _close_opened(opening: asyncio.Future[int]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        os.close(opening.result())


async def _regular_chunks(fd: int, chunk_size: int) -> AsyncIterator[bytes]:
    """A regular file's bytes, read in a thread ``chunk_size`` at a time (its reads never wait for a peer)."""
    loop = asyncio.get_running_loop()
    while chunk := await loop.run_in_executor(None, os.read, fd, chunk_size):
        yield chunk


def _changed(path: Path, change: str, read: int) -> NoReturn:
    raise FileChangedError(f"{path} {change} while it was sent ({read} bytes read); the stream was aborted, send "
                           "it again", os.fspath(path), change)


async def receive_file(
    reader: ChannelReader,
    path: str | os.PathLike[str],
    *,
    progress: Progress = None,
    require_trailer: bool = False,
    overwrite: bool = False,
    idle_timeout: float | None = None,
    exclusive: bool = False,
) -> FileReceipt:
    """Stream ``reader`` into ``path`` (temporary name, then atomic rename).

    ``path`` may be a directory: the file is then named after the sender's header. That name must be a plain
    file name (``ValueError`` for empty, ``.``, ``..``, a path separator ``/`` or ``\\``, a control character such
    as a newline, more than :data:`NAME_MAX` bytes: :func:`name_part_problem`), and an existing file of
    that name is kept, raising ``FileExistsError``, unless ``overwrite=True``. Only a regular file is ever
    replaced: an existing target that is a symlink, FIFO, device or socket is refused (``FileExistsError`` naming
    it and what it is, :func:`check_replaceable`) before anything is read. An explicit file ``path`` is
    replaced, unless ``exclusive=True``: the file is then placed only if nothing of that name exists at that
    moment (atomically: of two receives racing for one name, one fails with ``FileExistsError``). A path ending
    in ``/`` must be an existing directory, and a file path's directory must exist (``FileNotFoundError`` /
    ``NotADirectoryError`` before anything is read). Either way the channel is closed and nothing is left behind
    when receiving fails. A stream without a verified trailer whose length
    differs from the size in the sender's header raises :class:`IntegrityError` (a sender that died mid-file,
    against an engine that cannot signal the abort). Stale parts of dead receivers in the directory
    are removed first (:func:`reclaim_stale_parts`). ``idle_timeout``: most seconds to wait for the sender's next
    message, then :class:`~iii_channels.errors.ChannelIdleError` (``None``, the default: no limit).

    Example:
        >>> import asyncio, tempfile
        >>> from iii_engine.testing import local_channel
        >>> async def demo() -> tuple[str, int, bool]:
        ...     async with local_channel() as ch:
        ...         with tempfile.TemporaryDirectory() as tmp:
        ...             Path(tmp, "notes.txt").write_text("hello")
        ...             receiving = receive_file(ch.reader, f"{tmp}/copy.txt", require_trailer=True)
        ...             _, receipt = await asyncio.gather(send_file(ch.writer, Path(tmp, "notes.txt")), receiving)
        ...             return receipt.path.read_text(), receipt.size, receipt.verified
        >>> asyncio.run(demo())
        ('hello', 5, True)
    """
    target = Path(path)
    name_holder: list[tuple[str, int | None]] = []

    def on_text(text: str) -> None:
        try:
            parsed = _parse_file_header(text)
        except ValueError as exc:  # an IntegrityError fails the source for good
            channel_id = reader.ref.channel_id
            raise IntegrityError(f"channel {channel_id}: {exc}", channel_id=channel_id) from None
        if parsed is not None and not name_holder:
            name_holder.append(parsed)
            # the header comes before any byte: the first report already carries the total
            if source._progress is not None and source._progress.total is None:
                source._progress.total = parsed[1]

    loop = asyncio.get_running_loop()
    try:
        source = ChannelSource(reader, require_trailer=require_trailer, progress=progress, on_text=on_text,
                               label=target.name, text_limit=0, idle_timeout=idle_timeout)
        is_dir, directory = await loop.run_in_executor(None, check_receive_target, path)
        await loop.run_in_executor(None, reclaim_stale_parts, directory)
        fd, tmp_name = await loop.run_in_executor(None, _create_part_file, directory)
    except BaseException:
        # Refused before reading: release the writer now instead of leaving it blocked on backpressure.
        await asyncio.shield(_release_writer(reader))
        raise
    digest = Digest()
    final: Path | None = None
    try:
        # The file stays open (and locked) until it is renamed, so it never looks abandoned to a reclaimer.
        with os.fdopen(fd, "wb") as out:
            # Batch small channel chunks into ~1 MiB disk writes: one executor hop per MiB, not per 64 KiB.
            pending: list[bytes] = []
            pending_size = 0
            async for chunk in source.chunks():
                if is_dir and name_holder and final is None:
                    # The header came first: refuse a bad name or an existing file before receiving it all.
                    final = _directory_target(target, name_holder[0][0], overwrite)
                digest.update(chunk)
                _check_announced_size(source, name_holder, digest.count, ended=False)  # before storing more
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= DEFAULT_CHUNK:
                    await loop.run_in_executor(None, out.writelines, pending)
                    pending, pending_size = [], 0
            if pending:
                await loop.run_in_executor(None, out.writelines, pending)
            _check_announced_size(source, name_holder, digest.count, ended=True)
            await loop.run_in_executor(None, out.flush)
            await loop.run_in_executor(None, os.fsync, out.fileno())
            if is_dir:
                if not name_holder:
                    raise ValueError(f"{target} is a directory and the sender sent no file name")
                target = _directory_target(target, name_holder[0][0], overwrite)
                if overwrite:
                    _replace(tmp_name, target)
                else:
                    _place_new(tmp_name, target)
            elif exclusive:
                _place_new(tmp_name, target)
            else:
                _replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        # Tell the writer at once (our engine: 4002 "reader gone") instead of leaving it blocked on backpressure.
        await asyncio.shield(_release_writer(reader))
        raise
    return FileReceipt(target, digest.count, digest.hexdigest(), source.verified,
                       name_holder[0][0] if name_holder else None)



def _check_announced_size(source: ChannelSource, header: list[tuple[str, int | None]], received: int, *,
                          ended: bool) -> None:
    """The file is held to the size its header declared, when it declared one (``send_file`` declares none where
    the size is not the length: :func:`_declared_size`): without a verified trailer, that size is the only word on
    how much was sent (against the production engine a sender that died mid-file ends the stream like one that
    finished); with one, the trailer covers only the bytes as sent, so a header saying 10 and 4 bytes under a
    matching trailer (an older sender's pseudo-file, or a stream made so) would be stored as verified. Bytes past
    the size are refused as they come (``ended=False``), before they are stored."""
    if not header:
        return
    name, size = header[0]
    if size is None:
        return
    channel_id = source.reader.ref.channel_id
    if received > size:
        raise IntegrityError(f"channel {channel_id}: {received} bytes (so far) came for {_shown(name)}, more than the "
                             f"{size} bytes the sender's header declared", channel_id=channel_id)
    if ended and received < size:
        how = "under a trailer that matched them" if source.verified else "without an integrity trailer"
        raise IntegrityError(f"channel {channel_id} ended after {received} of the {size} bytes the sender announced "
                             f"for {_shown(name)}, {how}", channel_id=channel_id)


def _directory_target(directory: Path, name: str, overwrite: bool) -> Path:
    target = directory / checked_file_name(name)
    if not overwrite and os.path.lexists(target):
        raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it")
    check_replaceable(target)  # overwrite replaces regular files only
    return target


def _replace(tmp_name: str, target: Path) -> None:
    """Rename ``tmp_name`` over ``target``, a regular file or nothing: checked again here, as a symlink or FIFO
    made there while the file was received would be replaced too."""
    check_replaceable(target)
    os.replace(tmp_name, target)


def _place_new(tmp_name: str, target: Path) -> None:
    """Move ``tmp_name`` to ``target`` only if ``target`` does not exist (no window for a racing writer)."""
    try:
        os.link(tmp_name, target)
    except FileExistsError:
        raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it") from None
    except OSError:
        # No hard links on this file system: check, then rename (a small race, but never a silent overwrite of
        # a file that existed when the transfer started).
        if os.path.lexists(target):
            raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it") from None
        os.replace(tmp_name, target)
        return
    os.unlink(tmp_name)
