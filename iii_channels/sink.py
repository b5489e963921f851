"""Byte sink over a :class:`~iii.channels.ChannelWriter` with a byte high-water mark.

``write`` returns as soon as the bytes are queued locally, and waits while more than ``high_water_mark`` bytes
are queued; a background task feeds the socket (which itself waits on TCP backpressure from the engine). So a
producer runs ahead of its reader by at most the high-water mark plus the channel's buffer.

Example:
    >>> import asyncio
    >>> from iii_channels import source
    >>> from iii_engine.testing import local_channel
    >>> async def upload(writer, blocks) -> None:
    ...     async with ChannelSink(writer) as sink:   # close = EOF (+ trailer); an exception = abort
    ...         for block in blocks:
    ...             await sink.write(block)
    >>> async def demo() -> bytes:
    ...     async with local_channel() as ch:
    ...         reading = source(ch.reader, require_trailer=True).read_all()
    ...         _, data = await asyncio.gather(upload(ch.writer, [b"ab", b"cd"]), reading)
    ...         return data
    >>> asyncio.run(demo())
    b'abcd'
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from types import TracebackType

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.channels import ChannelWriter, binary_payload
from iii.waiters import Signal

from .errors import ChannelClosedError, FileChangedError
from .integrity import TRAILER_KEY, Digest, is_trailer
from .progress import Progress, _make_progress

DEFAULT_SINK_HIGH_WATER_MARK = 4 * 1024 * 1024

_TRAILER_START = '{"' + TRAILER_KEY + '"'

log = logging.getLogger("iii_channels.sink")


class ChannelSink:
    """Write bytes (and text messages) to a channel with bounded memory, from one task at a time.

    Args:
        writer: the channel's writing end.
        high_water_mark: bytes queued locally before ``write`` waits.
        trailer: send the integrity trailer (byte count + SHA-256) before closing.
        progress: ``True`` for a terminal bar or a ``callback(done, total)``.
        total: expected size, for progress reporting.

    Example:
        >>> import asyncio
        >>> from iii_channels import ChannelSource
        >>> from iii_engine.testing import local_channel
        >>> async def demo() -> tuple[int, str | None, bytes]:
        ...     async with local_channel() as ch:
        ...         src = ChannelSource(ch.reader, require_trailer=True)
        ...         out = ChannelSink(ch.writer, high_water_mark=64 << 10)
        ...         async def read() -> tuple[str | None, bytes]:
        ...             return await src.next_message(), await src.read_all()
        ...         reading = asyncio.ensure_future(read())
        ...         await out.send_text('{"name": "log.txt"}')  # text and bytes keep their order
        ...         await out.write(b"line 1\\n")
        ...         await out.drain()  # everything queued is handed to the socket
        ...         queued = out.queued_bytes
        ...         await out.close()  # the trailer, then EOF (out.abort(reason) would fail the reader)
        ...         header, data = await reading
        ...         return queued, header, data
        >>> asyncio.run(demo())
        (0, '{"name": "log.txt"}', b'line 1\\n')
    """

    def __init__(
        self,
        writer: ChannelWriter,
        *,
        high_water_mark: int = DEFAULT_SINK_HIGH_WATER_MARK,
        trailer: bool = True,
        progress: Progress = None,
        total: int | None = None,
        label: str = "",
    ) -> None:
        if isinstance(high_water_mark, bool) or not isinstance(high_water_mark, int):
            raise TypeError(f"high_water_mark must be a number of bytes (int), got {high_water_mark!r}")
        if high_water_mark < 0:
            # A negative mark can never be met: write() would loop on an empty queue without ever yielding.
            raise ValueError(f"high_water_mark must be 0 or more bytes, got {high_water_mark}")
        self.writer = writer
        self.high_water_mark = high_water_mark
        self._digest = Digest() if trailer else None
        self._queue: deque[bytes | str] = deque()
        self._queued_bytes = 0
        self._pushed = 0  # items ever queued, and of them those the feed started handing to the writer: a
        self._taken = 0  # cancelled write whose item is not yet taken can be withdrawn whole (see _wait_below_mark)
        self._pump: asyncio.Task[None] | None = None
        self._progress_made = Signal()  # the pump handed an item to the socket, or stopped
        self._error: BaseException | None = None
        self._closed = False
        self._progress = _make_progress(progress, total, label)
        self.bytes_written = 0

    @property
    def queued_bytes(self) -> int:
        """Bytes accepted by ``write`` and not yet handed to the socket."""
        return self._queued_bytes

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data``; waits while more than ``high_water_mark`` bytes are queued.

        Cancelled while it waits, as the SDK's writer is: if ``data`` is still queued (nothing of it handed to the
        writer yet) it is withdrawn, never sent nor counted by the trailer, and the sink goes on, so a retry sends it
        once; if its bytes were on their way already, the stream is aborted (the reader gets
        ``ChannelAbortedError``) and the sink is closed: a retry would send them twice under a trailer that
        verifies. The cancellation propagates either way.

        Example:
            >>> import asyncio
            >>> from iii_channels import ChannelSource
            >>> from iii_engine.testing import local_channel
            >>> async def demo() -> bytes:
            ...     async with local_channel() as ch:
            ...         async with ChannelSink(ch.writer, high_water_mark=1024) as out:
            ...             await out.write(b"header")
            ...             await out.write(memoryview(b"--body")[2:])
            ...         return await ChannelSource(ch.reader).read_all()
            >>> asyncio.run(demo())
            b'headerbody'
        """
        self._check()
        chunk = binary_payload(data, "ChannelSink.write", "send_text")
        if not chunk:
            return
        self._push(chunk)
        await self._wait_below_mark()

    async def send_text(self, message: str) -> None:
        """Queue a text message, ordered with the bytes; waits like ``write`` (a message counts its characters), and
        cancelled meanwhile, is withdrawn or aborts the stream as ``write`` does.

        Example:
            >>> import asyncio
            >>> from iii_channels import ChannelSource
            >>> from iii_engine.testing import local_channel
            >>> async def demo() -> tuple[str | None, bytes]:
            ...     async with local_channel() as ch:
            ...         async with ChannelSink(ch.writer) as out:
            ...             await out.send_text('{"name": "log.txt"}')
            ...             await out.write(b"line 1\\n")
            ...         source = ChannelSource(ch.reader)
            ...         return await source.next_message(), await source.read_all()
            >>> asyncio.run(demo())
            ('{"name": "log.txt"}', b'line 1\\n')
        """
        self._check()
        if not isinstance(message, str):
            # Bytes queued here would go out as binary data the trailer does not count: an IntegrityError later.
            raise TypeError(f"ChannelSink.send_text takes a str, not {type(message).__name__} (use write for bytes)")
        if is_trailer(message):
            # Every checking reader takes it for the stream's trailer: the whole transfer would fail there.
            raise ValueError(f"ChannelSink.send_text: a text message beginning {_TRAILER_START!r} is read as the "
                             "stream's integrity trailer and would fail the transfer at the reader; send it in "
                             f"another form: {message[:80]!r}")
        self._push(message)
        await self._wait_below_mark()

    async def drain(self) -> None:
        """Wait until everything queued was handed to the socket; raises what stopped the socket's feed.

        Example:
            >>> import asyncio
            >>> from iii_channels import ChannelSource
            >>> from iii_engine.testing import local_channel
            >>> async def demo() -> tuple[int, int]:
            ...     async with local_channel() as ch:
            ...         async with ChannelSink(ch.writer) as out:
            ...             await out.write(b"x" * 1000)
            ...             await out.drain()
            ...             return out.queued_bytes, out.bytes_written
            >>> asyncio.run(demo())
            (0, 1000)
        """
        while self._queue:
            await self._wait_progress()
        self._check_error()

    async def close(self) -> None:
        """Flush, send the trailer if enabled, then end the stream (the reader sees EOF).

        If it cannot get that far (the feed failed, or the caller was cancelled meanwhile) the stream is aborted
        before the error propagates: left open, the reader would wait for an end that never comes.

        Example:
            >>> import asyncio
            >>> from iii_channels import ChannelSource
            >>> from iii_engine.testing import local_channel
            >>> async def demo() -> tuple[bytes, bool]:
            ...     async with local_channel() as ch:
            ...         out = ChannelSink(ch.writer)
            ...         await out.write(b"all of it")
            ...         await out.close()  # the trailer, then EOF
            ...         source = ChannelSource(ch.reader, require_trailer=True)
            ...         return await source.read_all(), source.verified
            >>> asyncio.run(demo())
            (b'all of it', True)
        """
        if self._closed:
            return
        try:
            await self.drain()
            self._closed = True
            if self._digest is not None:
                await self.writer.send_message_async(self._digest.trailer())
        except BaseException as exc:
            await asyncio.shield(self._abort_quietly(f"closing failed: {exc!r}"))
            raise
        try:
            # close_async shields its own closing handshake: a cancellation here still ends the stream normally.
            await self.writer.close_async()
        finally:
            if self._progress is not None:
                self._progress.close()

    async def abort(self, reason: str = "aborted") -> None:
        """Drop what is queued and abort the stream (the reader gets ``ChannelAbortedError`` from our engine).

        Example:
            >>> import asyncio
            >>> from iii_channels import ChannelAbortedError, ChannelSource
            >>> from iii_engine.testing import local_channel
            >>> async def demo() -> str:
            ...     async with local_channel() as ch:
            ...         out = ChannelSink(ch.writer)
            ...         await out.write(b"partial")
            ...         await out.abort("disk full")
            ...         try:
            ...             await ChannelSource(ch.reader).read_all()
            ...         except ChannelAbortedError as exc:
            ...             result = type(exc).__name__
            ...         return result
            >>> asyncio.run(demo())
            'ChannelAbortedError'
        """
        self._closed = True
        if self._pump is not None:
            self._pump.cancel()
        self._queue.clear()
        self._queued_bytes = 0
        await self.writer.abort(reason)
        if self._progress is not None:
            self._progress.close()

    async def _abort_quietly(self, reason: str) -> None:
        """``abort`` on a failure path: the error that got us here is the one to report."""
        try:
            await self.abort(reason)
        except Exception as exc:  # the caller re-raises the error that got it here
            log.debug("abort of channel %s after a failed close: %r", self.writer.ref.channel_id, exc)

    async def __aenter__(self) -> ChannelSink:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            await self.close()
        else:
            reason = exc.abort_reason if isinstance(exc, FileChangedError) else str(exc)
            await self.abort(f"{exc_type.__name__ if exc_type else 'error'}: {reason}")

    # ---- internals

    def _check(self) -> None:
        self._check_error()
        if self._closed:
            raise ChannelClosedError(f"sink for channel {self.writer.ref.channel_id} is closed")

    def _check_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _push(self, item: bytes | str) -> None:
        self._queue.append(item)
        self._queued_bytes += len(item)
        self._pushed += 1
        if self._pump is None:
            self._pump = asyncio.get_running_loop().create_task(self._run())

    async def _wait_below_mark(self) -> None:
        """Wait while more than ``high_water_mark`` bytes are queued, for the item just queued. Cancelled, the SDK
        writer's rule: the item is withdrawn if the feed has not started on it, and the stream aborted if it has
        (it may be partly or wholly sent: the caller, told it was cancelled, would send it again)."""
        number = self._pushed
        try:
            while self._queued_bytes > self.high_water_mark:
                await self._wait_progress()
        except asyncio.CancelledError:
            if self._closed:
                raise  # aborted meanwhile: nothing of it goes out any more
            if self._taken < number and self._pushed == number:
                # Still the last item queued, not yet taken by the feed: nothing of it was sent (nor digested).
                self._queued_bytes -= len(self._queue.pop())
                self._pushed -= 1
            else:
                await asyncio.shield(self._abort_quietly(
                    "a write was cancelled once its bytes were on their way: a retry would send them twice"))
            raise

    async def _wait_progress(self) -> None:
        """Wait until the feed hands the socket an item or stops; raise at once when it has stopped with items
        still queued (it failed, or was cancelled): nothing would ever take them, and a caller looping on
        ``while queued: await _wait_progress()`` would spin forever without yielding."""
        if self._pump is None:
            self._check_error()
            if self._queue:
                raise ChannelClosedError(f"sink for channel {self.writer.ref.channel_id}: its feed to the socket "
                                         f"stopped with {self._queued_bytes} bytes still queued")
            return
        await self._progress_made.wait()
        self._check_error()

    async def _run(self) -> None:
        writer = self.writer
        try:
            while self._queue:
                item = self._queue[0]
                self._taken += 1
                if isinstance(item, str):
                    await writer.send_message_async(item)
                else:
                    if self._digest is not None:
                        # Digested as it goes out, not as it is queued: a write withdrawn before is never counted.
                        self._digest.update(item)
                    await writer.write(item)
                    self.bytes_written += len(item)
                    if self._progress is not None:
                        self._progress(self.bytes_written)
                self._queue.popleft()
                self._queued_bytes -= len(item)
                self._progress_made.set()
        except Exception as exc:
            self._error = exc
        finally:
            self._pump = None
            self._progress_made.set()


def sink(writer: ChannelWriter, **options: object) -> ChannelSink:
    """Shorthand for :class:`ChannelSink` (``async with iii_channels.sink(writer) as s: ...``).

    Example:
        >>> import asyncio
        >>> from iii_channels import source
        >>> from iii_engine.testing import local_channel
        >>> async def demo() -> list[object]:
        ...     async with local_channel() as ch:
        ...         async def write() -> int:
        ...             async with sink(ch.writer, high_water_mark=1 << 20) as out:  # exit: trailer, then EOF
        ...                 await out.write(b"hello ")
        ...                 await out.write(b"world")
        ...             return out.bytes_written
        ...         src = source(ch.reader, require_trailer=True)
        ...         return await asyncio.gather(write(), src.read_all())
        >>> asyncio.run(demo())
        [11, b'hello world']
    """
    return ChannelSink(writer, **options)  # type: ignore[arg-type]
