"""Many files over one channel: ``send_dir`` / ``send_files`` and ``receive_dir``.

Stream format (text messages framing binary data, all in order on one channel)::

    {"iii_channels_entry": {"path": "a/b.txt", "type": "file", "size": 123}}    then the file's bytes, then
    {"iii_channels_entry_end": {"bytes": 123, "sha256": "…"}}
    {"iii_channels_entry": {"path": "empty", "type": "dir"}}                    (directories: no data)
    {"iii_channels_tree": {"records": 3, "sha256": "…"}}                       the records above, counted and
                                                                               hashed (each as its UTF-8 length,
                                                                               ":", its text)
    … then the stream's own integrity trailer (``ChannelSink``) and end of stream.

The trailer covers the file bytes, the tree record the entry and end records: a name changed on the way, or an
entry left out (an empty file or directory has no bytes), fails the receive. A ``receive_dir`` that requires the
trailer (the default) requires the tree record too; senders before it sent none (``require_tree=False`` accepts
such a stream, checking the tree record only if one comes, and the trailer still), and receivers before it ignore
it.

Memory stays bounded (one file open at a time, bounded chunks; the entries' names up to ``max_entries`` and
``max_name_bytes``). ``receive_dir`` writes into a hidden staging directory, checks every file against its end
record and the whole stream against the trailer, and puts the tree in place only when all of it verified: on any
failure nothing appears under the final name and the staging directory is removed. A destination that does not
exist is staged next to it and the staging directory renamed to it. An existing empty directory (a mount point,
``.``, one made with its own mode, group or ACLs) is kept as it is: the staging directory is made inside it and
its top-level entries moved into it at the end, one by one (others see a partial tree for as long as those moves
take: 20,000 entries 0.4-1.5 s, 100,000 3-6 s). Nothing in it is replaced: if something else adds an entry to it
meanwhile (under a name not yet moved in too), or a move fails, those moved are moved back and the receive fails;
only a receiver killed during those moves leaves part of the tree in it. The staging directory is named
``.iii-part-<pid>-…`` and locked while in use, so one left by a killed receiver is removed by the next
``receive_dir`` / ``receive_file`` in the directory that holds it (:func:`iii_channels.files.reclaim_stale_parts`).

Example (the staging directory is gone once the destination appears):
    >>> import asyncio, tempfile
    >>> from iii_engine.testing import local_channel
    >>> async def mirror(writer, reader, tmp: str) -> TreeReceipt:
    ...     _, receipt = await asyncio.gather(send_dir(writer, f"{tmp}/photos/"),
    ...                                       receive_dir(reader, f"{tmp}/backup/photos"))
    ...     return receipt
    >>> async def demo() -> tuple[list[str], list[str], list[str]]:
    ...     async with local_channel() as ch:
    ...         with tempfile.TemporaryDirectory() as tmp:
    ...             Path(tmp, "photos", "2026").mkdir(parents=True)
    ...             Path(tmp, "photos", "2026", "a.jpg").write_bytes(bytes(300))
    ...             Path(tmp, "photos", "empty").mkdir()
    ...             receipt = await mirror(ch.writer, ch.reader, tmp)
    ...             files = [str(f.path.relative_to(receipt.path)) for f in receipt.files if f.verified]
    ...             backup = os.listdir(Path(tmp, "backup"))
    ...         return files, sorted(receipt.directories), backup
    >>> asyncio.run(demo())
    (['2026/a.jpg'], ['2026', 'empty'], ['photos'])
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import json
import os
import platform
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, cast

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.channels import ChannelReader, ChannelWriter

from .errors import FileChangedError, IntegrityError, LimitExceededError
from .files import (
    DEFAULT_CHUNK,
    PART_PREFIX,
    FileReceipt,
    _abort_writer,
    _file_kind,
    _is_part_name,
    _lock_part_dir,
    _new_dir_mode,
    _send_file_bytes,
    _shown,
    check_chunk_size,
    name_part_problem,
    new_file_mode,
    reclaim_stale_parts,
    remove_tree,
)
from .integrity import Digest
from .progress import Progress, check_progress
from .sink import ChannelSink
from .source import ChannelSource, _release_writer

ENTRY_KEY = "iii_channels_entry"
END_KEY = "iii_channels_entry_end"
TREE_KEY = "iii_channels_tree"
# Each entry costs the receiver its name in memory and an inode on disk: a peer may not ask for unlimited ones.
DEFAULT_MAX_ENTRIES = 1_000_000
# The entries' names are held until the receipt is returned: 1,000,000 entries of 3.7 KB names (14 levels of 250
# characters, within every other limit) cost the receiver ~4 GB. Their UTF-8 bytes are bounded, together.
DEFAULT_MAX_NAME_BYTES = 64 * 1024 * 1024
# Most levels (path components) an entry of a tree may have, sent or received: a peer's "d/d/d/…" thousands deep
# would otherwise break whatever recurses per level (Path.mkdir(parents=True), os.walk, shutil.rmtree on 3.11).
MAX_TREE_DEPTH = 256

FileSpec = str | os.PathLike[str] | tuple[str, str | os.PathLike[str]]
"""A file to send: a path (sent under its basename) or ``(name_in_stream, path)``."""


@dataclass(frozen=True)
class TreeReceipt:
    """What ``receive_dir`` stored: the final directory, each file (with its verified digest), directories."""

    path: Path
    files: list[FileReceipt] = field(default_factory=list)
    directories: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        """Total bytes of all files.

        Example:
            >>> from iii_channels.files import FileReceipt
            >>> files = [FileReceipt(Path(f"out/{n}"), size, "", True) for n, size in (("a", 3), ("b", 4))]
            >>> TreeReceipt(Path("out"), files).bytes
            7
        """
        return sum(f.size for f in self.files)


def check_entry_path(name: object, where: str = "channel stream") -> PurePosixPath:
    """A relative path from the stream, refusing anything that could land outside the destination
    (``ValueError``), or more than :data:`MAX_TREE_DEPTH` levels deep (:class:`LimitExceededError`, ``where``
    naming whose entry it is).

    Example:
        >>> str(check_entry_path("a/b.txt"))
        'a/b.txt'
        >>> check_entry_path("../etc/passwd")
        Traceback (most recent call last):
        ...
        ValueError: unsafe path in channel stream: '../etc/passwd'
        >>> check_entry_path("a/.iii-part-1-x")
        Traceback (most recent call last):
        ...
        ValueError: refusing the sender's path 'a/.iii-part-1-x': .iii-part-* names are kept for partial transfers
        >>> check_entry_path("/".join(["d"] * 300))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        iii.channels.LimitExceededError: channel stream: the entry 'd/d/d/...' (300 levels) exceeds the limit of 256 ...
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ValueError(f"unsafe path in channel stream: {_shown(name)}")
    path = PurePosixPath(name)
    parts = name.split("/")
    if path.is_absolute() or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"unsafe path in channel stream: {_shown(name)}")
    if len(parts) > MAX_TREE_DEPTH:
        raise _too_deep(name, where)
    for part in parts:
        # receive_file's rules for a name, so a name one refuses the other does not store (a backslash, a newline)
        problem = name_part_problem(part)
        if problem is not None:
            raise ValueError(f"refusing the sender's path {_shown(name)}: {problem}")
    return path


def _too_deep(name: str, where: str) -> LimitExceededError:
    return LimitExceededError(MAX_TREE_DEPTH, f"{where}: the entry {_shown(name)} ({name.count('/') + 1} levels)",
                              "levels (MAX_TREE_DEPTH)")


def _entry(path: str, kind: str, size: int | None = None) -> str:
    body: dict[str, Any] = {"path": path, "type": kind}
    if size is not None:
        body["size"] = size
    return json.dumps({ENTRY_KEY: body})


def _parse(text: str) -> tuple[str, dict[str, Any]] | None:
    for key in (ENTRY_KEY, END_KEY, TREE_KEY):
        if text.startswith('{"' + key + '"'):
            try:
                body = json.loads(text)[key]
            except (ValueError, KeyError, RecursionError) as exc:  # RecursionError: a peer's record nested deep
                raise IntegrityError(f"malformed {key} record: {text[:200]!r}") from exc
            if not isinstance(body, dict):
                raise IntegrityError(f"malformed {key} record: {text[:200]!r}")
            return key, body
    return None


# ---------------------------------------------------------------------------------------------------- sending


def _unreadable(path: str | os.PathLike[str], exc: OSError) -> OSError:
    return type(exc)(exc.errno, f"send_dir cannot read {os.fspath(path)} ({exc.strerror or exc}); nothing was sent")


def _left_out(exc: OSError) -> bool:
    """Whether an entry that failed so is left out of a tree, not an error: removed meanwhile, a dangling symlink,
    or a symlink loop (``ln -s loop loop``), as dangling as one that points nowhere."""
    return isinstance(exc, FileNotFoundError) or exc.errno == errno.ELOOP


def _walk(directory: Path) -> tuple[list[str], list[tuple[str, Path, os.stat_result]]]:
    """Directories and regular files under ``directory`` (sorted; symlinked directories not followed).

    A directory that cannot be listed, or an entry whose type cannot be told, fails the walk (``OSError``
    naming it): a tree sent without part of it would still verify. Only a dangling symlink (or a symlink loop),
    or an entry removed meanwhile (a subdirectory too), is left out, and so is a ``.iii-part-*`` entry (a partial
    transfer left in the tree, with what is under it: every receiver refuses such names). An entry more than
    :data:`MAX_TREE_DEPTH` levels below ``directory`` fails it (:class:`LimitExceededError` naming the entry),
    before the walk goes deeper: receivers refuse such a tree.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     Path(tmp, "d").mkdir()
        ...     _ = Path(tmp, "d", "f").write_text("x")
        ...     _walk(Path(tmp))[0], [(name, info.st_size) for name, _, info in _walk(Path(tmp))[1]]
        (['d'], [('d/f', 1)])
    """
    dirs: list[str] = []
    files: list[tuple[str, Path, os.stat_result]] = []
    top = os.fspath(directory)

    def unlistable(exc: OSError) -> None:
        path = exc.filename if exc.filename is not None else "?"
        if _left_out(exc) and path != top:  # the tree's own root gone is no tree at all, not an empty one
            gone = Path(path).relative_to(directory).as_posix()
            if gone in dirs:  # listed in its parent, removed before it was scanned
                dirs.remove(gone)
            return
        raise _unreadable(path, exc) from exc

    for root, dirnames, filenames in os.walk(directory, onerror=unlistable):
        rel_root = Path(root).relative_to(directory)
        dirnames[:] = sorted(d for d in dirnames
                             if not d.startswith(PART_PREFIX) and not os.path.islink(os.path.join(root, d)))
        too_deep = len(rel_root.parts) >= MAX_TREE_DEPTH
        for d in dirnames:
            dirs.append((rel_root / d).as_posix())
            if too_deep:  # raised here, os.walk never goes on below it
                raise _too_deep(dirs[-1], f"send_dir {os.fspath(directory)}")
        for name in sorted(filenames):
            if name.startswith(PART_PREFIX):
                continue  # sent, it failed the whole receive: "refusing the sender's path"
            if too_deep:
                raise _too_deep((rel_root / name).as_posix(), f"send_dir {os.fspath(directory)}")
            full = Path(root) / name
            try:
                info = os.stat(full)
            except OSError as exc:
                if _left_out(exc):
                    continue  # nothing to send
                raise _unreadable(full, exc) from exc
            if stat.S_ISREG(info.st_mode):  # never FIFOs, sockets or devices: reading them could block forever
                files.append(((rel_root / name).as_posix(), full, info))
    return dirs, files


async def _send(
    writer: ChannelWriter, dirs: list[str], files: list[tuple[str, Path, os.stat_result]], progress: Progress,
    label: str, chunk_size: int,
) -> int:
    total = sum(info.st_size for _, _, info in files)
    records = Digest()
    count = 0

    async def record(text: str) -> None:
        nonlocal count
        records.update_text(text)
        count += 1
        await sink.send_text(text)

    async with ChannelSink(writer, trailer=True, progress=progress, total=total, label=label) as sink:
        for name in dirs:
            await record(_entry(name, "dir"))
        for name, path, info in files:
            await record(_entry(name, "file", info.st_size))
            digest = Digest()
            await _send_file_bytes(sink, path, info, chunk_size, digest)  # changed meanwhile: the tree aborts
            if digest.count != info.st_size:
                # a pseudo-file (/proc's 0 bytes, /sys's 4096): its receiver refuses bytes its entry did not declare
                raise FileChangedError(f"{path} is {info.st_size} bytes by its size but {digest.count} bytes were read "
                                       "(a pseudo-file?); a tree entry must be as long as its size: the stream was "
                                       "aborted", os.fspath(path))
            await record(json.dumps({END_KEY: {"bytes": digest.count, "sha256": digest.hexdigest()}}))
        await sink.send_text(json.dumps({TREE_KEY: {"records": count, "sha256": records.hexdigest()}}))
    return sink.bytes_written


async def send_dir(
    writer: ChannelWriter, directory: str | os.PathLike[str], *, progress: Progress = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> int:
    """Send every regular file and directory under ``directory``; returns the file bytes sent.

    Symlinks to files are followed, symlinked directories are not; FIFOs, sockets, devices and dangling
    symlinks are skipped. A file listed that is another file when it is opened (swapped for a FIFO, say) fails
    the send with :class:`FileChangedError`, before any of it is read, as one that changes while it is read
    does. A directory it cannot list or an entry it cannot look at fails the send before anything is sent
    (``OSError`` naming the path), and so does a name no receiver stores (``ValueError``, the rules of
    :func:`check_entry_path`: a backslash, a control character, more than 255 bytes). Any failure aborts the
    channel.

    Example:
        >>> import asyncio, tempfile
        >>> from iii_engine.testing import local_channel
        >>> async def demo() -> tuple[int, list[str]]:
        ...     async with local_channel() as ch:
        ...         with tempfile.TemporaryDirectory() as tmp:
        ...             Path(tmp, "site", "css").mkdir(parents=True)
        ...             Path(tmp, "site", "index.html").write_text("<h1>hi</h1>")
        ...             Path(tmp, "site", "css", "a.css").write_text("h1{}")
        ...             sent, receipt = await asyncio.gather(send_dir(ch.writer, Path(tmp, "site")),
        ...                                                  receive_dir(ch.reader, Path(tmp, "copy")))
        ...             names = sorted(str(p.relative_to(receipt.path)) for p in receipt.path.rglob("*"))
        ...         return sent, names
        >>> asyncio.run(demo())
        (15, ['css', 'css/a.css', 'index.html'])
    """
    root = Path(directory)
    try:
        check_chunk_size(chunk_size)
        check_progress(progress)
        if not await asyncio.to_thread(root.is_dir):
            raise NotADirectoryError(f"send_dir: {root} is not a directory")
        dirs, files = await asyncio.to_thread(_walk, root)
        for name in (*dirs, *(name for name, _, _ in files)):
            # the receivers' rules, before anything is sent: a name with a tab or a backslash was sent, send_dir
            # returned success, and every receiver refused the tree
            check_entry_path(name, f"send_dir {os.fspath(root)}")
    except BaseException as exc:
        await _abort_writer(writer, f"send_dir could not start: {exc!r}")
        raise
    return await _send(writer, dirs, files, progress, root.name, chunk_size)


def check_clashes(names: Sequence[str]) -> None:
    """Nothing, when every receiver can store files under all of ``names`` (paths :func:`check_entry_path`
    accepted) at once; ``ValueError`` naming the clash otherwise: a name given twice, or one name a file and a
    directory of another (``x`` and ``x/y``). Why: ``send_files`` sent such a list and returned success, and every
    receiver refused the tree it could not store.

    Example:
        >>> check_clashes(["a.txt", "logs/a.txt"])
        >>> check_clashes(["x", "x/y"])
        Traceback (most recent call last):
        ...
        ValueError: send_files: 'x' is a file, and a directory for 'x/y': no receiver can store both
    """
    seen: set[str] = set()
    implied: dict[str, str] = {}  # each directory a name needs -> the first name that needs it
    for name in names:
        if name in seen:
            raise ValueError(f"send_files: {_shown(name)} is named twice: a receiver stores one file per name")
        seen.add(name)
        parts = name.split("/")
        for depth in range(1, len(parts)):
            implied.setdefault("/".join(parts[:depth]), name)
    for name in names:
        if name in implied:
            raise ValueError(f"send_files: {_shown(name)} is a file, and a directory for {_shown(implied[name])}: no "
                             "receiver can store both")


async def send_files(
    writer: ChannelWriter, files: Iterable[FileSpec], *, progress: Progress = None, chunk_size: int = DEFAULT_CHUNK,
) -> int:
    """Send several files as one stream ``receive_dir`` can store; returns the file bytes sent.

    Each item is a path (sent under its basename) or ``(name_in_stream, path)``; names may contain ``/``. Names
    are checked before anything is sent (``ValueError`` naming the name): each as :func:`check_entry_path` checks
    it, and together as :func:`check_clashes` does (a name twice, ``x`` and ``x/y``). Each path must be a regular
    file, or a symlink to one (``ValueError`` naming a directory, FIFO or device, before anything is sent).

    Example:
        >>> import asyncio, tempfile
        >>> from iii_engine.testing import local_channel
        >>> async def demo() -> tuple[int, str]:
        ...     async with local_channel() as ch:
        ...         with tempfile.TemporaryDirectory() as tmp:
        ...             Path(tmp, "log.txt").write_text("started")
        ...             specs = [Path(tmp, "log.txt"), ("logs/old.txt", Path(tmp, "log.txt"))]
        ...             receiving = receive_dir(ch.reader, f"{tmp}/out")
        ...             sent, receipt = await asyncio.gather(send_files(ch.writer, specs), receiving)
        ...             text = (receipt.path / "logs" / "old.txt").read_text()
        ...         return sent, text
        >>> asyncio.run(demo())
        (14, 'started')
    """
    entries: list[tuple[str, Path, os.stat_result]] = []
    try:
        check_chunk_size(chunk_size)
        check_progress(progress)
        for spec in files:
            name, path = (spec[0], Path(spec[1])) if isinstance(spec, tuple) else (Path(spec).name, Path(spec))
            check_entry_path(name)
            info = await asyncio.to_thread(os.stat, path)
            if not stat.S_ISREG(info.st_mode):
                # a tree entry is held to its size, which only a regular file has; and a FIFO waited for its writer
                raise ValueError(f"send_files: {os.fspath(path)} is {_file_kind(info.st_mode)}, not a regular file: "
                                 "only regular files can be sent in a tree")
            entries.append((name, path, info))
        check_clashes([name for name, _, _ in entries])
    except BaseException as exc:
        await _abort_writer(writer, f"send_files could not start: {exc!r}")
        raise
    return await _send(writer, [], entries, progress, "files", chunk_size)


# ---------------------------------------------------------------------------------------------------- receiving


class _Receiver:
    """Writes the entries of one stream into a staging directory, one file at a time."""

    def __init__(self, staging: Path, channel_id: str, max_entries: int | None, require_tree: bool = True,
                 max_name_bytes: int | None = DEFAULT_MAX_NAME_BYTES) -> None:
        self.staging = staging
        self.require_tree = require_tree
        # The entry and end records as they came, and whether the sender's count and hash of them did.
        self._records = Digest()
        self._record_count = 0
        self._tree_checked = False
        self.channel_id = channel_id
        self.max_entries = max_entries
        self.max_name_bytes = max_name_bytes
        self._name_bytes = 0  # the UTF-8 bytes of the names claimed so far, each held until the receipt
        self.files: list[tuple[str, int, str]] = []
        self.dirs: list[str] = []
        self._seen: set[str] = set()
        self._name: str | None = None
        self._size = 0  # the size the entry record declared for the file being received
        self._fh: BinaryIO | None = None
        self._digest = Digest()
        self._pending: list[bytes] = []
        self._pending_size = 0

    def _error(self, message: str) -> IntegrityError:
        return IntegrityError(f"channel {self.channel_id}: {message}", channel_id=self.channel_id)

    def _claim(self, name: object) -> tuple[str, Path]:
        try:
            rel = check_entry_path(name, f"channel {self.channel_id}")  # before any of it is created
        except ValueError as exc:
            raise self._error(str(exc)) from None
        key = rel.as_posix()
        if key in self._seen:
            raise self._error(f"{_shown(key)} appears twice in the stream")
        if self.max_entries is not None and len(self._seen) >= self.max_entries:
            raise LimitExceededError(self.max_entries, f"channel {self.channel_id}: the tree, {len(self._seen) + 1} "
                                     f"entries with {_shown(key)},", "entries (max_entries)")
        name_bytes = self._name_bytes + len(key.encode("utf-8", "surrogatepass"))
        if self.max_name_bytes is not None and name_bytes > self.max_name_bytes:
            raise LimitExceededError(self.max_name_bytes, f"channel {self.channel_id}: the tree's entry names, "
                                     f"{name_bytes} bytes with {_shown(key)},", "bytes (max_name_bytes)")
        self._name_bytes = name_bytes
        self._seen.add(key)
        return key, self.staging.joinpath(*rel.parts)

    async def on_text(self, text: str) -> None:
        parsed = _parse(text)
        if parsed is None:
            return  # other text messages are not ours to interpret
        kind, body = parsed
        if self._tree_checked:
            raise self._error(f"a {kind} record after the tree's own record")
        if kind == TREE_KEY:
            self._check_tree(body)
            return
        self._records.update_text(text)
        self._record_count += 1
        if kind == ENTRY_KEY:
            if self._fh is not None:
                raise self._error(f"a new entry began inside {_shown(self._name)}")
            entry_type = body.get("type")
            if entry_type not in ("file", "dir"):
                # Only regular files and directories are ever created: never a symlink or a device a peer asks for.
                raise self._error(f"entry {_shown(body.get('path'))} has type {_shown(entry_type)}; only 'file' "
                                  "and 'dir' are stored")
            name, target = self._claim(body.get("path"))
            declared = body.get("size")
            size = declared if isinstance(declared, int) and not isinstance(declared, bool) and declared >= 0 else None
            if entry_type == "file" and size is None:
                raise self._error(f"file entry {_shown(name)} declares size {_shown(declared)}, not a number of bytes")
            try:
                if entry_type == "dir":
                    await asyncio.to_thread(target.mkdir, parents=True, exist_ok=True)
                    self.dirs.append(name)
                    return
                self._fh = await asyncio.to_thread(_create, target)
            except OSError as exc:
                # named as the sender named it: the staging directory's path means nothing to either side
                raise type(exc)(exc.errno, f"channel {self.channel_id}: cannot create {entry_type} entry "
                                f"{_shown(name)}: {exc.strerror or exc}") from exc
            assert size is not None
            self._name, self._size, self._digest = name, size, Digest()
            return
        if self._fh is None:
            raise self._error("a file end record outside any file")
        await self._flush()
        fh, self._fh = self._fh, None
        await asyncio.to_thread(fh.close)
        self._check_size()
        if body.get("bytes") != self._digest.count or body.get("sha256") != self._digest.hexdigest():
            raise self._error(f"{_shown(self._name)}: received {_bytes(self._digest.count)}, not matching the sender's "
                              f"{_bytes(body.get('bytes'))} / SHA-256")
        assert self._name is not None
        self.files.append((self._name, self._digest.count, self._digest.hexdigest()))

    async def on_data(self, chunk: bytes) -> None:
        if self._fh is None:
            raise self._error("file data outside any file entry")
        self._digest.update(chunk)
        if self._digest.count > self._size:
            self._check_size()  # before any byte past the declared size is stored
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        if self._pending_size >= DEFAULT_CHUNK:
            await self._flush()

    def _check_size(self) -> None:
        """The entry record's size is the one the tree record covers: bytes agreeing with only the end record
        (the sender's own count of what it sent) would store a file truncated or extended on its side as verified."""
        if self._digest.count != self._size:
            more = " (so far)" if self._digest.count > self._size else ""
            raise self._error(f"{_shown(self._name)}: the entry declared {_bytes(self._size)}, received "
                              f"{_bytes(self._digest.count)}{more}")

    async def _flush(self) -> None:
        if self._pending and self._fh is not None:
            await asyncio.to_thread(self._fh.writelines, self._pending)
        self._pending, self._pending_size = [], 0

    def _check_tree(self, body: dict[str, Any]) -> None:
        if self._fh is not None:
            raise self._error(f"the tree's record came inside {_shown(self._name)}")
        if body.get("records") != self._record_count or body.get("sha256") != self._records.hexdigest():
            raise self._error(f"the entry records received ({self._record_count}) do not match the sender's "
                              f"({body.get('records')!r}) / SHA-256: names, types or sizes were changed, or entries "
                              "left out, on the way")
        self._tree_checked = True

    def finish(self) -> None:
        if self._fh is not None:
            self._fh.close()
            raise self._error(f"the stream ended inside {_shown(self._name)}")
        if self.require_tree and not self._tree_checked:
            raise self._error(f"the stream ended without the tree's record ({TREE_KEY}): its names, directories "
                              "and empty files cannot be checked (a sender before this record, or the record was "
                              "dropped on the way; require_tree=False accepts such a stream)")

    def close(self) -> None:
        """After a failure: the file being written closed, and the names let go (up to ``max_name_bytes``: the
        error's traceback holds this receiver for as long as the caller keeps the error)."""
        if self._fh is not None:
            self._fh.close()
        self._seen.clear()
        self.dirs.clear()
        self.files.clear()


def _bytes(count: object) -> str:
    """``count`` bytes, in words.

    Example:
        >>> _bytes(1), _bytes(0), _bytes(None)
        ('1 byte', '0 bytes', 'None bytes')
    """
    return f"{count} byte{'' if count == 1 else 's'}"


def _create(target: Path) -> BinaryIO:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, new_file_mode())
    return os.fdopen(fd, "wb")


@dataclass(frozen=True)
class _Staging:
    """Where a tree is received: ``path``, the staging directory, locked through ``lock`` (its descriptor);
    ``into``, the descriptor of the existing empty destination it was made in (its entries are moved into it at
    the end), or ``None``: it was made next to the destination, and is renamed to it."""

    path: Path
    lock: int
    into: int | None = None

    def close(self) -> None:
        os.close(self.lock)
        if self.into is not None:
            os.close(self.into)


def _prepare(destination: Path) -> _Staging:
    """The locked staging directory for ``destination``: inside it when it is an existing empty directory,
    next to it when it does not exist."""
    if destination.is_symlink():
        # what it points to could change while the tree is received: the tree goes where it was named
        raise FileExistsError(f"receive_dir: {destination} is a symlink: name the directory itself (or a new one)")
    if destination.is_dir():
        return _prepare_inside(destination)
    if destination.exists():
        raise FileExistsError(f"receive_dir: {destination} exists and is not an empty directory")
    if destination.name in ("", ".", ".."):
        # "missing/..": staged in "missing", whose rename to "missing/.." can only fail, after the whole transfer
        raise FileNotFoundError(errno.ENOENT, f"receive_dir: {destination} does not exist, and no directory can be "
                                "made under a name ending in '..': name the new directory itself")
    destination.parent.mkdir(parents=True, exist_ok=True)
    reclaim_stale_parts(destination.parent)
    # mkdtemp's 0700 until the tree is in place (see _place): a group member who may write in the destination's
    # directory could otherwise plant files or symlinks in it while it is received (a symlink for a directory
    # entry made the next entry be written through it, outside the destination)
    staging = Path(tempfile.mkdtemp(prefix=f"{PART_PREFIX}{os.getpid()}-", dir=destination.parent))
    try:
        return _Staging(staging, _lock_part_dir(staging))
    except BaseException:
        with contextlib.suppress(OSError):
            remove_tree(staging)
        raise


def _prepare_inside(destination: Path) -> _Staging:
    """Staging inside the existing directory ``destination``, which must be empty (once parts no live receiver
    owns are removed from it). Why not next to it, renamed over it at the end as a new directory is: the rename put
    a new directory in its place (the umask's mode instead of its own, its group, setgid bit, ACLs and inode lost),
    and failed with EBUSY after the whole transfer when it was a mount point or the current directory (``.``)."""
    into = os.open(destination, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        reclaim_stale_parts(destination)  # one a killed receive into it left
        held = sorted(os.listdir(into))
        if held:
            busy = " (a receive into it in progress)" if all(_is_part_name(name) for name in held) else ""
            raise FileExistsError(f"receive_dir: {destination} exists and is not an empty directory: it holds "
                                  f"{_shown(held[0])}{busy}{f' and {len(held) - 1} more' if len(held) > 1 else ''}")
        staging = Path(tempfile.mkdtemp(prefix=f"{PART_PREFIX}{os.getpid()}-", dir=destination))
        try:
            lock = _lock_part_dir(staging)
            try:
                made, locked = os.stat(staging.name, dir_fd=into, follow_symlinks=False), os.fstat(lock)
                if (made.st_dev, made.st_ino) != (locked.st_dev, locked.st_ino):
                    # the entries are moved into the directory first checked, by descriptor: not into another
                    raise FileExistsError(f"receive_dir: {destination} was replaced while it was prepared")
            except BaseException:
                os.close(lock)
                raise
        except BaseException:
            with contextlib.suppress(OSError):
                remove_tree(staging)
            raise
    except BaseException:
        os.close(into)
        raise
    return _Staging(staging, lock, into)


def _place(staging: _Staging, final: Path) -> None:
    """Put the received tree in place as ``final``: rename ``staging`` to it, then give it the mode a plain
    ``mkdir`` would (through its own descriptor: whatever is at ``final`` by then, only our directory is changed);
    or, staged inside the existing ``final``, move the staging directory's entries into it."""
    if staging.into is None:
        try:
            os.rename(staging.path, final)
        except OSError as exc:
            raise type(exc)(exc.errno, f"receive_dir: the tree was received but cannot be put in place as {final} "
                            f"({exc.strerror or exc}); nothing was left") from exc
        os.fchmod(staging.lock, _new_dir_mode())
        return
    into, mine = staging.into, staging.path.name
    # Another receive's staging directory is no clash: no entry of a tree is named .iii-part-*.
    added = sorted(name for name in os.listdir(into) if name != mine and not _is_part_name(name))
    if added:
        raise FileExistsError(errno.EEXIST, f"receive_dir: {final} gained {_shown(added[0])} while the tree was "
                              "received: nothing was moved into it")
    moved: list[str] = []
    for name in os.listdir(staging.lock):
        try:
            # never rename(2): it replaced what another process made under a name not yet moved (re-attack: all of
            # the 171 files made during the moves of 20,000 entries held the receiver's data, and the receive succeeded)
            _move_no_replace(staging.lock, name, into)
        except OSError as exc:
            stuck = [back for back in reversed(moved) if not _moved_back(staging, back)]
            left = (f"{len(stuck)} entries moved in could not be moved back, such as {_shown(stuck[0])}" if stuck
                    else "nothing of the tree was left in it")
            if isinstance(exc, FileExistsError):
                raise FileExistsError(exc.errno, f"receive_dir: {final} gained {_shown(name)} while the tree was "
                                      f"moved into it: that entry was left as it is; {left}") from exc
            raise type(exc)(exc.errno, f"receive_dir: cannot move the entry {_shown(name)} into {final} "
                            f"({exc.strerror or exc}); {left}") from exc
        moved.append(name)
    with contextlib.suppress(OSError):
        # empty by now, and unlocked once the receive returns: a failure here leaves no data, only a part the next
        # receive in that directory removes, so it does not fail a tree already in place
        os.rmdir(mine, dir_fd=into)


def _moved_back(staging: _Staging, name: str) -> bool:
    assert staging.into is not None
    try:
        _move_no_replace(staging.into, name, staging.lock)
    except OSError:
        return False
    return True


_RENAME_NOREPLACE = 1  # linux/fs.h
# renameat2's number where glibc is older than 2.28 (or musl lacks the wrapper): asm/unistd.h of each
_SYS_RENAMEAT2 = {"x86_64": 316, "aarch64": 276}


@functools.cache
def _renameat2() -> Callable[[int, bytes, int, bytes, int], int] | None:
    """``renameat2(olddirfd, old, newdirfd, new, flags)`` (-1 and errno on failure), from the C library or as
    the raw system call; ``None`` off Linux, or on an architecture whose number is not known here."""
    if sys.platform != "linux":
        return None  # macOS has renameatx_np instead; a raw Linux system call number means something else there
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    call = getattr(libc, "renameat2", None)
    if call is not None:
        call.argtypes, call.restype = argtypes, ctypes.c_int
        return cast(Callable[[int, bytes, int, bytes, int], int], call)
    number, syscall = _SYS_RENAMEAT2.get(platform.machine()), getattr(libc, "syscall", None)
    if number is None or syscall is None:
        return None
    syscall.argtypes, syscall.restype = [ctypes.c_long, *argtypes], ctypes.c_long
    return functools.partial(syscall, number)


def _move_no_replace(src_fd: int, name: str, dst_fd: int) -> None:
    """Move the entry ``name`` of the directory ``src_fd`` into the directory ``dst_fd``, under the same name,
    never replacing what is there (``FileExistsError``): ``rename(2)`` silently replaces a file, a symlink or an
    empty directory another process made under that name meanwhile.

    ``renameat2(RENAME_NOREPLACE)`` where the kernel and file system have it (Linux 3.15+, ext4, xfs, btrfs,
    tmpfs, …). Elsewhere: a file is hard-linked in (``link(2)`` never replaces), then unlinked from ``src_fd``;
    a directory (or a file on a file system without hard links) is looked for first, then renamed: one made
    between the two is still replaced (a window of one system call).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     Path(tmp, "staged", "d").mkdir(parents=True)
        ...     _ = Path(tmp, "staged", "f").write_text("received")
        ...     Path(tmp, "dest").mkdir()
        ...     _ = Path(tmp, "dest", "f").write_text("made meanwhile")
        ...     src, dst = (os.open(Path(tmp, d), os.O_RDONLY | os.O_DIRECTORY) for d in ("staged", "dest"))
        ...     try:
        ...         _move_no_replace(src, "d", dst)
        ...         _move_no_replace(src, "f", dst)
        ...     except FileExistsError as exc:
        ...         print(f"{exc.filename!r} taken, kept: {Path(tmp, 'dest', 'f').read_text()!r}")
        ...     finally:
        ...         os.close(src)
        ...         os.close(dst)
        ...     sorted(os.listdir(Path(tmp, "staged"))), sorted(os.listdir(Path(tmp, "dest")))
        'f' taken, kept: 'made meanwhile'
        (['f'], ['d', 'f'])
    """
    renameat2 = _renameat2()
    if renameat2 is not None:
        encoded = os.fsencode(name)
        if renameat2(src_fd, encoded, dst_fd, encoded, _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS):  # the flag or the call unsupported: as below
            raise OSError(code, os.strerror(code), name)
    if not stat.S_ISDIR(os.stat(name, dir_fd=src_fd, follow_symlinks=False).st_mode):
        try:
            os.link(name, name, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP):  # no hard links there: as a directory
                raise
        else:
            try:
                os.unlink(name, dir_fd=src_fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=dst_fd)  # the link just made: the entry is only where it was
                raise
            return
    try:
        os.stat(name, dir_fd=dst_fd, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(name, name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
    else:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), name)


async def receive_dir(
    reader: ChannelReader, destination: str | os.PathLike[str], *, progress: Progress = None,
    require_trailer: bool = True, max_entries: int | None = DEFAULT_MAX_ENTRIES, require_tree: bool | None = None,
    idle_timeout: float | None = None, max_name_bytes: int | None = DEFAULT_MAX_NAME_BYTES,
) -> TreeReceipt:
    """Store a ``send_dir`` / ``send_files`` stream as the directory ``destination`` (which must not exist, or be
    empty). Everything is verified before the tree appears; on failure nothing is left behind. An existing empty
    directory (``.`` too, or a mount point) is kept as it is (its mode, owner, group, ACLs): the tree's entries are
    moved into it one by one, never replacing an entry another process makes there meanwhile (the receive fails
    instead, :class:`FileExistsError` naming it, with those moved in moved back). ``require_trailer`` (default)
    requires the stream's trailer, over the file bytes; ``require_tree`` its tree record, over the entry records
    (names, types, sizes); ``None`` (default): as ``require_trailer``. Without either the receive fails
    (:class:`IntegrityError`). ``require_trailer=True, require_tree=False`` accepts a sender from before the tree
    record and still requires the trailer (a tree record that comes is checked).

    A stream of more than ``max_entries`` files and directories, or whose entries' names (their UTF-8 bytes, all
    together: each is held until the receipt is returned) come to more than ``max_name_bytes``, raises
    :class:`LimitExceededError` (``None``: no limit); only entries of type ``file`` and ``dir`` are accepted. Each
    name is held to ``receive_file``'s rules, part by part (:func:`check_entry_path`). ``destination`` may not be
    a symlink, nor an empty path (``ValueError``, before anything is read). ``idle_timeout``: most seconds to wait
    for the sender's next message (``None``, the default: no limit), then
    :class:`~iii_channels.errors.ChannelIdleError` (nothing is left behind, as for any failure).

    Example:
        >>> import asyncio, tempfile
        >>> from iii_engine.testing import local_channel
        >>> async def demo() -> tuple[list[str], int, bool]:
        ...     async with local_channel() as ch:
        ...         with tempfile.TemporaryDirectory() as tmp:
        ...             Path(tmp, "a.txt").write_text("abc")
        ...             Path(tmp, "b.txt").write_text("defg")
        ...             specs = [Path(tmp, "a.txt"), Path(tmp, "b.txt")]
        ...             receiving = receive_dir(ch.reader, f"{tmp}/out")
        ...             _, receipt = await asyncio.gather(send_files(ch.writer, specs), receiving)
        ...             names = [f.path.name for f in receipt.files]
        ...             return names, receipt.bytes, all(f.verified for f in receipt.files)
        >>> asyncio.run(demo())
        (['a.txt', 'b.txt'], 7, True)
    """
    try:
        if os.fspath(destination) == "":
            # Path("") is ".": the whole tree was received, then its rename to "." failed (EBUSY)
            raise ValueError("receive_dir: the destination is an empty path: name a directory ('.' for the current "
                             "one)")
        final = Path(destination)
        for limit, value in (("max_entries", max_entries), ("max_name_bytes", max_name_bytes)):
            if value is not None and value < 1:
                raise ValueError(f"{limit} must be at least 1 (or None), got {value}")
        source = ChannelSource(reader, require_trailer=require_trailer, progress=progress,
                               label=final.name or os.fspath(final), idle_timeout=idle_timeout)
        staging = await asyncio.to_thread(_prepare, final)
    except BaseException:
        # Refused before reading: release the writer now instead of leaving it blocked on backpressure.
        await asyncio.shield(_release_writer(reader))
        raise
    receiver = _Receiver(staging.path, reader.ref.channel_id, max_entries,
                         require_tree=require_trailer if require_tree is None else require_tree,
                         max_name_bytes=max_name_bytes)
    try:
        async for item in source.items():
            if isinstance(item, str):
                await receiver.on_text(item)
            else:
                await receiver.on_data(item)
        receiver.finish()
        await asyncio.to_thread(_place, staging, final)
    except BaseException:
        receiver.close()
        # Tell the writer at once (our engine: 4002 "reader gone") instead of leaving it blocked on backpressure.
        with contextlib.suppress(Exception):
            await reader.close_async()
        # Not recursive (shutil.rmtree is, on 3.11): no depth of tree replaces the error the caller is given.
        with contextlib.suppress(OSError):
            await asyncio.shield(asyncio.to_thread(remove_tree, staging.path))
        raise
    finally:
        # Released only now: renamed or removed, the staging directory never looks abandoned while in use.
        staging.close()
    files = [FileReceipt(final.joinpath(*PurePosixPath(name).parts), size, sha, True, name)
             for name, size, sha in receiver.files]
    return TreeReceipt(final, files, receiver.dirs)


__all__ = [
    "MAX_TREE_DEPTH", "TreeReceipt", "check_clashes", "check_entry_path", "receive_dir", "send_dir", "send_files",
]
