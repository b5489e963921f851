"""Every error the channel layer raises, in one place.

The channel-end errors come from :mod:`iii.channels` (the SDK cannot import this package) and are re-exported
here (``LimitExceededError`` too: ``ChannelReader.read_all(limit=…)`` raises it); the layer adds its own below.
All are subclasses of :class:`ChannelError`, itself an ``iii`` error.

========================= ============================================================================
ChannelError              base class; ``.channel_id``, ``.code`` (WebSocket close code), ``.reason``;
                          ``.partial``: what a ``read_all`` that raised it had read (else ``None``)
ChannelNotFoundError      the engine refused the upgrade with 404 (unknown id, wrong key or direction)
ChannelConnectionError    handshake failure, or the socket closed abnormally (1006, 1009, 1011, …)
ChannelAbortedError       the writer aborted; what was received is incomplete (close code 4001)
ChannelExpiredError       the other end never attached before the channel's deadline (4003)
ReaderGoneError           the reader left before the end; stop writing (4002 or a dropped socket)
ChannelInUseError         that end of the channel is already attached elsewhere (4009)
ChannelLoopError          this end used from an event loop it does not belong to, or its loop is closed
ChannelClosedError        this end was already closed or aborted locally
ChannelIdleError          the writer sent nothing for a source's ``idle_timeout`` (also a ``TimeoutError``)
IntegrityError            the trailer's byte count or SHA-256 did not match, or a required trailer is missing
IncompleteReadError       end of stream before ``readexactly(n)`` / ``readuntil(sep)`` completed
LimitExceededError        ``read_all(limit=…)`` / ``readuntil`` / unread text (``text_limit``) / a tree's
                          ``max_entries``: more than the limit would be held
ProcessError              a piped subprocess exited non-zero, or stopped reading its input early;
                          ``.returncode``, ``.stderr`` (its tail)
OutputStalledError        a command's stdin or an fd took none of its input for ``stall_timeout`` (also a
                          ``TimeoutError``); ``.unread``, ``.taken``
FileChangedError          a file changed (size, modification time, or replaced) while ``send_file`` /
                          ``send_dir`` / ``send_files`` sent it; the stream was aborted
========================= ============================================================================

Example:
    >>> err = IncompleteReadError(b"ab", 4)
    >>> str(err), err.partial
    ('stream ended after 2 of 4 bytes', b'ab')
"""

from __future__ import annotations

from collections.abc import Sequence

import iii  # the package before its modules (CPython gh-83065)
import iii.errors  # noqa: F401 - refuses a mix with the published iii-sdk (whose iii/ lacks this file)
from iii.channels import (
    ChannelAbortedError,
    ChannelClosedError,
    ChannelConnectionError,
    ChannelError,
    ChannelExpiredError,
    ChannelInUseError,
    ChannelLoopError,
    ChannelNotFoundError,
    LimitExceededError,
    ReaderGoneError,
)


class IntegrityError(ChannelError):
    """The received stream does not match its integrity trailer (truncated, corrupted, or trailer missing)."""


class ChannelIdleError(ChannelError, TimeoutError):
    """The writer sent nothing for the reading side's ``idle_timeout``; the message names the wait and the bytes
    read so far (a stalled sender must not hold a reader, and what waits behind it, for good)."""


class OutputStalledError(ChannelError, TimeoutError):
    """Where a channel was copied to (a command's stdin, an fd) took none of the bytes waiting for it for the
    copy's ``stall_timeout``; ``.unread``: the bytes left waiting for it (``None``: not known), ``.taken``: the bytes
    it took before (a reader that stopped reading without leaving must not hold the copy, and its writer, for good).

    Example:
        >>> err = OutputStalledError("fd 5 took none of the 8 bytes waiting for it for 1 s (0 taken before)",
        ...                          unread=8, taken=0)
        >>> isinstance(err, TimeoutError), err.unread
        (True, 8)
    """

    def __init__(self, message: str, *, unread: int | None, taken: int) -> None:
        super().__init__(message)
        self.unread = unread
        self.taken = taken


class IncompleteReadError(ChannelError):
    """End of stream arrived before the requested bytes; ``.partial`` holds what was read."""

    partial: bytes  # always set, unlike ChannelError.partial

    def __init__(self, partial: bytes, expected: int | None) -> None:
        wanted = f"{expected}" if expected is not None else "a separator within the"
        super().__init__(f"stream ended after {len(partial)} of {wanted} bytes")
        self.partial = partial
        self.expected = expected


class FileChangedError(ChannelError):
    """A file changed while it was sent (it was truncated, grew, was rewritten or replaced): what went out is no
    copy of any version of it, so the sender aborted the stream rather than close it under a trailer that verifies.
    ``.path`` names the file; ``.change`` says what changed (``None``: not known).

    Example:
        >>> FileChangedError("/data/a.bin changed size …", "/data/a.bin", "changed size from 9 to 4 bytes").abort_reason
        'the file changed size from 9 to 4 bytes while it was sent'
    """

    def __init__(self, message: str, path: str, change: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.change = change

    @property
    def abort_reason(self) -> str:
        """What changed, short enough for a WebSocket close reason (123 bytes) whatever the path: the stream's
        abort says it (the whole message, path first, was cut mid-sentence there)."""
        return f"the file {self.change or 'changed'} while it was sent"


class ProcessError(ChannelError):
    """A subprocess used as a pipe end failed; ``str()`` names the command, its exit status (or ``reason``, what
    went wrong when the status does not say) and stderr tail.

    Example:
        >>> str(ProcessError(["head", "-c", "1"], 0, b"", reason="stopped reading its input"))
        "command 'head -c 1' stopped reading its input"
    """

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: bytes, reason: str | None = None) -> None:
        tail = stderr.decode(errors="replace").strip()
        status = f"exit status {returncode}" if returncode is not None else "no exit status"
        detail = f": {tail[-500:]}" if tail else ""
        what = reason if reason is not None else f"failed with {status}"
        super().__init__(f"command {' '.join(argv)!r} {what}{detail}")
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr


__all__ = [
    "ChannelAbortedError",
    "ChannelClosedError",
    "ChannelConnectionError",
    "ChannelError",
    "ChannelExpiredError",
    "ChannelIdleError",
    "ChannelInUseError",
    "ChannelLoopError",
    "ChannelNotFoundError",
    "FileChangedError",
    "IncompleteReadError",
    "IntegrityError",
    "LimitExceededError",
    "OutputStalledError",
    "ProcessError",
    "ReaderGoneError",
]
