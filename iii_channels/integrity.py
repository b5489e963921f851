"""The integrity trailer: byte count and SHA-256 sent as the last text message before close.

It lets a reader detect truncation even where the engine cannot signal an abort (the production engine turns a
writer crash into a normal end of stream).

Example:
    >>> digest = Digest()
    >>> digest.update(b"hello")
    >>> text = digest.trailer()
    >>> _parse_trailer(text) == (5, digest.hexdigest())
    True
    >>> _parse_trailer('{"other": 1}') is None
    True
    >>> _parse_trailer('{"iii_channels_trailer": 1, "bytes": 5')
    Traceback (most recent call last):
    ...
    ValueError: malformed integrity trailer: '{"iii_channels_trailer": 1, "bytes": 5'
"""

from __future__ import annotations

import hashlib
import json

TRAILER_KEY = "iii_channels_trailer"
_PREFIX = '{"' + TRAILER_KEY + '"'


class Digest:
    """Running byte count and SHA-256 of a stream.

    Example:
        >>> digest = Digest()
        >>> for chunk in (b"hel", b"lo"):
        ...     digest.update(chunk)
        >>> digest.count, digest.hexdigest()[:12]
        (5, '2cf24dba5fb0')
    """

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.count = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Account for ``data``.

        Example:
            >>> digest = Digest()
            >>> digest.update(memoryview(b"abc")[1:])
            >>> digest.count
            2
        """
        self._sha.update(data)
        self.count += len(data)

    def hexdigest(self) -> str:
        """SHA-256 of everything so far, in hex.

        Example:
            >>> import hashlib
            >>> digest = Digest()
            >>> digest.update(b"data")
            >>> digest.hexdigest() == hashlib.sha256(b"data").hexdigest()
            True
        """
        return self._sha.hexdigest()

    def update_text(self, text: str) -> None:
        """Account for a text message, length first, so no two sequences of messages feed the same bytes.

        Example:
            >>> one, two = Digest(), Digest()
            >>> one.update_text("ab"); one.update_text("c")
            >>> two.update_text("a"); two.update_text("bc")
            >>> one.hexdigest() == two.hexdigest(), one.count
            (False, 7)
        """
        data = text.encode()
        self.update(b"%d:" % len(data))
        self.update(data)

    def trailer(self) -> str:
        """The trailer text message for everything so far.

        Example:
            >>> digest = Digest()
            >>> digest.update(b"hello")
            >>> digest.trailer()[:48]
            '{"iii_channels_trailer": 1, "bytes": 5, "sha256"'
        """
        return json.dumps({TRAILER_KEY: 1, "bytes": self.count, "sha256": self.hexdigest()})


def is_trailer(text: str) -> bool:
    """Whether a text message is a trailer (cheap prefix test).

    Example:
        >>> is_trailer(Digest().trailer()), is_trailer('{"iii_channels_file": {"name": "a.txt"}}')
        (True, False)
    """
    return text.startswith(_PREFIX)


def _parse_trailer(text: str) -> tuple[int, str] | None:
    """``(byte_count, sha256_hex)`` of a trailer message, ``None`` if ``text`` is not one, ``ValueError`` if it
    starts as one but is not a whole, well-formed trailer (cut short or altered: it must not read as "none")."""
    if not is_trailer(text):
        return None
    try:
        body = json.loads(text)
        count, sha = body["bytes"], body["sha256"]
    except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: a peer's text nested deep
        count = sha = None
    # Any other string for the digest is left to the comparison, which fails it as a mismatch.
    if type(count) is not int or count < 0 or not isinstance(sha, str):
        raise ValueError(f"malformed integrity trailer: {text[:200]!r}")
    return count, sha
