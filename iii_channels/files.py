"""Send and receive files through channels in constant memory.

``receive_file`` writes to a temporary name in the target directory and renames it only once the stream ended
normally and (when a trailer came) was verified; on any failure the temporary file is removed, so a partial file
never appears under the final name, and the reader is closed so the writer learns at once (``ReaderGoneError``).

``send_file`` first sends a text header ``{"iii_channels_file": {"name": …, "size": …}}`` so the receiver knows
the size for its progress bar, then the bytes, then the integrity trailer.

Example:
    >>> async def transfer(writer, reader) -> None:
    ...     await asyncio.gather(send_file(writer, "big.iso", progress=True),
    ...                          receive_file(reader, "copy.iso"))
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from iii.channels import ChannelReader, ChannelWriter

from .integrity import Digest
from .progress import Progress
from .sink import ChannelSink
from .source import ChannelSource

FILE_HEADER_KEY = "iii_channels_file"
DEFAULT_CHUNK = 1024 * 1024


def new_file_mode() -> int:
    """``0o666`` minus the process umask: the mode ``open()`` would give a new file (``mkstemp`` uses 0600).

    Example:
        >>> new_file_mode() & 0o600
        384
    """
    return 0o666 & ~_umask_value()


def new_dir_mode() -> int:
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
        >>> parse_file_header(file_header("a.txt", 3))
        ('a.txt', 3)
    """
    return json.dumps({FILE_HEADER_KEY: {"name": name, "size": size}})


def checked_file_name(name: str) -> str:
    """``name`` if it is a plain file name to create in a directory; ``ValueError`` naming the problem otherwise.

    The name comes from the sender, so anything that could leave the directory is refused, not "cleaned".

    Example:
        >>> checked_file_name("report.pdf")
        'report.pdf'
        >>> checked_file_name("../etc/passwd")
        Traceback (most recent call last):
        ...
        ValueError: refusing the sender's file name '../etc/passwd': it contains a path separator
    """
    if name in ("", ".", ".."):
        raise ValueError(f"refusing the sender's file name {name!r}: it is empty, '.' or '..'")
    separators = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if any(sep in name for sep in separators):
        raise ValueError(f"refusing the sender's file name {name!r}: it contains a path separator")
    if "\0" in name:
        raise ValueError(f"refusing the sender's file name {name!r}: it contains a NUL character")
    return name


def parse_file_header(text: str) -> tuple[str, int | None] | None:
    """``(name, size)`` from a header message, or ``None`` if ``text`` is not one."""
    if not text.startswith('{"' + FILE_HEADER_KEY + '"'):
        return None
    try:
        body = json.loads(text)[FILE_HEADER_KEY]
        size = body.get("size")
        return str(body["name"]), int(size) if size is not None else None
    except (ValueError, KeyError, TypeError):
        return None


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
    """Stream the file at ``path`` into ``writer``; returns the bytes sent. Aborts the channel on failure."""
    path = Path(path)
    size = os.stat(path).st_size
    sink = ChannelSink(writer, trailer=trailer, progress=progress, total=size, label=path.name)
    loop = asyncio.get_running_loop()
    try:
        if header:
            await sink.send_text(file_header(path.name, size))
        fh = await loop.run_in_executor(None, open, path, "rb")
        with fh:
            while chunk := await loop.run_in_executor(None, fh.read, chunk_size):
                await sink.write(chunk)
        if close:
            await sink.close()
        else:
            await sink.drain()
    except BaseException as exc:
        await sink.abort(f"send_file failed: {exc!r}")
        raise
    return sink.bytes_written


async def receive_file(
    reader: ChannelReader,
    path: str | os.PathLike[str],
    *,
    progress: Progress = None,
    require_trailer: bool = False,
    overwrite: bool = False,
) -> FileReceipt:
    """Stream ``reader`` into ``path`` (temporary name, then atomic rename).

    ``path`` may be a directory: the file is then named after the sender's header. That name must be a plain
    file name (``ValueError`` for empty, ``.``, ``..`` or one with a path separator), and an existing file of
    that name is kept, raising ``FileExistsError``, unless ``overwrite=True``. An explicit file ``path`` is
    always replaced. Either way the channel is closed and nothing is left behind when receiving fails.

    Example:
        >>> receipt = await receive_file(reader, "inbox/", require_trailer=True)  # doctest: +SKIP
    """
    target = Path(path)
    name_holder: list[tuple[str, int | None]] = []

    def on_text(text: str) -> None:
        parsed = parse_file_header(text)
        if parsed is not None and not name_holder:
            name_holder.append(parsed)

    loop = asyncio.get_running_loop()
    source = ChannelSource(reader, require_trailer=require_trailer, progress=progress, on_text=on_text,
                           label=target.name)
    is_dir = await loop.run_in_executor(None, os.path.isdir, target)
    directory = target if is_dir else target.parent
    fd, tmp_name = tempfile.mkstemp(prefix=".iii-part-", dir=directory)
    os.fchmod(fd, new_file_mode())
    digest = Digest()
    final: Path | None = None
    try:
        with os.fdopen(fd, "wb") as out:
            # Batch small channel chunks into ~1 MiB disk writes: one executor hop per MiB, not per 64 KiB.
            pending: list[bytes] = []
            pending_size = 0
            async for chunk in source.chunks():
                if is_dir and name_holder and final is None:
                    # The header came first: refuse a bad name or an existing file before receiving it all.
                    final = _directory_target(target, name_holder[0][0], overwrite)
                if source._progress is not None and name_holder and source._progress.total is None:
                    source._progress.total = name_holder[0][1]
                digest.update(chunk)
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= DEFAULT_CHUNK:
                    await loop.run_in_executor(None, out.writelines, pending)
                    pending, pending_size = [], 0
            if pending:
                await loop.run_in_executor(None, out.writelines, pending)
            await loop.run_in_executor(None, out.flush)
            await loop.run_in_executor(None, os.fsync, out.fileno())
        if is_dir:
            if not name_holder:
                raise ValueError(f"{target} is a directory and the sender sent no file name")
            target = _directory_target(target, name_holder[0][0], overwrite)
            if overwrite:
                os.replace(tmp_name, target)
            else:
                _place_new(tmp_name, target)
        else:
            os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        # Tell the writer at once (our engine: 4002 "reader gone") instead of leaving it blocked on backpressure.
        with contextlib.suppress(Exception):
            await reader.close_async()
        raise
    return FileReceipt(target, digest.count, digest.hexdigest(), source.verified,
                       name_holder[0][0] if name_holder else None)



def _directory_target(directory: Path, name: str, overwrite: bool) -> Path:
    target = directory / checked_file_name(name)
    if not overwrite and os.path.lexists(target):
        raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it")
    return target


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
