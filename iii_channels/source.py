"""Byte source over a :class:`~iii.channels.ChannelReader`: stream-style reads, iterators, trailer checks.

Example:
    >>> import asyncio
    >>> from iii_channels import sink
    >>> from iii_engine.testing import local_channel
    >>> async def consume(reader) -> None:
    ...     source = ChannelSource(reader)
    ...     header = await source.readline()           # b"name,size\\n"
    ...     async for record in source.json_records(): # one JSON value per line
    ...         print(record)
    >>> async def demo() -> None:
    ...     async with local_channel() as ch:
    ...         async with sink(ch.writer) as out:
    ...             await out.write(b'name,size\\n["a.txt", 3]\\n')
    ...         await consume(ch.reader)
    >>> asyncio.run(demo())
    ['a.txt', 3]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import operator
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.channels import ChannelReader, read_to_end

from .errors import (
    ChannelClosedError,
    ChannelIdleError,
    IncompleteReadError,
    IntegrityError,
    LimitExceededError,
)
from .integrity import Digest, _parse_trailer, is_trailer
from .progress import Progress, _make_progress

DEFAULT_LINE_LIMIT = 64 * 1024 * 1024
# Text messages set aside for messages()/next_message() while the caller reads bytes: a consumer that never asks
# for them must not hold a sender's every text message (each up to the engine's 64 MiB message size).
DEFAULT_TEXT_LIMIT = 16 * 1024 * 1024
# Binary bytes set aside while next_message()/messages() wait for text: a writer that sends only bytes must not
# grow a reader that waits for a message without bound (it held 300 MiB for one header that came last).
DEFAULT_BUFFER_LIMIT = 64 * 1024 * 1024
# How long a consumer that gives up tries to attach its reader so the writer hears "reader gone".
_RELEASE_ATTACH_S = 10.0


def check_timeout(seconds: float | None, name: str) -> None:
    """Refuse a timeout ``name`` that is not a positive, finite number of seconds or ``None`` (``TypeError`` for
    another type, ``ValueError`` for another number: 0, negative, NaN, infinite, an int past any float).

    Example:
        >>> check_timeout(2.5, "idle_timeout"), check_timeout(None, "idle_timeout")
        (None, None)
        >>> check_timeout(0, "stall_timeout")
        Traceback (most recent call last):
        ValueError: stall_timeout must be more than 0 seconds (and finite) or None, got 0
    """
    if seconds is None:
        return
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, got {seconds!r}")
    try:
        finite = 0 < float(seconds) < math.inf
    except OverflowError:  # an int past any float (10**400)
        finite = False
    if not finite:
        shown = str(seconds)
        shown = shown if len(shown) <= 40 else f"{shown[:40]}…"  # 10**400: 401 digits
        raise ValueError(f"{name} must be more than 0 seconds (and finite) or None, got {shown}")


class ChannelSource:
    """Read a channel like an ``asyncio.StreamReader``, with integrity checking at end of stream.

    Args:
        reader: the channel's reading end.
        verify: check an integrity trailer when one arrives (byte count and SHA-256). ``False`` (without
            ``require_trailer``) does not look at trailers at all: they are consumed, never handed on as text,
            and neither their form, their counts nor their place in the stream can raise :class:`IntegrityError`
            (``verified`` stays false). ``require_trailer`` turns every check back on.
        require_trailer: raise :class:`IntegrityError` at EOF if no trailer arrived (use it when the writer is
            known to send one: it turns a silent truncation on the production engine into an error).
        progress: ``True`` for a terminal bar or a ``callback(done, total)``. A callback that raises fails the
            source for good: the read that called it raises its exception, every later read that needs the
            channel :class:`ChannelClosedError` (the chunk it was called for had been counted and digested; handed
            out no more, it would leave a stream short, yet verified), and the reader is closed, so the writer
            gets ``ReaderGoneError`` at once.
        total: expected size, for progress reporting.
        on_text: called with each text message (other than the trailer) as it arrives.
        text_limit: most characters of text messages held for ``messages()`` / ``next_message()`` while bytes are
            read; more raises :class:`LimitExceededError` and fails the source for good, as a raising progress
            callback does (the message past the limit was taken and not kept: reading on would lose it; the
            texts held before it are still given out). ``0`` holds none (they still reach ``on_text`` and the
            reader's callbacks): for consumers of bytes only.
        buffer_limit: most bytes of binary data held unread while ``next_message()`` / ``messages()`` wait for a
            text message; past it they raise :class:`LimitExceededError` naming the limit (the bytes stay held:
            byte reads get them). ``0``: no bytes may come before the text.
        idle_timeout: most seconds to wait for the writer's next message (``None``: no limit); past it
            :class:`ChannelIdleError` (a ``TimeoutError``) names the wait and the bytes read so far. The channel
            is left open: close the reader (or let the adapter that made this source do it) to tell the writer.
            A ``read_all`` it stops puts what it had read back, as a cancelled one does (see :meth:`read_all`).

    Example:
        >>> import asyncio
        >>> from iii_channels import sink
        >>> from iii_engine.testing import local_channel
        >>> async def demo() -> tuple[object, ...]:
        ...     async with local_channel() as ch:
        ...         async def write() -> None:
        ...             async with sink(ch.writer) as out:
        ...                 await out.write(b"v1\\nHEAD" + bytes(4) + b"a\\nb\\n")
        ...         writing = asyncio.ensure_future(write())
        ...         src = ChannelSource(ch.reader, require_trailer=True)
        ...         version = await src.readline()
        ...         magic, size = await src.read(4), await src.readexactly(4)
        ...         lines = [line async for line in src.lines()]
        ...         await writing
        ...         return version, magic, size, lines, src.at_eof, src.verified, len(src.sha256 or "")
        >>> asyncio.run(demo())
        (b'v1\\n', b'HEAD', b'\\x00\\x00\\x00\\x00', [b'a\\n', b'b\\n'], True, True, 64)
    """

    def __init__(
        self,
        reader: ChannelReader,
        *,
        verify: bool = True,
        require_trailer: bool = False,
        progress: Progress = None,
        total: int | None = None,
        label: str = "",
        on_text: Callable[[str], Any] | None = None,
        text_limit: int = DEFAULT_TEXT_LIMIT,
        idle_timeout: float | None = None,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
    ) -> None:
        if text_limit < 0:
            raise ValueError(f"text_limit must be 0 or more, got {text_limit}")
        if buffer_limit < 0:
            raise ValueError(f"buffer_limit must be 0 or more, got {buffer_limit}")
        check_timeout(idle_timeout, "idle_timeout")
        self.reader = reader
        self.require_trailer = require_trailer
        # Off, trailers are skipped unread: a malformed one must not fail a reader that asked for no checks.
        self._checking = verify or require_trailer
        self._digest = Digest() if self._checking else None
        self._idle_timeout = idle_timeout
        self._watchdog: asyncio.TimerHandle | None = None
        self._waiting: asyncio.Task[Any] | None = None
        self._wait_began = 0.0
        self._idle_expired = False
        self._buffer = bytearray()
        self._texts: deque[str] = deque()
        self._text_at: deque[int] = deque()  # for each held text: the binary bytes that came before it
        self._text_held = 0
        self._text_limit = text_limit
        self._buffer_limit = buffer_limit
        self._eof = False
        self._trailer: tuple[int, str] | None = None
        self._progress = _make_progress(progress, total, label)
        # Failed for good (a progress callback raised, unread text past text_limit): why, and the error.
        self._failed: tuple[str, BaseException] | None = None
        self._on_text = on_text
        self.bytes_read = 0
        self.verified = False

    @property
    def at_eof(self) -> bool:
        """True once end of stream arrived and the buffer is empty."""
        return self._eof and not self._buffer

    @property
    def sha256(self) -> str | None:
        """Hex SHA-256 of the bytes read so far (``None`` when built with ``verify=False``)."""
        return self._digest.hexdigest() if self._digest is not None else None

    # ---- the one place that talks to the reader

    async def _next_item(self, keep_text: bool, text_ends: bool = False) -> bytes | str | None:
        """The next binary message, or text message when ``keep_text`` is false (text is then handed back
        instead of being set aside), or ``None`` at EOF (after the trailer check). The trailer is consumed.
        ``text_ends``: ``b""`` once a text message was set aside (for a wait for text: the binary data after it
        may be long in coming)."""
        if self._failed is not None:
            channel_id = self.reader.ref.channel_id
            why, cause = self._failed
            raise ChannelClosedError(f"channel {channel_id}: this source failed when {why} {cause!r}",
                                     channel_id=channel_id) from cause
        try:
            return await self._next_unchecked(keep_text, text_ends)
        except IntegrityError as exc:
            # later reads fail too: they read as a clean end (an empty read_all, no lines) or read on past it
            self._failed = self._failed or ("its integrity check failed:", exc)
            raise

    async def _next_unchecked(self, keep_text: bool, text_ends: bool) -> bytes | str | None:
        """:meth:`_next_item` of a source that has not failed."""
        while not self._eof:
            message = await self._recv()
            if message is None:
                self._finish()
                return None
            if isinstance(message, str):
                if not keep_text and not is_trailer(message):
                    if self._trailer is not None:
                        raise IntegrityError("text arrived after the integrity trailer",
                                             channel_id=self.reader.ref.channel_id)
                    return message
                await self._on_text_message(message)
                if text_ends:
                    return b""
                continue
            if self._trailer is not None:
                raise IntegrityError("data arrived after the integrity trailer", channel_id=self.reader.ref.channel_id)
            if self._digest is not None:
                self._digest.update(message)
            self.bytes_read += len(message)
            if self._progress is not None:
                try:
                    self._report(self._progress, self.bytes_read)
                except BaseException:
                    await self._give_up()
                    raise
            return message
        return None

    async def _recv(self) -> bytes | str | None:
        if self._idle_timeout is None:
            return await self.reader.recv()
        # One watchdog timer for the whole stream, checked against when the current wait began, not a timer per
        # message: asyncio.timeout cost ~20 us a message, several % of a transfer's CPU.
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._waiting = task
        self._wait_began = loop.time()
        if self._watchdog is None:
            self._watchdog = loop.call_at(self._wait_began + self._idle_timeout, self._on_watchdog)
        try:
            message = await self.reader.recv()
        except BaseException as exc:
            self._stop_watchdog()
            expired, self._idle_expired = self._idle_expired, False
            # Ours only when nobody else cancelled the task too (as asyncio.timeout decides it).
            if expired and isinstance(exc, asyncio.CancelledError) and task.uncancel() == 0:
                channel_id = self.reader.ref.channel_id
                raise ChannelIdleError(
                    f"channel {channel_id}: nothing from the writer for {self._idle_timeout:g} s (after "
                    f"{self.bytes_read} bytes); stopped waiting", channel_id=channel_id) from None
            raise
        finally:
            self._waiting = None
        if message is None:
            self._stop_watchdog()
        return message

    def _on_watchdog(self) -> None:
        self._watchdog = None
        if self._waiting is None:
            return  # not reading now: the next read arms it again
        assert self._idle_timeout is not None
        loop = asyncio.get_running_loop()
        due = self._wait_began + self._idle_timeout
        if loop.time() < due:
            self._watchdog = loop.call_at(due, self._on_watchdog)
            return
        self._idle_expired = True
        self._waiting.cancel()

    def _stop_watchdog(self) -> None:
        # Else the timer keeps this source (and its buffer) alive until it fires, up to idle_timeout later.
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    async def _next_chunk(self, text_ends: bool = False) -> bytes | None:
        """The next binary message, or ``None`` at EOF. Text messages are set aside for ``messages()`` (and end
        the wait with ``b""`` if ``text_ends``)."""
        item = await self._next_item(True, text_ends)
        assert not isinstance(item, str)
        return item

    async def _on_text_message(self, text: str) -> None:
        if is_trailer(text):
            if not self._checking:
                return
            channel_id = self.reader.ref.channel_id
            if self._trailer is not None:
                raise IntegrityError(f"channel {channel_id}: a second integrity trailer", channel_id=channel_id)
            try:
                self._trailer = _parse_trailer(text)
            except ValueError as exc:
                # Read as "no trailer", a cut-short one would pass a stream unchecked unless require_trailer.
                raise IntegrityError(f"channel {channel_id}: {exc}", channel_id=channel_id) from None
            return
        if self._text_limit:
            # Kept for messages()/next_message(), up to the limit: beyond it the caller is not reading them.
            if self._text_held + len(text) > self._text_limit:
                # That message was taken from the reader and is neither held nor handed on: reading on would
                # lose it without a word, so this source fails for good (every later read raises).
                overflow = LimitExceededError(self._text_limit, "the text held unread for messages()", "characters")
                self._failed = ("unread text went past text_limit:", overflow)
                await self._give_up()
                raise overflow
            self._texts.append(text)
            self._text_at.append(self.bytes_read)
            self._text_held += len(text)
        if self._on_text is not None:
            self._on_text(text)
        await self.reader._dispatch(text)

    async def _fail_for_good(self, why: str, exc: BaseException) -> None:
        """Every later read raises ``ChannelClosedError`` naming ``why`` and ``exc`` (what is buffered is dropped:
        reading on past a record that was refused would hand out what came after it as if nothing was wrong), and
        the writer is released (:meth:`_give_up`)."""
        self._failed = self._failed or (why, exc)
        self._buffer.clear()
        await self._give_up()

    async def _give_up(self) -> None:
        """This source failed for good: release its reader, so the writer gets ``ReaderGoneError`` at once instead
        of waiting on backpressure for reads that will never come (as ``to_process`` & co do on failure)."""
        await asyncio.shield(_release_writer(self.reader))

    def _report(self, call: Callable[..., object], *args: int) -> None:
        try:
            call(*args)
        except BaseException as exc:
            self._failed = ("its progress callback raised", exc)
            raise

    def _finish(self) -> None:
        self._eof = True
        verified = self._check_trailer()  # (an IntegrityError fails the source for good: _next_item)
        if self._progress is not None:  # (after the check: a failed transfer's bar never read 100%)
            self._report(self._progress.close)
        self.verified = verified  # (not when the progress callback failed the source)

    def _check_trailer(self) -> bool:
        """Check the trailer against what was read: ``IntegrityError`` when it does not match (or is missing and
        required); whether there was one to check."""
        channel_id = self.reader.ref.channel_id
        if self._trailer is None:
            if self.require_trailer:
                raise IntegrityError(
                    f"channel {channel_id} ended after {self.bytes_read} bytes without an integrity trailer "
                    "(the writer crashed or did not send one)", channel_id=channel_id)
            return False
        if self._digest is None:
            return False
        count, sha = self._trailer
        if count != self._digest.count:
            raise IntegrityError(
                f"channel {channel_id}: received {self._digest.count} bytes, the writer sent {count}",
                channel_id=channel_id)
        if sha != self._digest.hexdigest():
            raise IntegrityError(f"channel {channel_id}: SHA-256 mismatch", channel_id=channel_id)
        return True

    async def _fill(self, text_ends: bool = False) -> bool:
        chunk = await self._next_chunk(text_ends)
        if chunk is None:
            return False
        self._buffer += chunk
        return True

    def _take(self, n: int) -> bytes:
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    # ---- stream-style reads

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (``b""`` at EOF); ``n < 0`` reads to the end.

        Example:
            >>> import asyncio
            >>> from iii_channels import sink
            >>> from iii_engine.testing import local_channel
            >>> async def demo() -> tuple[bytes, ...]:
            ...     async with local_channel() as ch:
            ...         async with sink(ch.writer) as out:
            ...             await out.write(b"v1\\nHEAD")
            ...         source = ChannelSource(ch.reader)
            ...         return await source.read(3), await source.read(), await source.read(3)
            >>> asyncio.run(demo())
            (b'v1\\n', b'HEAD', b'')
        """
        if type(n) is not int:
            n = _check_size(n, "n")
        if n < 0:
            return await self.read_all()
        if n == 0:
            return b""
        if not self._buffer:
            chunk = await self._next_chunk()
            if chunk is None:
                return b""
            if len(chunk) <= n:
                return chunk
            self._buffer += chunk
        return self._take(n)

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or :class:`IncompleteReadError` at an early EOF.

        Example:
            >>> import asyncio
            >>> from iii_channels import sink
            >>> from iii_engine.testing import local_channel
            >>> async def demo() -> tuple[object, ...]:
            ...     async with local_channel() as ch:
            ...         async with sink(ch.writer) as out:
            ...             await out.write(b"HEAD" + (7).to_bytes(4, "big"))
            ...         source = ChannelSource(ch.reader)
            ...         magic, size = await source.readexactly(4), int.from_bytes(await source.readexactly(4), "big")
            ...         try:
            ...             await source.readexactly(1)
            ...         except IncompleteReadError as exc:
            ...             result = magic, size, exc.partial
            ...         return result
            >>> asyncio.run(demo())
            (b'HEAD', 7, b'')
        """
        if type(n) is not int:
            n = _check_size(n, "n")
        if n < 0:
            # Taken as a slice end, -1 would hand back all but the last buffered byte.
            raise ValueError(f"readexactly needs 0 or more bytes, got {n}")
        while len(self._buffer) < n:
            if not await self._fill():
                raise IncompleteReadError(self._take(len(self._buffer)), n)
        return self._take(n)

    async def readuntil(self, separator: bytes = b"\n", limit: int = DEFAULT_LINE_LIMIT) -> bytes:
        """Bytes up to and including ``separator``; :class:`IncompleteReadError` if EOF comes first.

        ``limit`` bounds the bytes before the separator, as ``asyncio.StreamReader``'s limit does: a line of
        exactly ``limit`` bytes and its separator is returned, one byte more raises :class:`LimitExceededError`.

        Example:
            >>> import asyncio
            >>> from iii_channels import sink
            >>> from iii_engine.testing import local_channel
            >>> async def demo() -> tuple[bytes, bytes]:
            ...     async with local_channel() as ch:
            ...         async with sink(ch.writer) as out:
            ...             await out.write(b"Host: a\\r\\n\\r\\nbody")
            ...         source = ChannelSource(ch.reader)
            ...         return await source.readuntil(b"\\r\\n\\r\\n", limit=16 * 1024), await source.read_all()
            >>> asyncio.run(demo())
            (b'Host: a\\r\\n\\r\\n', b'body')
        """
        if not separator:
            raise ValueError("separator must not be empty")
        if type(limit) is not int:
            limit = _check_size(limit, "limit")
        if limit < 0:
            raise ValueError(f"limit must be 0 or more, got {limit}")
        start = 0
        while True:
            index = self._buffer.find(separator, start)
            if index >= 0:
                if index > limit:
                    # One chunk can carry a line far past the limit and its separator: still too long.
                    raise LimitExceededError(limit, "line")
                return self._take(index + len(separator))
            # The buffer's last len(separator) - 1 bytes may be the start of the separator, not of the line.
            if len(self._buffer) - len(separator) + 1 > limit:
                raise LimitExceededError(limit, "line")
            start = max(0, len(self._buffer) - len(separator) + 1)
            if not await self._fill():
                raise IncompleteReadError(self._take(len(self._buffer)), None)

    async def readline(self, limit: int = DEFAULT_LINE_LIMIT) -> bytes:
        """One line including ``\\n``; the last line may lack it; ``b""`` at EOF. ``limit``: most bytes before
        the ``\\n`` (see :meth:`readuntil`).

        Example:
            >>> import asyncio
            >>> from iii_channels import sink
            >>> from iii_engine.testing import local_channel
            >>> async def demo() -> list[bytes]:
            ...     async with local_channel() as ch:
            ...         async with sink(ch.writer) as out:
            ...             await out.write(b"v1\\nrest")
            ...         source = ChannelSource(ch.reader)
            ...         return [await source.readline(), await source.readline(), await source.readline()]
            >>> asyncio.run(demo())
            [b'v1\\n', b'rest', b'']
        """
        try:
            return await self.readuntil(b"\n", limit)
        except IncompleteReadError as exc:
            return exc.partial

    async def read_all(self, limit: int | None = None) -> bytes:
        """Everything to the end; :class:`LimitExceededError` once more than ``limit`` bytes arrived. All of it or
        an error: a :class:`~iii.channels.ChannelError` part-way (the limit, an abort, a failed integrity check)
        holds what this had read, at most ``limit`` bytes, as its ``partial`` (more than ``limit`` bytes left
        buffered by an earlier read raise at once, with none taken). Past ``limit``, the message that crossed it
        stays buffered, unread: ``partial`` followed by the next reads is the whole stream. Cancelled, or stopped by
        ``idle_timeout`` (:class:`ChannelIdleError`, whose ``partial`` is then ``b""``: nothing taken), it puts
        what it had read back for the next read: a retried ``read_all`` returns the whole stream. ``limit`` is an
        int, 0 or more, or ``None`` (else :class:`TypeError` or :class:`ValueError`), as for
        ``ChannelReader.read_all``, which reads the same way (:func:`iii.channels.read_to_end`).

        Example:
            >>> import asyncio
            >>> from iii_channels import sink
            >>> from iii_engine.testing import local_channel
            >>> async def demo() -> bytes:
            ...     async with local_channel() as ch:
            ...         async with sink(ch.writer) as out:
            ...             await out.write(b"a" * 3)
            ...             await out.write(b"b" * 3)
            ...         return await ChannelSource(ch.reader).read_all(limit=1 << 20)
            >>> asyncio.run(demo())
            b'aaabbb'
        """
        async def next_chunk() -> bytes | None:
            # Bytes an earlier read left buffered first: they count against the limit too.
            return self._take(len(self._buffer)) if self._buffer else await self._next_chunk()

        def put_back(data: bytes) -> None:
            # In front of the buffer, for the next read. The chunk past the limit is kept, unread: dropped, it was
            # digested all the same (a hole in the stream, and verified at its end). What a cancelled read (or one
            # stopped by idle_timeout) had read: dropped, a retried read_all returned the rest of the stream as if
            # it were the whole.
            self._buffer[:0] = data

        return await read_to_end(next_chunk, put_back, limit, "ChannelSource.read_all", self.reader.ref.channel_id)

    # ---- iterators

    async def chunks(self) -> AsyncIterator[bytes]:
        """Binary chunks as they arrive: the writer's messages, a large one in frames of the connection's size.

        Example:
            >>> import asyncio
            >>> from iii_channels import sink
            >>> from iii_engine.testing import local_channel
            >>> async def demo() -> list[bytes]:
            ...     async with local_channel() as ch:
            ...         async with sink(ch.writer) as out:
            ...             await out.write(b"ab")
            ...             await out.write(b"cd")
            ...         return [chunk async for chunk in ChannelSource(ch.reader).chunks()]
            >>> asyncio.run(demo())
            [b'ab', b'cd']
        """
        if self._buffer:
            yield self._take(len(self._buffer))
        while (chunk := await self._next_chunk()) is not None:
            yield chunk

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.chunks()

    async def items(self) -> AsyncIterator[bytes | str]:
        """Binary chunks and text messages interleaved, in the order they were written (the trailer is
        checked, not yielded). Text goes only here: not to ``messages()`` nor the reader's callbacks. Text
        messages an earlier byte read set aside (and ``messages()`` did not take) come first, each before the
        buffered bytes that followed it.

        Example:
            >>> import asyncio
            >>> from iii_channels import sink
            >>> from iii_engine.testing import local_channel
            >>> async def demo() -> tuple[list[bytes | str], bool]:
            ...     async with local_channel() as ch:
            ...         async with sink(ch.writer) as out:  # its trailer is checked, not yielded
            ...             await out.send_text("header")
            ...             await out.write(b"data")
            ...             await out.send_text("footer")
            ...         source = ChannelSource(ch.reader, require_trailer=True)
            ...         return [item async for item in source.items()], source.verified
            >>> asyncio.run(demo())
            (['header', b'data', 'footer'], True)
        """
        # Set aside by readline() & co: dropped here, they would be lost to a caller that reads only items().
        start = self.bytes_read - len(self._buffer)  # the stream offset of the buffer's first byte
        while self._texts:
            at = self._text_at[0]
            if at > start:
                yield self._take(at - start)
                start = at
            yield self._pop_text()
        if self._buffer:
            yield self._take(len(self._buffer))
        while (item := await self._next_item(False)) is not None:
            yield item

    async def lines(self, limit: int = DEFAULT_LINE_LIMIT) -> AsyncIterator[bytes]:
        """Lines including their ``\\n`` (the last one may lack it). A line longer than ``limit`` raises
        :class:`LimitExceededError` and ends this source for good: its reader is closed, so the writer gets
        ``ReaderGoneError`` at once (it waited on backpressure for reads that never came). To go on past an
        over-long line, read with :meth:`readline` instead.

        Example:
            >>> import asyncio
            >>> from iii_channels import sink
            >>> from iii_engine.testing import local_channel
            >>> async def demo() -> list[bytes]:
            ...     async with local_channel() as ch:
            ...         async with sink(ch.writer) as out:
            ...             await out.write(b"a\\nb\\nlast")
            ...         return [line async for line in ChannelSource(ch.reader).lines()]
            >>> asyncio.run(demo())
            [b'a\\n', b'b\\n', b'last']
        """
        while True:
            try:
                line = await self.readline(limit)
            except LimitExceededError:
                await self._give_up()
                raise
            if not line:
                return
            yield line

    async def json_records(self, limit: int = DEFAULT_LINE_LIMIT) -> AsyncIterator[Any]:
        """One JSON value per line (NDJSON); blank lines are skipped; ``ValueError`` names a line that is not JSON.
        A line that is not JSON, or longer than ``limit``, ends this source for good, as in :meth:`lines`.

        Example:
            >>> import asyncio
            >>> from iii_channels import sink
            >>> from iii_engine.testing import local_channel
            >>> async def demo() -> list[Any]:
            ...     async with local_channel() as ch:
            ...         async with sink(ch.writer) as out:
            ...             await out.write(b'{"n": 1}\\n\\n[2]\\n')
            ...         return [record async for record in ChannelSource(ch.reader).json_records()]
            >>> asyncio.run(demo())
            [{'n': 1}, [2]]
        """
        # where its lines begin, to name a bad one (counting the stream's lines as they are read cost every line
        # read ~20 %: a readline loop 655 -> 850 ns a line)
        began = self.bytes_read - len(self._buffer)
        number = 0
        async for line in self.lines(limit):
            number += 1
            if line.strip():
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep to decode
                    where = f"line {number}" + (f" of the lines json_records read (it began at byte {began} of "
                                                f"the stream)" if began else "")
                    error = ValueError(f"channel {self.reader.ref.channel_id}: {where} is not JSON ({exc}): "
                                       f"{line[:80]!r}")
                    await self._fail_for_good("json_records met a line that is not JSON:", error)
                    raise error from None
                yield record

    async def messages(self) -> AsyncIterator[str]:
        """Text messages (not the trailer). Binary data arriving meanwhile is kept for later reads, up to
        ``buffer_limit`` bytes (then :class:`LimitExceededError`).

        Example:
            >>> import asyncio
            >>> from iii_channels import sink
            >>> from iii_engine.testing import local_channel
            >>> async def demo() -> tuple[list[str], bytes]:
            ...     async with local_channel() as ch:
            ...         async with sink(ch.writer) as out:
            ...             await out.send_text("a")
            ...             await out.write(b"data")
            ...             await out.send_text("b")
            ...         source = ChannelSource(ch.reader)
            ...         return [text async for text in source.messages()], await source.read_all()
            >>> asyncio.run(demo())
            (['a', 'b'], b'data')
        """
        while True:
            while self._texts:
                yield self._pop_text()
            if not self._eof:
                self._check_held()
            if self._eof or not await self._fill(text_ends=True):
                while self._texts:
                    yield self._pop_text()
                return

    async def next_message(self) -> str | None:
        """The next text message, or ``None`` at EOF (binary data meanwhile is buffered, up to ``buffer_limit``
        bytes: then :class:`LimitExceededError`).

        Example:
            >>> import asyncio
            >>> from iii_channels import sink
            >>> from iii_engine.testing import local_channel
            >>> async def demo() -> tuple[object, ...]:
            ...     async with local_channel() as ch:
            ...         async with sink(ch.writer) as out:
            ...             await out.send_text('{"name": "a.txt"}')
            ...             await out.write(b"data")
            ...         source = ChannelSource(ch.reader)
            ...         return await source.next_message(), await source.read_all(), await source.next_message()
            >>> asyncio.run(demo())
            ('{"name": "a.txt"}', b'data', None)
        """
        while not self._texts and not self._eof:
            self._check_held()
            # The fill that meets the end may set a text aside on its way: it is the answer, not the end.
            if not await self._fill(text_ends=True):
                break
        return self._pop_text() if self._texts else None

    def _check_held(self) -> None:
        """Before a wait for text fills the buffer further: over ``buffer_limit`` it stops (checked before each
        fill, so a caller that goes on after the error does not grow it either; at most one message past it)."""
        if len(self._buffer) > self._buffer_limit:
            raise LimitExceededError(self._buffer_limit,
                                     "the binary data held unread while waiting for a text message (buffer_limit)")

    def _pop_text(self) -> str:
        text = self._texts.popleft()
        self._text_at.popleft()
        self._text_held -= len(text)
        return text


def _check_size(value: object, name: str) -> int:
    """``value`` as a byte count, for one that is not a plain ``int`` (callers check ``type(value) is int`` first:
    a line read's cost): an integer of another type (``numpy.int64``, anything with ``__index__``) as its
    ``int``; ``TypeError`` naming ``name`` for anything else, a bool too. Why: ``read(1.5)`` failed deep inside
    with a slice error, ``readline(limit=1.5)`` raised ``LimitExceededError``.

    Example:
        >>> _check_size(1.5, "n")
        Traceback (most recent call last):
        ...
        TypeError: n must be a number of bytes (int), got 1.5
    """
    if not isinstance(value, bool):
        with contextlib.suppress(TypeError):
            return operator.index(value)  # type: ignore[arg-type]
    raise TypeError(f"{name} must be a number of bytes (int), got {value!r:.80}")


async def _release_writer(reader: ChannelReader) -> None:
    """Tell the writer at once that nothing (more) will be read: attach the reader if it never did, then close.

    Closing a reader that never attached reaches nobody, and its writer would wait on backpressure until the
    channel's attach timeout (300 s on our engine). Errors are swallowed: this runs on a failure path.
    """
    with contextlib.suppress(Exception):
        # The SDK's reader has no public "attach"; reading would block until the writer sends something.
        await asyncio.wait_for(reader._ensure_connected(), _RELEASE_ATTACH_S)
    with contextlib.suppress(Exception):
        await reader.close_async()


def source(reader: ChannelReader, **options: Any) -> ChannelSource:
    """Shorthand for :class:`ChannelSource`.

    Example:
        >>> import asyncio, json
        >>> from iii_channels import sink
        >>> from iii_engine.testing import local_channel
        >>> async def demo() -> list[Any]:
        ...     async with local_channel() as ch:
        ...         async def write() -> None:
        ...             async with sink(ch.writer) as out:
        ...                 await out.write(b'{"n": 1}\\n{"n": 2}\\n')
        ...         src = source(ch.reader, require_trailer=True)
        ...         _, records = await asyncio.gather(write(), src.read_all())
        ...         return [json.loads(line) for line in records.splitlines()] + [src.verified]
        >>> asyncio.run(demo())
        [{'n': 1}, {'n': 2}, True]
    """
    return ChannelSource(reader, **options)
