"""BodyDecoder: zero bytes after a gzip member are padding, as gzip(1) and Python's gzip module take them (the engine
refused such a body as "not valid gzip data"); padding is no way around the checks for a stream cut off or for bytes
that are not gzip."""

from __future__ import annotations

import gzip

import pytest

from iii_engine.modules.http.content_coding import BodyDecoder, BodyError

DATA = bytes(range(256)) * 40


def _decode(pieces: list[bytes]) -> bytes:
    decoder = BodyDecoder.for_encoding("gzip")
    out = b"".join(decoder.feed(piece, 1 << 20) for piece in pieces)
    return out + decoder.finish()


def _split(body: bytes, size: int) -> list[bytes]:
    return [body[i:i + size] for i in range(0, len(body), size)]


@pytest.mark.parametrize("size", [1, 7, 512, 1 << 20])
@pytest.mark.parametrize("padding", [1, 8, 1000])
def test_zero_padding_after_a_member_is_taken_as_gzip_takes_it(size: int, padding: int) -> None:
    body = gzip.compress(DATA) + b"\0" * padding
    assert gzip.decompress(body) == DATA
    assert _decode(_split(body, size)) == DATA


@pytest.mark.parametrize("size", [1, 9, 1 << 20])
def test_padding_between_members(size: int) -> None:
    body = gzip.compress(DATA) + b"\0" * 5 + gzip.compress(b"second") + b"\0" * 3
    assert _decode(_split(body, size)) == gzip.decompress(body) == DATA + b"second"


def test_a_member_cut_off_after_padding_is_still_cut_off() -> None:
    with pytest.raises(BodyError, match="ends before its end"):
        _decode([gzip.compress(DATA) + b"\0\0" + gzip.compress(b"second")[:-4]])


def test_bytes_after_padding_that_are_not_gzip_are_refused() -> None:
    with pytest.raises(BodyError, match="not valid gzip data"):
        _decode([gzip.compress(DATA) + b"\0\0" + b"garbage!"])


def test_padding_alone_is_not_a_gzip_body() -> None:
    with pytest.raises(BodyError, match="not valid gzip data"):
        _decode([b"\0" * 10])
