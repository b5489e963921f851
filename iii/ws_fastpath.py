"""Every use of ``websockets`` internals, in one module: the channel code's and the SDK control socket's.

Channel sockets move bulk data, and ``websockets``' generic per-frame machinery (a parser generator, frame
objects, an assembler, a context manager per send) costs more CPU than the bytes themselves. For channel
sockets (and the engine's side of the control socket, which uses the same receive path), this module:

* **sends** data frames by writing them straight to the transport (:func:`send_data`), with the socket's own
  flow control (:func:`drain_or_close`);
* **receives** with :class:`FrameReader`, a small sans-I/O splitter of complete, unfragmented text/binary frames,
  hooked in front of ``websockets``' parser by :class:`FastClientConnection` / :class:`FastServerConnection`
  (passed as ``create_connection``, a public option). Anything else — ping/pong, Close, fragments, reserved bits,
  oversize or wrongly masked frames — is handed to ``websockets`` whole and at a frame boundary, so it answers
  pings, runs the closing handshake and raises the same ``ConnectionClosed`` as always. After a Close (or any
  surprise) the rest of the stream goes to ``websockets`` for good.

For the SDK's control socket it writes small frames without ``send``'s coroutine (:func:`queue_frame`) and hands
complete messages to the client as ``websockets`` parses them (:class:`DirectClientConnection`). Both kinds of
socket batch the same way (:class:`_Corked`): frames written in one loop turn leave in one write, before anything
``websockets`` writes itself.

Which internals it relies on is checked once at import (:data:`MISSING` lists what this ``websockets`` lacks).
When something is missing, every helper here falls back to the public API (``send``, ``recv``, ``close``); each
kind of fallback is counted in :data:`FALLBACKS` and logged once. ``tests/unit/channels/test_ws_fastpath.py``
fails the day an upgrade moves one of them.

Example:
    >>> MISSING
    ()
    >>> server_frame(False, b"ab"), server_frame(True, b"hi")
    (b'\\x82\\x02ab', b'\\x81\\x02hi')
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import os
import re
import socket
import struct
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final

import iii.ws_imports  # noqa: F401  # isort: skip - websockets loads whole there, under one lock (see there)
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.connection import Connection
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import Protocol, Side, State
from websockets.version import version as _websockets_version

from .waiters import Signal

try:  # the C implementation websockets itself uses; the pure Python one is much slower
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

log = logging.getLogger(__name__)

MAX_FRAME_SIZE: Final = 64 * 1024
"""Binary writes are split into frames of at most this many bytes (same as the reference SDK) unless the peer
invited larger ones (:func:`iii.channel_end.invited_frame_size`)."""

DEFAULT_RECEIVE_BUFFER: Final = 1024 * 1024 + 64 * 1024
"""Bytes of received, unread messages a fast connection holds before it stops reading its socket: the largest
frame a channel writer is invited to send (1 MiB, :data:`iii.channel_end.INVITED_FRAME_SIZES`) and 64 KiB more.
Why not 1 MiB: one unread 1 MiB message, with its :data:`MESSAGE_CHARGE`, was over it, so a channel reader stopped
and restarted reading its socket after every such frame (two ``epoll_ctl`` calls, a loop turn, and pages faulted in
again for the next read): writer, relay and reader in one process took 1.4x the CPU per GiB they took with 960 KiB
frames (issue 10)."""
MESSAGE_CHARGE: Final = 128
"""What an unread message counts beyond its payload against the receive buffer: its tuple, its bytes object and
its place in the queue (~100 bytes measured). Counted by payload alone, empty messages never stopped the reading:
a channel writer flooding them into a reader that did not read took an engine from 68 MB to 1.1 GB in 20 s, and
1-byte messages held ~480 MB per channel before the socket was paused."""

SPLIT_MIN_MESSAGES: Final = 64
"""The fewest messages a fast connection splits off a read at a time, however full its receive buffer: with a tiny
buffer (1 KiB), splits of a message or two cost a loop turn each, and a flood of tiny frames 3 to 20 times the CPU;
64 more unread messages than the buffer holds are ~8 KiB."""

_FULL_CLIENT_HEAD: Final = struct.pack("!BBQ", 0x82, 0x80 | 127, MAX_FRAME_SIZE)
_PACK_B2 = struct.Struct("!BB").pack
_PACK_B2H = struct.Struct("!BBH").pack
_PACK_B2Q = struct.Struct("!BBQ").pack
_UNPACK_H = struct.Struct("!H").unpack_from
_UNPACK_Q = struct.Struct("!Q").unpack_from
_ANY_SIZE: Final = 1 << 64  # a max_size of None: larger than any frame's length field
_ANY_COUNT: Final = 1 << 62  # a split with no bound on its messages

WRITE_BUFFER: Final = (1024 * 1024, 256 * 1024)
"""(high, low) write-buffer marks of the engine's channel sockets (:func:`enable_fast_receive`) and of the SDK's
over TLS; the SDK's plain ones use :data:`CLIENT_WRITE_BUFFER`."""

CLIENT_WRITE_BUFFER: Final = (0, 0)
"""(high, low) write-buffer marks of an SDK channel socket: its sends wait until the transport's own buffer is
empty. The kernel's socket buffer (autotuned up to megabytes) is the queue that keeps the socket busy; a transport
buffer on top of it only costs copies (the rest of a partial send, then every next frame appended to it). Plain TCP
only: asyncio's TLS transport pauses at ``>= high`` bytes, so a high mark of 0 would pause it with nothing to send
(channel sockets over TLS keep :data:`WRITE_BUFFER`: :class:`FastClientConnection` sees the TLS transport, and
:mod:`iii.channels` picks it for ``wss://`` URLs when the fast path is not available)."""

FALLBACKS: collections.Counter[str] = collections.Counter()
"""How often each helper had to use the public API instead of the fast path (by reason)."""


def _probe() -> tuple[str, ...]:
    """Names of the ``websockets`` internals this module needs and the installed version lacks."""
    missing: list[str] = []
    protocol = Protocol(Side.SERVER)
    for name in ("state", "extensions", "close_rcvd", "close_sent", "close_rcvd_then_sent", "max_message_size",
                 "reader", "side", "expect_continuation_frame", "debug"):
        if not hasattr(protocol, name):
            missing.append(f"Protocol.{name}")
    if not isinstance(getattr(getattr(protocol, "reader", None), "buffer", None), bytearray):
        missing.append("Protocol.reader.buffer")
    for name in ("send_close", "close_exc", "receive_data", "close_expected"):
        if not hasattr(type(protocol), name):
            missing.append(f"Protocol.{name}")
    for name in ("send_context", "drain", "data_received", "connection_made", "connection_lost", "send_data",
                 "process_event"):
        if not callable(getattr(Connection, name, None)):
            missing.append(f"Connection.{name}")
    try:
        from websockets.asyncio import messages
    except ImportError:  # pragma: no cover - the module moved
        messages = None  # type: ignore[assignment]
    # Instance attributes can only be seen in the code that sets them (the classes need a running loop and a
    # transport to be built).
    for where, assigned in ((Connection.connection_made, ("self.recv_messages", "self.transport")),
                            (Connection.__init__, ("self.protocol", "self.send_in_progress", "self.paused")),
                            (getattr(messages, "Assembler", None), ("self.frames", "self.high", "self.low",
                                                                   "self.paused")),
                            (getattr(messages, "SimpleQueue", None), ("self.queue",))):
        try:
            source = inspect.getsource(where) if where is not None else ""
        except (OSError, TypeError):  # pragma: no cover - sources not shipped
            source = ""
        name = getattr(where, "__qualname__", "websockets.asyncio.messages")
        missing.extend(f"{name}: {attr}" for attr in assigned if attr not in source)
    for factory in (connect, serve):
        if "create_connection" not in inspect.signature(factory).parameters:
            missing.append(f"{factory.__module__}.{factory.__qualname__}(create_connection=)")
    return tuple(missing)


MISSING: Final[tuple[str, ...]] = _probe()
"""The internals this ``websockets`` lacks (empty when the fast path is fully available)."""
AVAILABLE: Final = not MISSING

if MISSING:  # pragma: no cover - depends on the installed websockets
    log.warning("websockets %s lacks %s: channel sockets use the public API (slower)",
                _websockets_version, ", ".join(MISSING))


def _fallback(reason: str) -> None:
    """Count one use of the public API instead of the fast path; log the first of each kind."""
    FALLBACKS[reason] += 1
    if FALLBACKS[reason] == 1:
        log.info("channel fast path not used: %s (counted in iii.ws_fastpath.FALLBACKS)", reason)


# ---------------------------------------------------------------------------------------------------- sending


def server_frame(text: bool, payload: bytes) -> bytes:
    """``payload`` as one complete, unmasked frame (server to client).

    Example:
        >>> len(server_frame(False, bytes(70000)))
        70010
    """
    return _frame_header(text, len(payload)) + payload


def _frame_header(text: bool, size: int) -> bytes:
    """The header of one complete, unmasked text or binary frame carrying ``size`` bytes."""
    head = 0x81 if text else 0x82
    if size < 126:
        return _PACK_B2(head, size)
    if size < 65536:
        return _PACK_B2H(head, 126, size)
    return _PACK_B2Q(head, 127, size)


def client_frame(text: bool, chunk: bytes | memoryview, key: bytes) -> bytes:
    """``chunk`` as one complete frame masked with the 4-byte ``key`` (client to server, RFC 6455 §5.3).

    Example:
        >>> client_frame(False, memoryview(b"hi"), b"\\x00\\x00\\x00\\x01")
        b'\\x82\\x82\\x00\\x00\\x00\\x01hi'
    """
    return b"".join((_client_head(text, len(chunk)), key, apply_mask(chunk, key)))


def _client_head(text: bool, size: int) -> bytes:
    """The header of a masked client frame of ``size`` payload bytes, without its mask key."""
    head = 0x81 if text else 0x82
    if size == MAX_FRAME_SIZE and not text:
        return _FULL_CLIENT_HEAD
    if size < 126:
        return _PACK_B2(head, 0x80 | size)
    if size < 65536:
        return _PACK_B2H(head, 0x80 | 126, size)
    return _PACK_B2Q(head, 0x80 | 127, size)


_KEYS_PER_READ: Final = 1024
_mask_keys: list[bytes] = []


def _mask_key() -> bytes:
    """One client mask key (RFC 6455 §5.3: unpredictable), 1024 drawn per read of the OS's random source."""
    try:
        return _mask_keys.pop()
    except IndexError:
        raw = os.urandom(4 * _KEYS_PER_READ)
        _mask_keys[:] = [raw[i:i + 4] for i in range(0, len(raw), 4)]
        return _mask_keys.pop()


os.register_at_fork(after_in_child=_mask_keys.clear)


FLUSH_BYTES: Final = 256 * 1024
"""Frames written in one event-loop turn are joined into one socket ``send`` up to this many bytes."""

YIELD_EVERY_S: Final = 0.005
"""The longest a sender keeps its event loop without letting anything else run: websockets' ``drain`` gives the loop
a turn only while the socket's buffer is over its mark, so a writer whose reader keeps up (a local engine) never
gave it one. Nothing else of its loop ran: heartbeats, calls, the peer's Close (a REST client gone was heard by its
handler 10 s late, when the engine dropped the connection, after 1.3-1.6 GB written into nothing)."""

SENDMSG_BYTES: Final = 64 * 1024
"""Corked frames of this many bytes or more leave in one ``sendmsg`` of their parts when the socket is idle, rather
than joined into one ``bytes`` first (a copy of every payload byte); smaller ones are joined, which costs less
than the kernel's walk of many small parts."""

FRAME_BUFFER: Final = 1024 * 1024 + 14
"""The largest frame (header included) a :class:`FrameReader` keeps its buffer of (one per thread) for the next frame
of the same size, which then gets it as soon as its header is in: a 1 MiB payload, the largest frame a writer is
invited to send (:data:`iii.channel_end.INVITED_FRAME_SIZES`)."""


def _write(ws: Connection, *parts: bytes) -> None:
    """Write the parts of frames; on a corking connection (channel sockets, the SDK's control socket) they are
    corked until the end of this event-loop turn (or :data:`FLUSH_BYTES`), so four 64 KiB frames cost one ``send``
    instead of four."""
    if isinstance(ws, _Corked):
        ws.cork(parts)
    elif len(parts) == 1:
        ws.transport.write(parts[0])
    else:
        ws.transport.write(b"".join(parts))


MASK_SEGMENT: Final = 1024 * 1024
"""A large client frame's payload is masked and written this many bytes at a time (a multiple of 4): 1 MiB, the
largest frame a writer is invited to send (:data:`iii.channel_end.INVITED_FRAME_SIZES`), so a frame is masked whole
and leaves with its header in one ``sendmsg``. Why not 256 KiB: a 1 MiB frame then cost four system calls and four
pushes of the peer's wake-ups, and the writer ~9 % more CPU per GiB than masked whole (issue 10; two runs of 40
interleaved rounds); the masked copy a write holds stays one frame."""


def _write_large(ws: Connection, head: bytes, payload: memoryview, key: bytes) -> None:
    """Write one large masked frame after what is corked, all of it before returning (nothing websockets writes
    may come between its parts). The payload is masked and written :data:`MASK_SEGMENT` bytes at a time (an invited
    frame in one piece; segments start at multiples of 4, so the key lines up), and as views: what the socket does
    not take at once is copied into the transport's buffer once (a ``bytes`` slice would copy it twice). What is
    corked, the header and the first segment leave in one ``sendmsg`` (:meth:`_Corked._send_with_corked`)."""
    first = apply_mask(payload[:MASK_SEGMENT], key)
    transport = ws.transport
    if not (isinstance(ws, _Corked) and ws._send_with_corked(head, first)):
        flush(ws)
        if transport.is_closing():
            return
        transport.write(head)
        transport.write(memoryview(first))
    for at in range(MASK_SEGMENT, len(payload), MASK_SEGMENT):
        if transport.is_closing():  # failed under this write: the rest would be masked for nothing
            return
        transport.write(memoryview(apply_mask(payload[at : at + MASK_SEGMENT], key)))


def flush(ws: Connection) -> None:
    """Write out corked frames now (before anything websockets itself writes, such as a Close frame)."""
    if isinstance(ws, _Corked):
        ws.flush_out()


def _writable(ws: Connection) -> bool:
    protocol = ws.protocol
    return AVAILABLE and protocol.state is State.OPEN and not protocol.extensions


async def send_data(ws: Connection, data: bytes | memoryview, *, text: bool = False,
                    frame_size: int = MAX_FRAME_SIZE) -> None:
    """Send ``data`` as one text message (``text=True``, UTF-8 bytes) or as binary frames of at most
    ``frame_size`` bytes (a client's frame size: see :func:`iii.channel_end.invited_frame_size`), waiting on the
    socket's flow control.

    Frames are encoded here and handed to the transport (one ``getrandom`` for all of a client's mask keys);
    the bytes on the wire are what ``ws.send`` would produce. Anything but an open plain connection goes through
    ``ws.send``, which raises the right ``ConnectionClosed``.
    """
    size = len(data)
    if not AVAILABLE:
        _fallback("websockets internals missing: send")
    elif size and isinstance(ws, ClientConnection):
        if text:
            if _writable(ws):
                _write(ws, client_frame(True, data, _mask_key()))
                await drain_or_close(ws)
                return
        else:
            data = await _send_client_binary(ws, memoryview(data), frame_size)
            size = len(data)
            if not size:
                return
    elif size and not isinstance(ws, ClientConnection):
        view = memoryview(data)
        step = frame_size if not text else size
        for start in range(0, size, step):
            await send_server_frame(ws, text, bytes(view[start : start + step]))
        return
    # The public API: websockets not as expected, an empty message, or a closed connection (``ws.send`` raises
    # the right ConnectionClosed).
    raise_if_lost(ws)
    if text:
        await ws.send(bytes(data).decode())
        return
    if not size:
        await ws.send(b"")
    view = memoryview(data)
    for offset in range(0, size, frame_size):
        await ws.send(view[offset : offset + frame_size])


async def _send_client_binary(ws: ClientConnection, view: memoryview, frame_size: int) -> memoryview:
    """Masked binary frames straight to the transport while ``ws`` is open; what is left unsent (empty when all
    went out)."""
    size = len(view)
    keys = os.urandom(4 * -(-size // frame_size))
    if frame_size < FLUSH_BYTES:
        return await _send_client_batches(ws, view, frame_size, keys)
    # Frame by frame rather than one big buffer: a 64 KiB frame stays in the CPU cache from masking to the socket,
    # and a write holds one masked frame at a time, whatever its size.
    turn = time.monotonic()
    for start in range(0, size, frame_size):
        if start and time.monotonic() - turn >= YIELD_EVERY_S:  # between frames: see YIELD_EVERY_S
            await asyncio.sleep(0)
            turn = time.monotonic()
        if not _writable(ws):
            return view[start:]
        key_at = start // frame_size * 4
        chunk = view[start : start + frame_size]
        key = keys[key_at : key_at + 4]
        if len(chunk) < FLUSH_BYTES:
            # Header and masked payload corked apart: the cork's one join copies them with the frames around it
            # (client_frame would join each frame first, one more copy of its payload).
            _write(ws, _client_head(False, len(chunk)) + key, apply_mask(chunk, key))
        else:
            _write_large(ws, _client_head(False, len(chunk)) + key, chunk, key)
        await drain_or_close(ws)
    return view[size:]


async def _send_client_batches(ws: ClientConnection, view: memoryview, frame_size: int, keys: bytes) -> memoryview:
    """:func:`_send_client_binary` for frames smaller than :data:`FLUSH_BYTES` (64 KiB ones: a writer the server
    does not invite to send larger): a batch of them, :data:`FLUSH_BYTES` of payload, goes to the cork in one call
    and one flow-control wait, and leaves at once (:meth:`_Corked.cork`); per frame, only its header, key and
    masked payload, corked apart (joining them would copy each payload once more)."""
    size = len(view)
    per_batch = max(1, FLUSH_BYTES // frame_size) * frame_size
    full_head = _client_head(False, frame_size)
    turn = time.monotonic()
    for first in range(0, size, per_batch):
        if first and time.monotonic() - turn >= YIELD_EVERY_S:  # between frames: see YIELD_EVERY_S
            await asyncio.sleep(0)
            turn = time.monotonic()
        if not _writable(ws):
            return view[first:]
        parts: list[bytes] = []
        for start in range(first, min(size, first + per_batch), frame_size):
            chunk = view[start : start + frame_size]
            key_at = start // frame_size * 4
            key = keys[key_at : key_at + 4]
            parts.append((full_head if len(chunk) == frame_size else _client_head(False, len(chunk))) + key)
            parts.append(apply_mask(chunk, key))
        _write(ws, *parts)
        await drain_or_close(ws)
    return view[size:]


async def send_server_frame(ws: Connection, text: bool, payload: bytes) -> None:
    """Send one complete message from the server side without re-encoding it (the relay's hot path)."""
    if not _writable(ws):
        if not AVAILABLE:
            _fallback("websockets internals missing: relay send")
        await ws.send(payload.decode() if text else payload)
        return
    _write(ws, _frame_header(text, len(payload)), payload)
    await drain_or_close(ws)


async def send_server_frames(ws: Connection, messages: list[tuple[bool, bytes]]) -> None:
    """Send several complete messages from the server side with one write and one flow-control wait (the relay
    hands over what its queue holds, bounded by the caller). The bytes on the wire are those of one
    :func:`send_server_frame` per message."""
    if not messages:
        return
    if len(messages) == 1 or not _writable(ws):
        for text, payload in messages:
            await send_server_frame(ws, text, payload)
        return
    parts: list[bytes] = []
    for text, payload in messages:
        parts.append(_frame_header(text, len(payload)))
        parts.append(payload)
    _write(ws, *parts)
    await drain_or_close(ws)


_SENDMSG_PARTS: Final = 512
"""Most buffers handed to one ``sendmsg`` (Linux takes 1024): more frames than that are corked and joined."""
_UNJOINED_PART_BYTES: Final = 4096
"""Corked parts leave unjoined only where they hold at least this many bytes on average (large frames)."""


def writable_now(ws: Connection) -> bool:
    """Whether :func:`write_server_frames` would write to ``ws`` now: a fast server connection, open, under its
    write-buffer high mark.

    Example:
        >>> writable_now(object())  # type: ignore[arg-type]  # not a fast connection
        False
    """
    return (isinstance(ws, FastServerConnection) and not ws.paused and _writable(ws)
            and not ws.transport.is_closing())


def write_server_frames(ws: Connection, messages: list[tuple[bool, bytes]]) -> bool:
    """Write complete messages from the server side now, without waiting, when the socket may take them: open,
    on the fast path and not over its write-buffer high mark (``False``, nothing written, otherwise: send them
    with :func:`send_server_frames`, which waits on flow control). The bytes on the wire are those of
    :func:`send_server_frames`. What this adds to the transport's buffer is bounded by the caller: the socket's
    next write waits in :func:`drain_or_close` once the buffer is over its mark.

    Example:
        >>> write_server_frames(object(), [(False, b"x")])  # type: ignore[arg-type]  # not a fast connection
        False
    """
    if not writable_now(ws):
        return False
    parts: list[bytes] = []
    for text, payload in messages:
        parts.append(_frame_header(text, len(payload)))
        parts.append(payload)
    if len(parts) > _SENDMSG_PARTS or not (isinstance(ws, _Corked) and ws.send_now(parts)):
        _write(ws, *parts)
    return True


WROTE: Final = 1
""":func:`write_frame_now` wrote the frame (or corked it for this turn's write)."""
WROTE_OVER_MARK: Final = 2
""":func:`write_frame_now` wrote the frame and the transport's buffer is now over its high mark: the writer waits
for :func:`drain_or_close` before its next frame, as :func:`send_server_frame` would have."""


def write_frame_now(ws: Connection, payload: bytes, hold: bool = False) -> int:
    """Write one complete text frame from the server side without a coroutine (the engine's call path): ``0``,
    nothing written, when :func:`writable_now` says the socket may not take it now (send it with
    :func:`send_server_frame`, which waits on flow control); else :data:`WROTE` or :data:`WROTE_OVER_MARK`.

    ``hold``: more frames are likely in this event-loop turn, so the frame is corked and leaves with them in one
    write at the end of the turn; otherwise it leaves now, in one ``sendmsg`` with its header when nothing is
    corked and the transport is idle (with what is corked, joined, when something is). Why: corked, a lone frame
    costs an event-loop callback and a turn of its own before it leaves (issue 10: one of about seven loop turns
    per routed call). The bytes on the wire are those of :func:`send_server_frame`, in the same order.

    Example:
        >>> write_frame_now(object(), b"x")  # type: ignore[arg-type]  # not a fast connection
        0
    """
    if not writable_now(ws):
        return 0
    assert isinstance(ws, FastServerConnection)  # writable_now checked it
    head = _frame_header(True, len(payload))
    if hold or ws._out:
        ws.cork((head, payload))
        if not hold:
            ws.flush_out()
    elif not ws.send_now((head, payload)):
        ws.cork((head, payload))  # the transport holds bytes: they leave first, at the end of this turn
    return WROTE_OVER_MARK if ws.paused else WROTE


# What websockets' stream reader says when a peer closes inside a line ("stream ends after 7 bytes, before end of
# line"): the one place it tells how much the peer sent. Checked by _eof_words_probe; None: it says otherwise.
_EOF_AFTER: Final = re.compile(r"stream ends after (\d+) bytes")


def _eof_words_probe() -> bool:
    """Whether this ``websockets``' stream reader says how many bytes came before an end inside a line, in the
    words :data:`_EOF_AFTER` reads."""
    from websockets.streams import StreamReader

    reader = StreamReader()
    reader.feed_data(b"ab")
    reader.feed_eof()
    try:
        next(reader.read_line(100))
    except EOFError as exc:
        match = _EOF_AFTER.match(str(exc))
        return match is not None and match.group(1) == "2"
    except Exception:  # another layout: the bytes are not told (bytes_before_close answers None)
        return False
    return False


EOF_WORDS_KNOWN: Final = _eof_words_probe()
"""Whether :func:`bytes_before_close` can read this ``websockets``' words (else it always answers ``None``)."""


def bytes_before_close(exc: BaseException) -> int | None:
    """How many bytes a server sent before it closed inside its answer to an upgrade, read from the ``EOFError``
    chain of the handshake's failure (``websockets`` says it there, and nowhere else); ``None`` when it does not say.
    Told apart this way, 0 is a forwarder closing before any answer (nothing behind it yet), more a server that
    answered something that is not HTTP (a TLS server's alert on a plain ``ws://`` URL).

    Example:
        >>> inner = EOFError("stream ends after 7 bytes, before end of line")
        >>> outer = EOFError("connection closed while reading HTTP status line")
        >>> outer.__cause__ = inner
        >>> bytes_before_close(outer), bytes_before_close(EOFError("other words"))
        (7, None)
    """
    cause: BaseException | None = exc
    for _ in range(4):  # (the chain is two deep; a cycle must not loop)
        if cause is None or not EOF_WORDS_KNOWN:
            return None
        if isinstance(cause, EOFError) and (match := _EOF_AFTER.match(str(cause))) is not None:
            return int(match.group(1))
        cause = cause.__cause__ or cause.__context__
    return None


def has_unread(ws: Connection) -> bool:
    """Whether ``ws`` holds received data messages nobody read yet (its reader will have more in this turn).

    Example:
        >>> has_unread(object())  # type: ignore[arg-type]  # not a fast connection
        False
    """
    return isinstance(ws, _FastReceive) and bool(ws._inbox)


async def drain_or_close(ws: Connection) -> None:
    """Wait while the socket's write buffer is over its limit; a failed socket becomes ``ConnectionClosed``."""
    try:
        await ws.drain()
    except ConnectionClosed:
        raise
    except Exception:
        # Close it like ``ws.send`` would, then report the close.
        ws.transport.abort()
        await ws.wait_closed()
        raise ws.protocol.close_exc from None


async def send_bare_close(ws: Connection) -> None:
    """Send a Close frame without a status code (what the production engine sends), then let websockets finish
    the closing handshake. Errors are ignored: the connection is going away either way."""
    flush(ws)
    if ws.protocol.state is not State.OPEN:
        return
    if not AVAILABLE:
        _fallback("websockets internals missing: bare close")
        with contextlib.suppress(ConnectionClosed):
            await ws.close()
        return
    with contextlib.suppress(Exception):
        async with ws.send_context():
            ws.protocol.send_close()


async def fail(ws: Connection, code: int, reason: str) -> None:
    """Fail the connection the way websockets does on a protocol error it finds itself (RFC 6455 §7.1.7): a Close
    frame with ``code`` and, from a server, the end of its side of the TCP stream; returns once the connection is
    closed (at most its ``close_timeout`` later). For a reader of :func:`receive` that finds an error websockets
    would have found (a text message that is not UTF-8: 1007). Errors are ignored: the connection goes either way.
    """
    flush(ws)
    if ws.protocol.state is not State.OPEN:
        return
    if not AVAILABLE or not callable(getattr(ws.protocol, "fail", None)):
        _fallback("websockets internals missing: fail")
        with contextlib.suppress(ConnectionClosed):
            await ws.close(code, reason)
        return
    with contextlib.suppress(Exception):
        async with ws.send_context():
            ws.protocol.fail(code, reason)


def close_frames(ws: Connection) -> tuple[Close | None, Close | None]:
    """``(received, sent)`` Close frames of ``ws`` (``None`` where there was none)."""
    protocol = ws.protocol
    return protocol.close_rcvd, protocol.close_sent


def close_sent_by_peer(ws: Connection) -> Close | None:
    """The Close frame the peer sent of its own accord: ``None`` when none came, or when it only answered ours."""
    protocol = ws.protocol
    close = protocol.close_rcvd
    if close is None or getattr(protocol, "close_rcvd_then_sent", None) is False:
        return None
    return close


def abort(ws: Connection) -> None:
    """Drop the TCP connection without a Close frame (corked frames are dropped with it); a no-op once the
    connection is lost (see :func:`raise_if_lost`)."""
    if not _lost(ws):
        ws.transport.abort()


def _lost(ws: Connection) -> bool:
    waiter = getattr(ws, "connection_lost_waiter", None)
    return waiter is not None and waiter.done() and ws.protocol.state is State.CLOSED


def raise_if_lost(ws: Connection) -> None:
    """Raise the ``ConnectionClosed`` of ``ws`` if its connection is lost already. websockets' ``send`` on a closed
    connection aborts its transport first, and asyncio's socket transport, once it lost its connection after
    writing out its buffer (a close the peer answered, or a peer's 1009), raises ``AttributeError: 'NoneType' object
    has no attribute 'call_soon'`` from that abort instead.

    Example:
        >>> from types import SimpleNamespace
        >>> raise_if_lost(SimpleNamespace(protocol=SimpleNamespace(state=State.OPEN)))  # open: nothing raised
    """
    if _lost(ws):
        raise ws.protocol.close_exc


def _socket_of(ws: Connection) -> Any:
    """The TCP socket under ``ws`` (asyncio's ``TransportSocket`` wrapper of it, with ``shutdown`` and
    ``setsockopt``), or ``None`` where there is none to reach."""
    transport = getattr(ws, "transport", None)  # set by connection_made (_probe); absent before it
    return None if transport is None else transport.get_extra_info("socket")


def reset(ws: Connection) -> None:
    """Drop the connection at once and discard what the peer has not read: with ``SO_LINGER`` 0 the kernel throws
    the unsent bytes away and answers with a reset, so a peer that stopped reading learns it is gone."""
    reset_transport(ws.transport)


def reset_transport(transport: asyncio.WriteTransport) -> None:
    """:func:`reset` for any asyncio transport over a socket (an HTTP connection too: a reset is how a client reading
    a body to the connection's end, HTTP/1.0's framing, tells a cut response from a whole one)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def shutdown(ws: Connection) -> None:
    """Shut ``ws``'s TCP connection down from any thread, without its event loop (closed, or not running): the
    peer sees the connection drop. Through the socket object, so never another socket that reused its descriptor;
    never raises (a connection gone already, or with no socket to reach, is left as it is).

    Example:
        >>> from types import SimpleNamespace
        >>> ours, peer = socket.socketpair()
        >>> shutdown(SimpleNamespace(transport=SimpleNamespace(get_extra_info=lambda name: ours)))
        >>> peer.recv(1)  # the peer sees the connection end
        b''
        >>> ours.close(); peer.close()
    """
    sock = _socket_of(ws)
    if sock is None:
        if getattr(ws, "transport", None) is None:
            _fallback("shutdown: the connection has no transport (websockets internals changed?)")
        return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def write_buffer_size(ws: Connection) -> int:
    """Bytes ``ws``'s transport holds, not yet taken by the socket (0 where it has none): they shrink as the peer
    takes them, in the middle of a long write.

    Example:
        >>> from types import SimpleNamespace
        >>> write_buffer_size(SimpleNamespace(transport=SimpleNamespace(get_write_buffer_size=lambda: 3)))
        3
    """
    transport = getattr(ws, "transport", None)
    if transport is None:
        _fallback("write_buffer_size: the connection has no transport (websockets internals changed?)")
        return 0
    return int(transport.get_write_buffer_size())


def is_open(ws: Connection) -> bool:
    """Whether ``ws`` is in the OPEN state."""
    return ws.protocol.state is State.OPEN


# ---------------------------------------------------------------------------------------------------- receiving


SPARE_BUFFERS: Final = 2
"""Large frame buffers (of :data:`FLUSH_BYTES` to :data:`FRAME_BUFFER` bytes) a thread keeps for its readers' next
frames, whatever the number of connections: two, so that a writer's and a reader's socket in one process (an
in-process channel, or a process relaying one stream) each find theirs instead of zeroing a fresh one per frame."""

_SPARE = threading.local()
"""The frame buffers this thread's :class:`FrameReader` s last finished with, for the next frame of the same size:
``buffers``, at most :data:`SPARE_BUFFERS` large ones (the oldest dropped first), and ``small``, the last one under
:data:`FLUSH_BYTES`."""

_LENT = threading.local()
"""The readers of this thread (``readers``, a weak set) holding a frame buffer their peer has not yet earned by
what it sent (:meth:`FrameReader._lend`)."""

LENT_BYTES: Final = 4 * FRAME_BUFFER
"""The frame buffers a thread's :class:`FrameReader` s may hold, all told, for peers that sent less than a quarter
of the frame in progress: what frame headers alone can make a thread allocate, however many connections send one."""


GUESS_MIN_BYTES: Final = 16 * 1024
"""The smallest frame a :class:`FrameReader` reads into a guessed buffer (:meth:`FrameReader.next_frame_buffer`):
below it a header's own read costs little next to the frame."""


def _keep_spare(buffer: bytearray) -> None:
    """Keep a frame buffer a reader finished with for this thread's next frame of its size (see :data:`_SPARE`)."""
    size = len(buffer)
    if size < FLUSH_BYTES:
        _SPARE.small = buffer
    elif size <= FRAME_BUFFER:  # a larger one (grown as its bytes came) is never kept
        spares: list[bytearray] | None = getattr(_SPARE, "buffers", None)
        if spares is None:
            spares = _SPARE.buffers = []
        elif len(spares) >= SPARE_BUFFERS:
            del spares[0]
        spares.append(buffer)


def _spare_of(size: int) -> bytearray | None:
    """Take this thread's spare frame buffer of exactly ``size`` bytes, if there is one."""
    if size < FLUSH_BYTES:
        small: bytearray | None = getattr(_SPARE, "small", None)
        if small is not None and len(small) == size:
            _SPARE.small = None
            return small
        return None
    spares: list[bytearray] | None = getattr(_SPARE, "buffers", None)
    if spares:
        for at, spare in enumerate(spares):
            if len(spare) == size:
                del spares[at]
                return spare
    return None


class FrameReader:
    """Sans-I/O splitter of a WebSocket byte stream into complete text/binary messages.

    :meth:`feed` takes bytes as they arrive and returns ``(messages, control, rest)``: the complete unfragmented
    data messages as ``(is_text, payload)`` (unmasked, text left as UTF-8 bytes), the raw bytes of ping/pong
    frames (to hand to ``websockets``), and — at the first frame it does not handle (Close, a fragment, reserved
    bits or opcodes, a wrong mask bit, a message over ``max_size``) — every byte from that frame on, after which
    the reader is :attr:`done` and must not be fed again. A partial frame is kept until the rest arrives.

    Args:
        masked: frames must be masked (a server reading a client) or must not be (a client reading a server).
        max_size: largest message it passes through (``None``: any).

    Example:
        >>> reader = FrameReader(masked=False)
        >>> reader.feed(b"\\x82\\x02ab\\x81\\x01")
        ([(False, b'ab')], [], None)
        >>> reader.feed(b"h\\x88\\x00")
        ([(True, b'h')], [], b'\\x88\\x00')
        >>> reader.done
        True
    """

    __slots__ = ("__weakref__", "_backlog", "_backlog_at", "_filled", "_guess", "_lent", "_masked", "_need",
                 "_pending", "_probe", "_sizes", "done", "max_size")

    def __init__(self, *, masked: bool, max_size: int | None = None) -> None:
        self._masked = masked
        self.max_size = max_size
        # The frame in progress: its first ``_filled`` bytes in ``_pending``; ``_need`` its whole size (0 while
        # its header is incomplete). A frame of up to FRAME_BUFFER bytes takes this thread's spare buffer of its
        # exact size if there is one, or a fresh one once the peer has sent a quarter of that frame (and may then
        # be received straight into it, :meth:`receive_buffer`); until then it grows as its bytes come, unless the
        # thread's readers hold less than LENT_BYTES of such buffers: frame headers alone, on however many
        # connections and whatever they sent before, never make a thread allocate more than that. (Bytes of
        # earlier frames earn nothing: they are gone, and a buffer per connection would again follow headers.)
        self._pending = bytearray()
        self._filled = 0
        self._need = 0
        self._lent: weakref.WeakSet[FrameReader] | None = None  # the set this reader is in while it holds a loan
        # Frames still read one at a time (read_limit): 2 after a large frame, one less after each small one.
        self._probe = 0
        # Whole sizes of the last two frames that ended in a frame buffer (the older first), and the spare buffer
        # lent for the next frame on that guess (next_frame_buffer): writes of one size come as a repeating pattern
        # of frames (1.5 MiB writes: 1 MiB then a 512 KiB tail), so the frame before the last predicts the next.
        self._sizes = (0, 0)
        self._guess: bytearray | None = None
        # Bytes read and not split yet, from _backlog_at on: a feed stopped at its max_messages (see there). An
        # offset, not a copy of the rest per split: split a few messages at a time, a read cost its size squared.
        self._backlog = b""
        self._backlog_at = 0
        self.done = False

    def feed(self, data: bytes | memoryview, max_messages: int = _ANY_COUNT) -> tuple[list[tuple[bool, bytes]],
                                                                                   list[bytes], bytes | None]:
        """Split ``data`` (see the class docstring). ``data`` may be a view of a buffer the caller reuses: all
        that is kept or returned is copied out of it.

        At most ``max_messages`` data messages are split off (at least one, if one is complete): the bytes after
        the last are kept unsplit (:attr:`backlog`) and go before the next ``data`` (``b""`` splits them alone).
        Why: one read of tiny frames is a flood of message objects, some 20 times its bytes in memory, before
        the reader can stop reading its socket.

        Example:
            >>> reader = FrameReader(masked=False)
            >>> reader.feed(b"\\x82\\x01a\\x82\\x01b\\x82\\x01c", max_messages=2)
            ([(False, b'a'), (False, b'b')], [], None)
            >>> reader.backlog
            3
            >>> reader.feed(b"")
            ([(False, b'c')], [], None)
        """
        if self.done:
            raise RuntimeError("FrameReader was handed over; feed the rest to websockets")
        backlog = self._backlog
        start = 0
        if backlog:
            self._backlog = b""
            if len(data):  # (bytes read while a backlog waits: our connections do not read then)
                data = backlog[self._backlog_at :] + data
            else:
                data = backlog
                start = self._backlog_at
            self._backlog_at = 0
        messages: list[tuple[bool, bytes]] = []
        control: list[bytes] = []
        offset = start
        size = len(data)
        if self._filled:
            # Complete the frame in progress, copying from ``data`` only what it still needs.
            pending = self._pending
            if not self._need:  # its header is incomplete (under 14 bytes): probe with what ``data`` adds
                filled = self._filled
                probe = bytes(pending[:filled]) + bytes(data[: 14 - filled])
                need = self._frame_size(probe, 0)
                if need < 0:
                    return self._handover(messages, control, bytes(pending[:filled]) + data)
                if need == 0:  # ``data`` ran out before the header's end
                    self._pending = bytearray(probe)
                    self._filled = len(probe)
                    return messages, control, None
                self._start(pending[:filled], need)
            offset = min(self._need - self._filled, size)
            complete = self._add(memoryview(data)[:offset])
            if not complete:
                return messages, control, None
            self._take_pending(messages, control)
        masked = self._masked
        mask_bit = 0x80 if masked else 0
        max_size = self.max_size if self.max_size is not None else _ANY_SIZE
        append = messages.append
        with memoryview(data) as view:
            # Frames are split up to ``stop``, which at most ``max_messages`` of the shortest frames fit before:
            # no count per frame on the hot path, a look at the count only when ``stop`` is reached.
            least = 6 if masked else 2
            left = max_messages - len(messages)
            stop = size if left >= size else min(size, offset + max(0, left) * least)
            while True:
                while offset < stop:
                    # The common frame inline: a complete text or binary frame with FIN, no reserved bits, the
                    # expected mask bit and within max_size, whose whole header (at most 14 bytes) is here. For a
                    # small frame the two method calls of the general path below cost more than the frame itself.
                    if size - offset >= 14:
                        b0 = data[offset]
                        b1 = data[offset + 1]
                        if (b0 == 0x82 or b0 == 0x81) and b1 & 0x80 == mask_bit:
                            length = b1 & 0x7F
                            if length < 126:
                                at = offset + 2
                            elif length == 126:
                                length = _UNPACK_H(data, offset + 2)[0]
                                at = offset + 4
                            else:
                                length = _UNPACK_Q(data, offset + 2)[0]
                                at = offset + 10
                            if masked:
                                end = at + 4 + length
                                if length <= max_size and end <= size:
                                    append((b0 == 0x81, apply_mask(view[at + 4 : end], bytes(view[at : at + 4]))))
                                    offset = end
                                    if self._probe:
                                        self._probe -= 1
                                    continue
                            else:
                                end = at + length
                                if length <= max_size and end <= size:
                                    append((b0 == 0x81, bytes(view[at:end])))
                                    offset = end
                                    if self._probe:
                                        self._probe -= 1
                                    continue
                    # Everything else: control frames, a frame to hand over, an incomplete one.
                    need = self._frame_size(data, offset)
                    if need < 0:
                        return self._handover(messages, control, data[offset:])
                    if need == 0 or size - offset < need:
                        self._start(view[offset:], need)
                        offset = size  # kept whole
                        break
                    offset = self._take(data, offset, need, messages, control)
                    if self._probe:
                        self._probe -= 1
                if offset >= size:
                    break
                left = max_messages - len(messages)
                if left <= 0:
                    if data is backlog:
                        self._backlog, self._backlog_at = backlog, offset
                    else:
                        self._backlog = bytes(view[offset:])
                    break
                stop = min(size, offset + left * least)
        return messages, control, None

    @property
    def backlog(self) -> int:
        """Bytes read and not split yet (:meth:`feed`'s ``max_messages``)."""
        return len(self._backlog) - self._backlog_at

    def read_limit(self) -> int:
        """How many bytes the next read into the receive buffer should take at most (0: as many as there are).

        While large frames flow (one of the last two was large), reads stop at frame boundaries: a frame's header
        alone (the longest header of this direction, so nothing of a large payload), then the rest of a small frame.
        A large frame's payload then always goes straight into its own buffer (:meth:`receive_buffer`), where a
        read past the previous frame's end would land it in the receive buffer and :meth:`feed` would copy it
        over: one or two small reads per large frame instead of a copy of most of it. A run of small frames goes
        back to reading as much as there is."""
        if not self._probe:
            return 0
        if not self._filled:
            return 14 if self._masked else 10
        return self._need - self._filled if self._need else 0

    def receive_buffer(self) -> memoryview | None:
        """Where the next bytes may be received straight into: the rest of a large frame in progress (of at least
        :data:`FLUSH_BYTES`, in a buffer of its exact size), saving the copy :meth:`feed` would make; ``None``
        otherwise. Report what was written there with :meth:`received`. Its tail too, however short: a read past
        it would land the next frame's start in the receive buffer, to be copied (see :meth:`read_limit`)."""
        need = self._need
        filled = self._filled
        if need < FLUSH_BYTES:
            return None
        if len(self._pending) != need:  # growing with its bytes (no spare of its size was left)
            if need > FRAME_BUFFER or 4 * filled < need:  # not yet a quarter of this frame
                return None
            exact = bytearray(need)
            exact[:filled] = self._pending
            self._pending = exact
        return memoryview(self._pending)[filled:]

    def received(self, nbytes: int, max_messages: int = _ANY_COUNT) -> tuple[list[tuple[bool, bytes]], list[bytes],
                                                                          bytes | None]:
        """``nbytes`` were written into the view :meth:`receive_buffer` or :meth:`next_frame_buffer` gave: what
        :meth:`feed` would return."""
        guess = self._guess
        if guess is not None:
            self._guess = None
            return self._received_guess(guess, nbytes, max_messages)
        messages: list[tuple[bool, bytes]] = []
        control: list[bytes] = []
        self._filled += nbytes
        if self._filled == self._need:
            self._take_pending(messages, control)
        return messages, control, None

    def next_frame_buffer(self) -> memoryview | None:
        """Between frames while large ones flow: this thread's spare buffer of the size the next frame is likely
        to have (that of the frame before the last), so that its header and payload come in one read straight
        into it, instead of a read of the header alone first (:meth:`read_limit`): one system call and one
        event-loop turn less per frame. Report what was written there with :meth:`received`. ``None`` in a frame,
        after small frames, or when there is no such spare (never allocated for a guess).

        Example:
            >>> FrameReader(masked=False).next_frame_buffer() is None  # no large frame came yet
            True
        """
        if self._filled or not self._probe or self._backlog:
            return None
        guess = self._guess
        if guess is None:
            size = self._sizes[0]
            if size < GUESS_MIN_BYTES:
                return None
            guess = self._guess = _spare_of(size)
            if guess is None:
                return None
        return memoryview(guess)

    def _received_guess(self, guess: bytearray, nbytes: int,
                        max_messages: int) -> tuple[list[tuple[bool, bytes]], list[bytes], bytes | None]:
        """``nbytes`` were read into the guessed buffer: the start of a frame of exactly its size keeps it as its
        frame buffer; anything else is split like any read (:meth:`feed` copies out what it keeps), and the
        buffer goes back to the spares."""
        with memoryview(guess) as whole, whole[:nbytes] as view:
            need = self._frame_size(view, 0)
        if need == len(guess):
            self._pending = guess
            self._filled = 0
            self._need = need
            return self.received(nbytes)
        try:
            with memoryview(guess) as whole, whole[:nbytes] as view:
                return self.feed(view, max_messages)
        finally:
            _keep_spare(guess)

    def _drop_guess(self) -> None:
        if self._guess is not None:
            _keep_spare(self._guess)
            self._guess = None

    def _start(self, head: bytes | bytearray | memoryview, need: int) -> None:
        """Keep ``head``, the start of a frame of ``need`` bytes (0: its size is not known yet)."""
        if 0 < need <= FRAME_BUFFER:
            # Large frames mostly come one size after another: a buffer this thread's readers finished with serves
            # the next frame of its size (no allocation, no zeroing, no fresh pages).
            spare = _spare_of(need)
            if spare is not None:
                self._pending = spare
                spare[: len(head)] = head
            elif 4 * len(head) >= need or self._lend(need):
                self._pending = bytearray(need)
                self._pending[: len(head)] = head
            else:  # a fresh 1 MiB for a 14-byte header, times the connections a peer holds open: not yet
                self._pending = bytearray(head)
        else:
            self._pending = bytearray(head)
        self._filled = len(head)
        self._need = need

    def _add(self, chunk: memoryview) -> bool:
        """Append ``chunk`` to the frame in progress; whether the frame is complete."""
        filled = self._filled
        self._pending[filled : filled + len(chunk)] = chunk  # past its end, this appends
        self._filled = filled + len(chunk)
        return self._filled == self._need

    def _lend(self, need: int) -> bool:
        """Whether this thread's readers may hold another ``need`` bytes of buffers their peers have not earned
        (:data:`LENT_BYTES`); if so this reader is counted until its frame ends (or it is collected)."""
        readers: weakref.WeakSet[FrameReader] | None = getattr(_LENT, "readers", None)
        if readers is None:
            readers = _LENT.readers = weakref.WeakSet()
        if sum(reader._need for reader in readers) + need > LENT_BYTES:
            return False
        readers.add(self)
        self._lent = readers
        return True

    def _repay(self) -> None:
        if self._lent is not None:
            self._lent.discard(self)
            self._lent = None

    def _take_pending(self, messages: list[tuple[bool, bytes]], control: list[bytes]) -> None:
        self._repay()
        pending = self._pending
        self._take(pending, 0, self._need, messages, control)  # copies the payload out
        self._probe = 2 if self._need >= FLUSH_BYTES else max(0, self._probe - 1)
        self._sizes = (self._sizes[1], self._need)
        _keep_spare(pending)
        self._pending = bytearray()
        self._filled = self._need = 0

    def _handover(self, messages: list[tuple[bool, bytes]], control: list[bytes],
                  rest: bytes | memoryview) -> tuple[list[tuple[bool, bytes]], list[bytes], bytes | None]:
        self.done = True
        self._repay()
        self._drop_guess()
        self._pending = bytearray()
        self._filled = self._need = 0
        return messages, control, bytes(rest)

    def _frame_size(self, buf: bytes | bytearray | memoryview, at: int) -> int:
        """Total size of the frame starting at ``at``; 0 when its header is incomplete; -1 when this reader does
        not handle it (the caller hands over)."""
        avail = len(buf) - at
        if avail < 2:
            return 0
        b0 = buf[at]
        b1 = buf[at + 1]
        if b0 & 0x70 or bool(b1 & 0x80) is not self._masked:
            return -1
        opcode = b0 & 0x0F
        if not b0 & 0x80 or opcode not in (1, 2, 9, 10):
            return -1  # fragments, Close, reserved opcodes
        length = b1 & 0x7F
        head = 6 if self._masked else 2
        if length == 126:
            if avail < 4:
                return 0
            length = _UNPACK_H(buf, at + 2)[0]
            head += 2
        elif length == 127:
            if avail < 10:
                return 0
            length = _UNPACK_Q(buf, at + 2)[0]
            head += 8
        if opcode > 2 and length > 125:
            return -1
        if self.max_size is not None and length > self.max_size:
            return -1
        if avail < head:
            return 0
        return head + length

    def _take(self, buf: bytes | bytearray | memoryview, at: int, size: int, messages: list[tuple[bool, bytes]],
              control: list[bytes]) -> int:
        """Consume the complete frame of ``size`` bytes (from :meth:`_frame_size`) at ``at``; its end offset."""
        end = at + size
        opcode = buf[at] & 0x0F
        if opcode > 2:
            control.append(bytes(buf[at:end]))
            return end
        length_code = buf[at + 1] & 0x7F
        head = at + 2 + (2 if length_code == 126 else 8 if length_code == 127 else 0)
        payload: bytes
        if self._masked:
            with memoryview(buf) as view:
                payload = apply_mask(view[head + 4 : end], bytes(view[head : head + 4]))
        else:
            with memoryview(buf) as view:
                payload = bytes(view[head:end])
        messages.append((opcode == 1, payload))
        return end


ALLOCATOR_TUNING: Final = (4 * 1024 * 1024, 8 * 1024 * 1024)
"""(mmap threshold, trim threshold) set with glibc's ``mallopt`` when the first fast channel socket opens.

A channel socket allocates and frees a 64 KiB payload per frame. With glibc's defaults the freed top of the heap
goes back to the system whenever more than a few hundred KiB are free there, and the next payloads fault the
same pages in again: measured, 13 page faults and ~20 us of CPU per 64 KiB frame, as much as everything else the
relay does per frame. Keeping up to 8 MiB free at the top (and allocations below 4 MiB on the heap, since setting
one threshold freezes glibc's dynamic mmap threshold at 128 KiB) removes that. Not done when the process set its
own ``MALLOC_*_`` tunables, or with ``III_MALLOC_TUNING=0``."""

_MALLOPT_TRIM_THRESHOLD: Final = -1  # M_TRIM_THRESHOLD in glibc's malloc.h
_MALLOPT_MMAP_THRESHOLD: Final = -3  # M_MMAP_THRESHOLD
_OWN_TUNABLES: Final = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")

ALLOCATOR_STATE: str | None = None
"""What :func:`tune_allocator` did in this process: ``"tuned"``, why not, or ``None`` before the first fast
channel socket."""


def tune_allocator(environ: Mapping[str, str] = os.environ, libc: Any = None, *,
                   mmap_threshold: int = ALLOCATOR_TUNING[0]) -> str:
    """Set :data:`ALLOCATOR_TUNING` on glibc (see there); returns ``"tuned"`` or why not. ``libc``: for tests;
    ``mmap_threshold``: for a process that pins its own (the engine keeps large frames returnable).

    Example:
        >>> tune_allocator({"III_MALLOC_TUNING": "0"})
        'off: III_MALLOC_TUNING=0'
    """
    if environ.get("III_MALLOC_TUNING") == "0":
        return "off: III_MALLOC_TUNING=0"
    own = [name for name in _OWN_TUNABLES if name in environ]
    if own:
        return f"off: the process sets {own[0]}"
    if libc is None:
        try:  # cheaper than platform.libc_ver(), which scans the interpreter's binary
            glibc = os.confstr("CS_GNU_LIBC_VERSION") or ""
        except (AttributeError, ValueError, OSError):  # not a glibc (or not a POSIX) system
            glibc = ""
        if not glibc.startswith("glibc"):
            return "off: not glibc"
        import ctypes  # only here: most processes never open a channel socket

        try:
            libc = ctypes.CDLL(None)
        except OSError:  # pragma: no cover - no C library to load
            return "off: no libc"
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:  # pragma: no cover - a libc without mallopt
        return "off: no mallopt"
    trim_threshold = ALLOCATOR_TUNING[1]
    if mallopt(_MALLOPT_MMAP_THRESHOLD, mmap_threshold) != 1 or mallopt(_MALLOPT_TRIM_THRESHOLD, trim_threshold) != 1:
        return "off: mallopt refused"
    return "tuned"


def _tune_allocator_once() -> None:
    global ALLOCATOR_STATE
    if ALLOCATOR_STATE is None:
        ALLOCATOR_STATE = tune_allocator()
        if ALLOCATOR_STATE != "tuned":
            _fallback(f"allocator not tuned ({ALLOCATOR_STATE})")


RECEIVE_CHUNK: Final = (64 * 1024, 1024 * 1024)
"""(first, largest) size of the receive buffer fast connections read into: it starts small and doubles while
reads fill it, so a busy socket reads up to 1 MiB per system call."""

_RECEIVE = threading.local()
"""The receive buffer of this thread's fast connections (``view``): one per thread, not one per connection,
since a transport reads into it and hands the bytes over in one callback (``get_buffer``, ``recv_into``,
``buffer_updated``) and :meth:`_FastReceive._feed` copies out all it keeps. 10,000 sockets cost one buffer."""


def _receive_view() -> memoryview:
    view: memoryview | None = getattr(_RECEIVE, "view", None)
    if view is None:
        view = _RECEIVE.view = memoryview(bytearray(RECEIVE_CHUNK[0]))
    return view


class _BufferedFeed(asyncio.BufferedProtocol):
    """Stands in as the transport's protocol while a connection is on its fast path: the transport reads into the
    thread's reused buffer (``recv_into``) instead of a new bytes object per read, and the frames are split
    straight out of it (all that is kept is copied out). Everything else goes to the connection itself; at a
    handover the connection takes the transport back (``set_protocol``, a public transport method)."""

    __slots__ = ("_conn", "_direct", "_frames")

    def __init__(self, conn: _FastReceive, frames: FrameReader | None = None) -> None:
        self._conn = conn
        self._frames = frames  # the connection's reader, whose large frames are read into their own buffers
        self._direct = False

    def get_buffer(self, sizehint: int) -> memoryview:
        # The rest of a large frame in progress is read straight into that frame's own buffer: one copy less
        # than reading it here and moving it there.
        frames = self._frames
        if frames is None:
            return _receive_view()
        direct = frames.receive_buffer()
        if direct is None:
            direct = frames.next_frame_buffer()
        self._direct = direct is not None
        if direct is not None:
            return direct
        limit = frames.read_limit()
        return _receive_view()[:limit] if limit else _receive_view()

    def buffer_updated(self, nbytes: int) -> None:
        if self._direct:
            self._direct = False
            self._conn._feed_direct(nbytes)
            return
        view = _receive_view()
        if nbytes == len(view) and nbytes < RECEIVE_CHUNK[1]:  # the read filled it: more is waiting
            _RECEIVE.view = memoryview(bytearray(2 * nbytes))
        self._conn._feed(view[:nbytes])

    def eof_received(self) -> bool | None:
        return self._conn.eof_received()  # type: ignore[attr-defined,no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        self._conn.connection_lost(exc)

    def pause_writing(self) -> None:
        self._conn.pause_writing()  # type: ignore[attr-defined]

    def resume_writing(self) -> None:
        self._conn.resume_writing()  # type: ignore[attr-defined]


_BUFFERED: Final = hasattr(asyncio, "BufferedProtocol")
"""Whether fast connections read into a reused buffer (:class:`_BufferedFeed`)."""


# Phases of a fast connection: reading the HTTP head; head read, the server not decided yet; the server chose the
# fast path and waits for its 101 to go out; fast; everything to websockets.
_HANDSHAKE, _OPENING, _PENDING, _FAST, _OFF = range(5)


class _Corked:
    """Mixin for a websockets ``Connection``: the one batching of frames written in one event-loop turn, for
    channel sockets and the SDK's control socket alike. Frames are corked and leave in one transport write at the
    end of the turn (or at :data:`FLUSH_BYTES`), always before anything websockets writes itself (pongs, Close)."""

    transport: asyncio.Transport
    _out: list[bytes]
    _out_bytes: int
    _flush: asyncio.Handle | None
    _unjoined_flush = True
    """Whether corked frames of :data:`SENDMSG_BYTES` or more leave unjoined, in one ``sendmsg`` (channel sockets;
    :meth:`flush_out`, :meth:`_send_with_corked`)."""

    def _cork_setup(self) -> None:
        self._out = []
        self._out_bytes = 0
        self._flush = None

    def cork_frame(self, frame: bytes, hold: bool = False) -> None:
        """:meth:`cork` for a frame in one piece, the control socket's per-call path: it goes out at once when
        nothing is corked and ``hold`` is false (joining it would only add a copy); ``hold``: more frames are likely
        in this turn, so it waits for them."""
        out = self._out
        if out or hold:
            size = len(frame)
            if size < FLUSH_BYTES:
                if not out:  # nothing corked, so no flush is due yet
                    self._flush = asyncio.get_running_loop().call_soon(self.flush_out)
                out.append(frame)
                self._out_bytes = size = self._out_bytes + size
                if size >= FLUSH_BYTES:
                    self.flush_out()
                return
            self.flush_out()
            if self.transport.is_closing():
                return
        self.transport.write(frame)

    def cork(self, parts: tuple[bytes, ...]) -> None:
        """Queue frame bytes for one joined write at the end of this event-loop turn (a frame in one piece: see
        :meth:`cork_frame`). A part of :data:`FLUSH_BYTES` or more (a large frame's payload) is written by itself,
        after what was corked before it: joining it would copy it once more."""
        if len(parts) == 1:
            self.cork_frame(parts[0])
            return
        out = self._out
        for part in parts:
            if len(part) >= FLUSH_BYTES:
                if out and self._send_with_corked(part):
                    continue
                self.flush_out()
                if not self.transport.is_closing():
                    self.transport.write(memoryview(part))  # a partial send's rest is then copied once, not twice
                continue
            out.append(part)
            self._out_bytes += len(part)
        if not out:
            return
        if self._out_bytes >= FLUSH_BYTES:
            self.flush_out()
        elif self._flush is None:
            self._flush = asyncio.get_running_loop().call_soon(self.flush_out)

    def _send_with_corked(self, *parts: bytes) -> bool:
        """Send what is corked and then ``parts`` (a large frame's header and payload, or the start of it) in one
        ``sendmsg``, when the transport holds nothing (its own ``write`` would then send at once as well); what the
        socket does not take goes to the transport as views, in order. False (nothing done) when the transport is
        not a plain socket one with an empty buffer. Why: written apart, the header leaves in a system call and a
        TCP segment of its own, and the peer wakes up to read it alone. Corked frames go unjoined from
        :data:`SENDMSG_BYTES` on."""
        sock = self._idle_socket()
        if sock is None:
            return False
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        out = self._out
        if len(out) > 1 and not self._goes_unjoined(len(out) + len(parts)):
            corked = [b"".join(out)]  # small frames: joined (see SENDMSG_BYTES)
        else:
            corked = out[:]
        out.clear()
        self._out_bytes = 0
        self._sendmsg(sock, [*corked, *parts])
        return True

    def _goes_unjoined(self, parts: int) -> bool:
        """Whether the corked frames, sent with ``parts`` parts in all, leave as those parts in one ``sendmsg``: large
        frames only (see :data:`SENDMSG_BYTES`). Many small frames adding up to as much are joined: the kernel's walk
        of 500 parts of 300 bytes cost more than the copy (41 against 31 µs)."""
        total = self._out_bytes
        return (self._unjoined_flush and total >= SENDMSG_BYTES and parts <= _SENDMSG_PARTS
                and total >= len(self._out) * _UNJOINED_PART_BYTES)

    def send_now(self, parts: tuple[bytes, ...] | list[bytes]) -> bool:
        """Send ``parts`` (whole frames) in one ``sendmsg`` now, when nothing is corked and the transport holds
        nothing; what the socket does not take goes to the transport as views, in order. False (nothing done)
        otherwise: cork them. Why: corked, a frame costs an event-loop callback and a join (a copy of its payload)
        at the end of the turn; the relay's frames already come in batches (one per read)."""
        if self._out:
            return False
        sock = self._idle_socket()
        if sock is None:
            return False
        self._sendmsg(sock, parts)
        return True

    def _idle_socket(self) -> socket.socket | None:
        """The transport's socket when it is a plain one with an empty buffer (its own ``write`` would send at once
        too); ``None`` otherwise."""
        transport = self.transport
        sock = getattr(transport, "_sock", None)  # asyncio's selector transports; TLS and other loops: none
        if (not isinstance(sock, socket.socket) or transport.is_closing()
                or transport.get_write_buffer_size()):
            return None
        return sock

    def _sendmsg(self, sock: socket.socket, parts: tuple[bytes, ...] | list[bytes]) -> None:
        transport = self.transport
        try:
            sent = sock.sendmsg(parts)
        except OSError:  # full (BlockingIOError) or failed: the transport's write meets the same and handles it
            sent = 0
        for piece in parts:
            if sent >= len(piece):
                sent -= len(piece)
                continue
            if transport.is_closing():  # the write before failed the connection
                break
            transport.write(memoryview(piece)[sent:])
            sent = 0

    def flush_out(self) -> None:
        """Write the corked frames. They were corked while the connection was open, so they precede any Close
        frame: websockets writes its own frames through :meth:`send_data`, which flushes first."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        out = self._out
        if not out:
            return
        if self._goes_unjoined(len(out)):
            sock = self._idle_socket()
            if sock is not None:  # large frames (64 KiB ones of a writer not invited to send larger): unjoined
                parts = out[:]
                out.clear()
                self._out_bytes = 0
                self._sendmsg(sock, parts)
                return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self._out_bytes = 0
        if not self.transport.is_closing():
            self.transport.write(memoryview(data))  # a partial send's rest is then copied once, not twice

    def send_data(self) -> None:
        # Whatever websockets writes itself (pongs, Close frames) goes after the frames corked before it.
        self.flush_out()
        super().send_data()  # type: ignore[misc]


class _FastReceive(_Corked):
    """Mixin for a websockets ``Connection``: data messages of a channel socket go through :class:`FrameReader`
    into a bounded inbox; everything else through websockets (see the module docstring)."""

    # Set by Connection; declared for the type checker.
    protocol: Any
    recv_messages: Any
    _phase: int
    _head_tail: bytes
    _frames: FrameReader | None
    _inbox: deque[tuple[bool, bytes]]
    _inbox_bytes: int
    _high: int
    _paused: bool
    _signal: Signal
    _buffered: bool
    _deferred: bytes | None
    _splitting: bool
    close_guard: Callable[[deque[tuple[bool, bytes]]], bool] | None = None
    """Set by the relay (:func:`guard_close`): whether the unread messages hold one it will refuse."""
    take_now: Callable[[deque[tuple[bool, bytes]]], bool] | None = None
    """Set by the relay (:func:`take_on_arrival`): called with the unread messages as soon as data messages
    arrive, from the transport's callback; it takes what it may with :meth:`take_ready` and returns whether it
    took any. Whatever is left wakes the reader of :meth:`receive_message` / :meth:`wait_ready`, as always."""

    def _fast_setup(self, phase: int) -> None:
        self._phase = phase
        self._head_tail = b""
        self._frames = None
        self._inbox = deque()
        self._inbox_bytes = 0
        self._high = DEFAULT_RECEIVE_BUFFER
        self._paused = False
        self._signal = Signal()
        self._cork_setup()
        self._buffered = False
        self._deferred = None
        self._splitting = False

    def send_data(self) -> None:
        super().send_data()
        if self._deferred is not None and self.protocol.state is not State.OPEN:
            # We sent our Close first (the relay refusing a writer): now websockets may see the peer's, which
            # completes the closing handshake. Not from inside websockets' own write.
            asyncio.get_running_loop().call_soon(self._flush_deferred)

    def _super_data(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        phase = self._phase
        if phase == _FAST:
            self._feed(data)
        elif phase == _OFF:
            if self._deferred is not None:
                self._deferred += data
            else:
                self._super_data(data)
        elif phase == _PENDING and self.protocol.state is State.OPEN:
            # Server side: the first bytes after our 101 response.
            self._start()
            self._feed(data)
        elif phase != _HANDSHAKE:
            # A server connection not chosen for the fast path, or a client that pipelined frames before our
            # response: websockets reads it all.
            self._phase = _OFF
            self._super_data(data)
        else:
            self._handshake_data(data)

    def _handshake_data(self, data: bytes) -> None:
        # Feed websockets the HTTP head only; bytes after it (frames that came in the same segment as the
        # response) are kept for the fast path.
        window = self._head_tail + data
        end = window.find(b"\r\n\r\n")
        if end < 0:
            self._head_tail = window[-3:]
            self._super_data(data)
            return
        split = end + 4 - len(self._head_tail)
        self._head_tail = b""
        self._super_data(data[:split])
        rest = data[split:]
        if isinstance(self, ServerConnection):
            # The server decides in process_request (enable_fast_receive) and opens once its response is sent.
            self._phase = _OFF if rest else _OPENING
            if rest:
                self._super_data(rest)
            return
        if self.protocol.state is State.OPEN:
            self._start()
            if rest:
                self._feed(rest)
        else:
            self._phase = _OFF
            if rest:
                self._super_data(rest)

    _tunes_allocator = True
    """Whether the first fast socket tunes the allocator (:data:`ALLOCATOR_TUNING`): channel sockets move large
    payloads; the SDK's control socket, small frames, leaves the process's allocator as it is."""

    def _start(self) -> None:
        self._phase = _FAST
        if self._tunes_allocator:
            _tune_allocator_once()
        # The server checks client masks; a client expects none. Oversize messages go to websockets, which
        # closes with 1009 exactly as before.
        self._frames = FrameReader(masked=isinstance(self, ServerConnection),
                                   max_size=self.protocol.max_message_size)
        transport = self.transport
        if _BUFFERED and callable(getattr(transport, "set_protocol", None)):
            transport.set_protocol(_BufferedFeed(self, self._frames))
            self._buffered = True
        else:  # pragma: no cover - an event loop without buffered protocols
            _fallback("transport without set_protocol: buffered receive")

    def _unbuffer(self) -> None:
        """Give the transport back to the connection (reads come to :meth:`data_received` again)."""
        if self._buffered:
            self._buffered = False
            self.transport.set_protocol(self)  # type: ignore[arg-type]

    def _feed(self, data: bytes | memoryview) -> None:
        frames = self._frames
        assert frames is not None
        self._deliver(*frames.feed(data, self._room()))
        if frames.backlog:
            self._hold_backlog()

    def _feed_direct(self, nbytes: int) -> None:
        """``nbytes`` were read straight into the frame in progress (:meth:`FrameReader.receive_buffer`) or the
        next one (:meth:`FrameReader.next_frame_buffer`)."""
        frames = self._frames
        assert frames is not None
        self._deliver(*frames.received(nbytes, self._room()))
        if frames.backlog:
            self._hold_backlog()

    def _charge(self) -> int:
        """What the unread messages count against the receive buffer (:data:`MESSAGE_CHARGE`)."""
        return self._inbox_bytes + len(self._inbox) * MESSAGE_CHARGE

    def _room(self) -> int:
        """How many messages the next split may add before the unread ones count past the receive buffer (at least
        :data:`SPLIT_MIN_MESSAGES`): a read of up to 1 MiB of empty frames would otherwise be ~175,000 messages,
        ~20 MB, at once."""
        return max(SPLIT_MIN_MESSAGES, (self._high - self._charge()) // MESSAGE_CHARGE)

    def _hold_backlog(self) -> None:
        """The last read was not split whole (:attr:`FrameReader.backlog`): no more reads until it is; the rest is
        split as soon as the unread messages are down to a quarter of the buffer, as a read would resume."""
        if not self._paused:
            self._paused = True
            self.transport.pause_reading()
        if self._charge() <= self._high // 4 and not self._splitting:
            self._splitting = True
            asyncio.get_running_loop().call_soon(self._split_backlog)

    def _unsplit(self) -> FrameReader | None:
        """The reader, while the rest of a read waits in it unsplit (:attr:`FrameReader.backlog`)."""
        frames = self._frames
        return frames if frames is not None and frames.backlog and self._phase == _FAST else None

    def _split_backlog(self) -> None:
        self._splitting = False
        frames = self._unsplit()
        if frames is None:
            return  # split by the connection's loss, or never to be: it was handed over
        self._deliver(*frames.feed(b"", self._room()))
        self._read_on()

    def _read_on(self) -> None:
        """Once the unread messages are down to a quarter of the buffer: the rest of the last read first, then the
        socket."""
        if self._paused and self._charge() <= self._high // 4:
            if self._unsplit() is not None:
                self._hold_backlog()
            else:
                self._resume()

    def _resume(self) -> None:
        self._paused = False
        # Not while websockets holds the socket paused itself, nor while a Close waits for the messages before it
        # (_flush_deferred reads on): read on, everything the peer sent after its Close piled up in _deferred,
        # without bound (86 MB in 8 s from a writer that kept sending).
        if not self.recv_messages.paused and self._deferred is None:
            self.transport.resume_reading()

    def _deliver(self, messages: list[tuple[bool, bytes]], control: list[bytes], rest: bytes | None) -> None:
        if messages:
            inbox = self._inbox
            for message in messages:
                inbox.append(message)
                self._inbox_bytes += len(message[1])
            take = self.take_now
            # The relay takes what it can right here (no task switch per message); the reader of
            # receive_message is woken only for what is left.
            if take is None or not take(inbox) or inbox:
                if self._charge() > self._high and not self._paused:
                    self._paused = True
                    self.transport.pause_reading()
                self._signal.set()
        for frame in control:
            self._super_data(frame)
        if rest is not None:
            self._phase = _OFF
            self._unbuffer()
            guard = self.close_guard
            if (self._inbox and rest[0] & 0x0F == Opcode.CLOSE.value and self.protocol.state is State.OPEN
                    and guard is not None and guard(self._inbox)):
                # The relay will refuse one of the messages before the peer's Close (over the writer's quota, too
                # big, not UTF-8): the Close waits until they were read or we close first, since websockets would
                # answer it at once and the writer would hear 1000 instead of 1009. The socket is not read
                # meanwhile. Any other Close is answered at once, as websockets does (a writer that closes while
                # the channel's queue is full must not wait for its reader).
                self._deferred = rest
                self.transport.pause_reading()
            else:
                self._super_data(rest)
            self._signal.set()

    def _flush_deferred(self) -> None:
        """Hand a deferred Close (and anything after it) to websockets."""
        deferred = self._deferred
        if deferred is None:
            return
        self._deferred = None
        self._super_data(deferred)
        if not self._paused and not self.recv_messages.paused:
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        frames = self._unsplit()
        if frames is not None:
            self._deliver(*frames.feed(b""))  # read before the loss: the reader gets it, as it gets the inbox
        self._flush_deferred()  # websockets learns of the peer's Close before the connection is gone
        super().connection_lost(exc)  # type: ignore[misc]
        self._phase = _OFF
        self._buffered = False
        self._signal.set()

    def _taken(self, size: int) -> None:
        """``size`` payload bytes left the inbox: read the socket again once it is down to a quarter."""
        self._inbox_bytes -= size
        self._read_on()

    def take_ready(self, max_count: int, max_bytes: int) -> list[tuple[bool, bytes]]:
        """Data messages already received, without waiting: at most ``max_count``, taken while fewer than
        ``max_bytes`` payload bytes are taken (the last may go past it). Empty when none is ready."""
        inbox = self._inbox
        if not inbox:
            return []
        taken: list[tuple[bool, bytes]] = []
        size = 0
        while inbox and len(taken) < max_count and size < max_bytes:
            message = inbox.popleft()
            size += len(message[1])
            taken.append(message)
        self._taken(size)
        return taken

    async def receive_message(self) -> tuple[bool, bytes]:
        """The next data message as ``(is_text, payload)``; raises websockets' ``ConnectionClosed`` at the end."""
        while True:
            inbox = self._inbox
            if inbox:
                message = inbox.popleft()
                self._taken(len(message[1]))
                return message
            if self._deferred is not None:
                # Every message before the peer's Close was read and handled (the reader asks for more).
                self._flush_deferred()
            if self._phase == _OFF:
                data = await super().recv()  # type: ignore[misc]
                return (True, data.encode()) if isinstance(data, str) else (False, data)
            await self._signal.wait()

    async def wait_ready(self) -> bool:
        """Wait, taking nothing, until :meth:`take_ready` has messages (``False``) or, with none unread,
        :meth:`receive_message` has something else to do: the peer's Close, the public API after a handover
        (``True``)."""
        while not self._inbox:
            if self._deferred is not None or self._phase == _OFF:
                return True
            await self._signal.wait()
        return False

    async def next_arrival(self) -> bool:
        """Wait for the next delivery (:attr:`take_now` declined, messages left, the peer's Close, a handover) unless
        :meth:`receive_message` has something at once; then whether it has. Why not :meth:`wait_ready`: a reader
        whose :attr:`take_now` takes every message is woken for what that callback hands it apart from the inbox."""
        if not (self._inbox or self._deferred is not None or self._phase == _OFF):
            await self._signal.wait()
        return bool(self._inbox) or self._deferred is not None or self._phase == _OFF

    def unread_bytes(self) -> int:
        """Payload bytes received and not read yet (the inbox, the bytes of a read not split yet, websockets'
        queue)."""
        queue = self.recv_messages.frames.queue
        frames = self._frames
        backlog = frames.backlog if frames is not None else 0
        return self._inbox_bytes + backlog + (sum(len(frame.data) for frame in queue) if queue else 0)

    def set_receive_buffer(self, size: int) -> None:
        """Stop reading the socket while more than ``size`` bytes of messages are unread (each counted as its
        payload plus :data:`MESSAGE_CHARGE`)."""
        self._high = max(1, size)


class FastClientConnection(_FastReceive, ClientConnection):
    """A client connection for channel sockets: fast data path from the first frame after the handshake."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fast_setup(_HANDSHAKE)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's TLS transport pauses writing at ``>= high`` bytes: a high mark of 0 (CLIENT_WRITE_BUFFER) pauses
        # it with nothing buffered, and a send may wait in drain for good. Over TLS (a wss:// URL, or a ws:// one
        # through an https:// proxy, which the URL does not show) the socket keeps WRITE_BUFFER.
        if not self.write_limit_high and transport.get_extra_info("sslcontext") is not None:
            self.write_limit_high, self.write_limit_low = WRITE_BUFFER
        super().connection_made(transport)


class FastSendingClientConnection(FastClientConnection):
    """:class:`FastClientConnection` for a socket that only sends data (a channel writer's): it receives control
    frames and no payloads, so it leaves the process's allocator as it is (:data:`ALLOCATOR_TUNING` is for
    received payloads; measured, a writer's CPU and page faults are the same with and without it, and the first
    tuning costs ~1 ms, most of it importing ``ctypes``)."""

    _tunes_allocator = False


class FastServerConnection(_FastReceive, ServerConnection):
    """A server connection whose fast data path is switched on per connection by :func:`enable_fast_receive`
    (the engine's listener serves workers and channels on one port; only channel sockets get it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fast_setup(_HANDSHAKE)


def client_factory(receives_data: bool = True) -> type[ClientConnection] | None:
    """The ``create_connection`` to pass to ``websockets.connect`` for a channel socket (``None``: default);
    ``receives_data``: false for a socket that only sends them (:class:`FastSendingClientConnection`)."""
    if AVAILABLE:
        return FastClientConnection if receives_data else FastSendingClientConnection
    _fallback("websockets internals missing: client receive")
    return None


def server_factory() -> type[ServerConnection] | None:
    """The ``create_connection`` to pass to ``websockets`` ``serve`` when channel sockets share the server."""
    return FastServerConnection if AVAILABLE else None


def enable_fast_receive(ws: ServerConnection, receive_buffer: int = DEFAULT_RECEIVE_BUFFER) -> bool:
    """From ``process_request``: use the fast data path on this accepted channel socket once it opens.

    Returns whether it will (``False`` on a plain connection or a websockets without the internals: the
    relay then reads with ``recv`` and bounds websockets' own frame queue instead).
    """
    if isinstance(ws, FastServerConnection):
        if ws._phase == _OPENING:
            ws._phase = _PENDING
            ws._high = max(1, receive_buffer)
            # A larger write buffer than websockets' 32 KiB default: with 64 KiB frames that default pauses the
            # sender at every frame (a task switch each); 1 MiB keeps the same bound per socket, 30x fewer.
            ws.transport.set_write_buffer_limits(*WRITE_BUFFER)
            return True
        return False
    _fallback("plain server connection: relay receive")
    return False


async def receive(ws: Connection) -> tuple[bool, bytes]:
    """The next data message of ``ws`` as ``(is_text, payload)``; raises ``ConnectionClosed`` at the end."""
    if isinstance(ws, _FastReceive):
        return await ws.receive_message()
    data = await ws.recv()
    return (True, data.encode()) if isinstance(data, str) else (False, data)


def receiver(ws: Connection) -> Callable[[], Any]:
    """The bound coroutine function :func:`receive` would call for ``ws`` (saves a call per message)."""
    if isinstance(ws, _FastReceive):
        return ws.receive_message
    return lambda: receive(ws)


def guard_close(ws: Connection, guard: Callable[[deque[tuple[bool, bytes]]], bool]) -> None:
    """Let a peer's Close that arrives behind unread messages wait while ``guard(unread)`` says one of them will be
    refused (see :meth:`_FastReceive._feed`); no-op without the fast receive path."""
    if isinstance(ws, _FastReceive):
        ws.close_guard = guard


def take_on_arrival(ws: Connection, take: Callable[[deque[tuple[bool, bytes]]], bool] | None) -> bool:
    """Have ``take(unread)`` called as soon as data messages arrive on ``ws``, in the transport's callback (see
    :attr:`_FastReceive.take_now`; ``None`` stops it). ``False`` (and nothing set) without the fast receive path.
    Why: the relay then queues a frame without a task switch per message (issue 10)."""
    if isinstance(ws, _FastReceive):
        ws.take_now = take
        return True
    return False


async def next_arrival(ws: Connection) -> bool:
    """Wait until ``ws`` delivers again, then whether :func:`receive` has something at once (see
    :meth:`_FastReceive.next_arrival`); ``True`` at once without the fast receive path.

    Example:
        >>> asyncio.run(next_arrival(object()))  # type: ignore[arg-type]  # not a fast connection
        True
    """
    if isinstance(ws, _FastReceive):
        return await ws.next_arrival()
    return True


async def wait_ready(ws: Connection) -> bool:
    """Wait until :func:`take_ready` has messages for ``ws`` (``False``) or :func:`receive` has something else to
    do (``True``; see :meth:`_FastReceive.wait_ready`); ``True`` at once without the fast receive path."""
    if isinstance(ws, _FastReceive):
        return await ws.wait_ready()
    return True


def take_ready(ws: Connection, max_count: int, max_bytes: int) -> list[tuple[bool, bytes]]:
    """Data messages ``ws`` already received, without waiting (see :meth:`_FastReceive.take_ready`); always empty
    without the fast receive path (then each message comes from :func:`receive`)."""
    if isinstance(ws, _FastReceive):
        return ws.take_ready(max_count, max_bytes)
    return []


def unread_bytes(ws: Connection) -> int:
    """Payload bytes ``ws`` received that nobody read yet."""
    if isinstance(ws, _FastReceive):
        return ws.unread_bytes()
    queue = getattr(getattr(getattr(ws, "recv_messages", None), "frames", None), "queue", None)
    return sum(len(frame.data) for frame in queue) if queue else 0


def bound_frame_queue(ws: Connection, high: int, low: int) -> bool:
    """Set websockets' own incoming frame queue marks (``high`` frames before it stops reading the socket).

    Used where the fast path is off; ``False`` when this websockets has no such queue.
    """
    frames = getattr(ws, "recv_messages", None)
    if frames is None or not hasattr(frames, "high"):
        _fallback("websockets internals missing: frame queue bound")
        return False
    frames.high, frames.low = high, low
    return True


def set_max_message_size(ws: Connection, size: int | None) -> None:
    """Set the largest message ``ws`` accepts after the handshake started (``serve`` sets one for all), in its fast
    reader too once that runs (a client's starts as the handshake ends)."""
    ws.protocol.max_message_size = size
    frames = getattr(ws, "_frames", None)
    if isinstance(frames, FrameReader):
        frames.max_size = size


def frame_queue_high(ws: Connection) -> int | None:
    """websockets' current frame queue high mark of ``ws`` (``None`` when unknown)."""
    frames = getattr(ws, "recv_messages", None)
    return getattr(frames, "high", None)


# ---------------------------------------------------------------------------------- the SDK's control socket


def queue_frame(ws: Connection, frame: str | bytes, *, hold: bool = False) -> bool:
    """Write one text (``str``) or binary frame without ``send``'s coroutine, through the connection's corking
    (:meth:`_Corked.cork_frame`; ``hold``: more frames are likely in this turn, so this one may wait for the end of
    the turn and leave with them in one write); False when ``websockets``' own ``send`` is needed (socket not open,
    a fragmented send in progress, flow control paused, or internals missing).

    ``websockets``' ``send`` is a coroutine around a context manager: for one small frame it costs more than the
    frame, and in exactly these conditions it would not suspend either.
    """
    if not AVAILABLE:
        _fallback("websockets internals missing: control send")
        return False
    protocol = ws.protocol
    if protocol.state is not State.OPEN or ws.send_in_progress is not None or ws.paused:
        return False
    if isinstance(frame, str):
        text, data = True, frame.encode()
    else:
        text, data = False, frame
    if protocol.side is Side.CLIENT and not protocol.extensions and not protocol.expect_continuation_frame \
            and not protocol.debug:
        # The bytes websockets' send_frame would write, with a mask key from a pooled read of the OS's random
        # source (websockets draws each key with its own getrandom and serialises through a Frame: 4.8 -> 1.0 us).
        if isinstance(ws, _Corked):
            ws.cork_frame(client_frame(text, data, _mask_key()), hold)
        else:
            _write(ws, client_frame(text, data, _mask_key()))
        return True
    if text:
        protocol.send_text(data)
    else:
        protocol.send_binary(data)
    ws.send_data()  # after anything corked before it
    return True


class DirectClientConnection(_FastReceive, ClientConnection):
    """The SDK control socket's connection: frames are corked like a channel socket's (:class:`_Corked`) and read
    like one (:class:`FrameReader`, from the first frame after the handshake), and each complete, unfragmented data
    message goes to :attr:`deliver` as soon as it is split off, instead of through ``websockets``' parser and a
    queue for a reader task. Why: per small frame, ``websockets``' generic parser (a generator per frame, a Frame
    object, the event list) cost more CPU than the rest of receiving it (issue 10).

    Whatever :attr:`deliver` does not take goes to ``websockets`` as the same frame bytes and is read with ``recv``
    as always: every message while :attr:`deliver` is unset or older ones still wait in ``websockets``' queue (so
    order is kept), and invalid UTF-8 (``websockets`` then closes with 1007, as always). Pings, pongs, Close,
    fragments and anything else :class:`FrameReader` does not split go to ``websockets`` whole (see there)."""

    deliver: Callable[[str | bytes], None] | None = None
    _tunes_allocator = False
    _unjoined_flush = False  # its frames are small: joined, as measured for it (a frame of 64 KiB is rare)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fast_setup(_HANDSHAKE)

    def _room(self) -> int:
        return _ANY_COUNT  # handed on at once (deliver) or to websockets' queue, which stops reading itself

    def _deliver(self, messages: list[tuple[bool, bytes]], control: list[bytes], rest: bytes | None) -> None:
        for is_text, payload in messages:
            deliver = self.deliver
            if deliver is not None and self._phase == _FAST and not len(self.recv_messages.frames):
                if not is_text:
                    deliver(payload)
                    continue
                try:
                    text = payload.decode()
                except UnicodeDecodeError:
                    # websockets fails the connection (1007) on this frame and ignores what follows it.
                    self._phase = _OFF
                    self._unbuffer()
                else:
                    deliver(text)
                    continue
            self._super_data(server_frame(is_text, payload))
        for frame in control:
            self._super_data(frame)
        if rest is not None:
            self._phase = _OFF
            self._unbuffer()
            self._super_data(rest)

    def process_event(self, event: Any) -> None:
        # Frames websockets parses itself (see the class docstring) reach deliver here when they can.
        deliver = self.deliver
        if deliver is not None and isinstance(event, Frame) and event.fin and not len(self.recv_messages.frames):
            if event.opcode is Opcode.TEXT:
                try:
                    text = bytes(event.data).decode()
                except UnicodeDecodeError:
                    pass
                else:
                    deliver(text)
                    return
            elif event.opcode is Opcode.BINARY:
                deliver(bytes(event.data))
                return
        super().process_event(event)


def direct_client_factory() -> type[ClientConnection] | None:
    """The ``create_connection`` for the SDK's control socket (``None``: the ordinary connection, counted)."""
    if AVAILABLE:
        return DirectClientConnection
    _fallback("websockets internals missing: control receive")
    return None


__all__ = [
    "ALLOCATOR_STATE",
    "ALLOCATOR_TUNING",
    "AVAILABLE",
    "CLIENT_WRITE_BUFFER",
    "DEFAULT_RECEIVE_BUFFER",
    "FALLBACKS",
    "FLUSH_BYTES",
    "FRAME_BUFFER",
    "LENT_BYTES",
    "MASK_SEGMENT",
    "MAX_FRAME_SIZE",
    "MESSAGE_CHARGE",
    "MISSING",
    "SPARE_BUFFERS",
    "SPLIT_MIN_MESSAGES",
    "YIELD_EVERY_S",
    "DirectClientConnection",
    "FastClientConnection",
    "FastSendingClientConnection",
    "FastServerConnection",
    "FrameReader",
    "abort",
    "bound_frame_queue",
    "client_factory",
    "client_frame",
    "close_frames",
    "direct_client_factory",
    "drain_or_close",
    "enable_fast_receive",
    "fail",
    "frame_queue_high",
    "guard_close",
    "is_open",
    "queue_frame",
    "raise_if_lost",
    "receive",
    "receiver",
    "send_bare_close",
    "send_data",
    "send_server_frame",
    "send_server_frames",
    "server_factory",
    "server_frame",
    "set_max_message_size",
    "shutdown",
    "take_on_arrival",
    "take_ready",
    "tune_allocator",
    "unread_bytes",
    "wait_ready",
    "writable_now",
    "write_buffer_size",
    "write_server_frames",
]
