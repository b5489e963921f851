"""Request and response bodies of a ``Content-Encoding`` (gzip, deflate) decoded whole or not at all, within a bound.

Why not aiohttp's decoding: it takes a gzip body that stops before its end (no last block, no checksum) for a whole
one, so a body cut off part-way passed for a complete one, as a function's result (the engine's client) or as a
request's body (its REST API).

Example:
    >>> decoder = BodyDecoder.for_encoding("gzip")
    >>> import gzip
    >>> packed = gzip.compress(b'{"ok": true}')
    >>> decoder.feed(packed[:9], room=100) + decoder.feed(packed[9:], room=100) + decoder.finish()
    b'{"ok": true}'
    >>> decoder = BodyDecoder.for_encoding("gzip")
    >>> decoder.feed(packed[:-8], room=100)
    b'{"ok": true}'
    >>> decoder.finish()
    Traceback (most recent call last):
    ...
    iii_engine.modules.http.content_coding.BodyError: its gzip stream ends before its end (cut off)
"""

from __future__ import annotations

import zlib
from typing import Any, Final

_IDENTITY: Final = frozenset({"", "identity"})
MAX_EMPTY_GZIP_MEMBERS: Final = 1024
"""Gzip members decoding to nothing one body may hold (RFC 1952 allows any number; they cost a decompressor each
and never reach the decoded bound): past it, refused. Members with content are bounded by the decoded size."""


def wire_bound(limit: int) -> int:
    """The most bytes as sent that a body of at most ``limit`` decoded bytes may take: no legitimate encoding takes
    much more (deflate's stored blocks add 5 bytes per 64 KiB), while empty gzip members or deflate blocks decode to
    nothing and would never reach a bound on decoded bytes.

    Example:
        >>> wire_bound(4 * 1024 * 1024)
        4784128
    """
    return limit + limit // 8 + 64 * 1024


class BodyError(Exception):
    """A body that cannot be read whole: cut off, not the encoding it claims, or one the engine does not
    decode. The message says which, without the body."""



class BodyDecoder:
    """Decodes one body of a ``Content-Encoding`` (gzip, x-gzip, deflate, or none), within a bound on what
    it gives out, and tells a stream that stops before its end from a whole one.

    Example:
        >>> BodyDecoder.for_encoding("br")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        iii_engine.modules.http.content_coding.BodyError: its Content-Encoding 'br' is not one the engine decodes ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._inflate: Any = None  # zlib's decompress object: made at the first bytes (deflate's form is told there)
        self._head = b""  # deflate's first byte, until the second tells zlib's wrapper from a raw stream
        self._empty_members = 0
        self._member_out = 0  # bytes the current gzip member decoded to so far

    @classmethod
    def for_encoding(cls, header: str | None) -> BodyDecoder:
        """The decoder for a ``Content-Encoding`` header's value (``None``: not encoded; several header lines are
        given joined with ``", "``, as a list, which the engine does not decode)."""
        kind = (header or "").strip().lower()
        if kind in _IDENTITY:
            return cls("identity")
        if kind in ("gzip", "x-gzip", "deflate"):
            return cls("deflate" if kind == "deflate" else "gzip")
        shown = header if header is not None and len(header) <= 40 else f"{(header or '')[:40]}…"
        raise BodyError(f"its Content-Encoding {shown!r} is not one the engine decodes (gzip, deflate)")

    def feed(self, data: bytes, room: int) -> bytes:
        """The decoded bytes ``data`` brings; at most ``room + 1`` of them, so that a body over its bound is known
        as soon as it passes it (a compressed bomb is never inflated whole)."""
        if self.kind == "identity":
            return data
        if self._inflate is None:
            if self.kind == "deflate" and len(self._head) + len(data) < 2:
                self._head += data
                return b""
            data, self._head = self._head + data, b""
            self._inflate = zlib.decompressobj(self._wbits(data))
        out = bytearray()
        while data:
            if self._inflate.eof:
                if self.kind == "gzip":
                    # zero bytes after a member: padding, as gzip(1) and Python's gzip module take it (refused before
                    # as "not valid gzip data")
                    data = data.lstrip(b"\0")
                    if not data:
                        break
                data = self._next_member(data)
            try:
                piece = self._inflate.decompress(data, max(room - len(out), 0) + 1)
                self._member_out += len(piece)
                out += piece
            except zlib.error as exc:
                raise BodyError(f"it is not valid {self.kind} data ({exc})") from None
            if len(out) > room:
                return bytes(out)  # past the bound: the caller stops here
            data = self._inflate.unused_data if self._inflate.eof else b""
        return bytes(out)

    def finish(self, *, empty_is_whole: bool = True) -> bytes:
        """What is left once the body's last byte came; :class:`BodyError` if the stream stopped before its end.
        ``empty_is_whole``: whether no bytes at all is a whole (empty) body, as when its length said 0, not a body
        whose connection ended before any of its stream came."""
        if self.kind == "identity":
            return b""
        if self._inflate is None and not self._head:
            if not empty_is_whole:
                raise BodyError(f"its connection ended before any of its {self.kind} stream came")
            return b""  # an empty body: nothing was encoded
        if self._inflate is None or not self._inflate.eof:
            raise BodyError(f"its {self.kind} stream ends before its end (cut off)")
        return b""

    def _wbits(self, data: bytes) -> int:
        if self.kind == "gzip":
            return 16 + zlib.MAX_WBITS
        # RFC 9110's deflate is zlib's format; some servers send the raw stream: told by the zlib header's check
        first, second = data[0], data[1]
        return zlib.MAX_WBITS if first & 0x0F == 8 and (first << 8 | second) % 31 == 0 else -zlib.MAX_WBITS

    def _next_member(self, data: bytes) -> bytes:
        """Bytes after a whole stream: gzip may hold several members one after the other (RFC 1952); a deflate
        stream is one."""
        if self.kind != "gzip":
            raise BodyError("it holds bytes after the end of its deflate stream")
        if not self._member_out:
            self._empty_members += 1
            if self._empty_members > MAX_EMPTY_GZIP_MEMBERS:  # they decode to nothing: the output bound never trips
                raise BodyError(f"it holds more than {MAX_EMPTY_GZIP_MEMBERS} empty gzip members")
        self._member_out = 0
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        return data
