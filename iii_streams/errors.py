"""The errors every ``iii_streams`` store raises: one :class:`StreamError` base, the backend's exception kept.

A store never lets a driver's exception (redis-py, SQLAlchemy, asyncpg, aiosqlite, ``OSError``) escape: it raises
the matching :class:`StreamError` subclass ``from`` it, so ``exc.__cause__`` is the original. Caller mistakes
(an invalid update op, data that is not JSON) stay ``ValueError`` / ``TypeError``, as in ``iii.stream_ops``.

- ``StreamError``: base of everything below
- ``StreamUnavailableError``: the server cannot be reached (connection refused or lost; ``applied`` tells a write's
  outcome)
- ``PoolExhaustedError``: every pooled connection stayed busy past the pool's wait limit (the command was not sent)
- ``StreamTimeoutError``: an operation did not finish within its ``timeout`` (``applied`` tells a write's outcome)
- ``StreamBackendError``: the backend refused the operation for another reason (``applied`` tells a write's
  outcome where the store knows it)
- ``StreamFileLostError``: a ``StreamBackendError``: ``SQLStream``'s SQLite file was deleted, replaced or truncated
  under the open store
- ``StreamDataError``: a stored value is not JSON (written by something else)
- ``StreamTooLargeError``: a group's items are more bytes of JSON than a read's ``max_bytes`` (``list_text``)
- ``StreamValueTooLargeError``: an update's new value is more bytes of JSON than its ``max_bytes`` (nothing written)
- ``UpdateConflictError``: an optimistic update lost the race too many times in a row
- ``SchemaMissingError``: the SQL database has no stream table yet
- ``StreamClosedError``: the store was closed (``applied`` tells a write's outcome)

Example:
    >>> try:
    ...     raise StreamUnavailableError("redis at 127.0.0.1:1 is unreachable") from ConnectionRefusedError(111)
    ... except StreamError as exc:
    ...     print(type(exc).__name__, "|", exc, "|", type(exc.__cause__).__name__)
    StreamUnavailableError | redis at 127.0.0.1:1 is unreachable | ConnectionRefusedError
    >>> check_timeout(0)
    Traceback (most recent call last):
    ...
    ValueError: timeout must be a positive number of seconds or None, got 0
"""

from __future__ import annotations

import math
from typing import Any, Final, Self

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.errors import PicklesByState
from iii.protocol.codec import TOO_DEEP, UnpairedSurrogateError, dumps_within
from iii.wire import MAX_JSON_DEPTH

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is a dependency; iii.wire works without it
    _orjson = None  # type: ignore[assignment]

__all__ = [
    "MAX_VALUE_DEPTH",
    "SEND_ROOM",
    "VALUE_ROOM",
    "PoolExhaustedError",
    "SchemaMissingError",
    "StreamBackendError",
    "StreamClosedError",
    "StreamDataError",
    "StreamError",
    "StreamFileLostError",
    "StreamTimeoutError",
    "StreamTooLargeError",
    "StreamUnavailableError",
    "StreamValueTooLargeError",
    "UpdateConflictError",
    "check_list_bytes",
    "check_names",
    "check_text",
    "check_timeout",
    "check_value_bytes",
    "closed_unapplied",
    "json_size",
    "unreadable_value",
    "utf8_size",
    "why_unreadable",
]


class StreamError(Exception):
    """Base class of every error a stream store raises for a backend problem."""


class _WriteOutcome(StreamError):
    """An error a write can end with whose outcome the store may know: ``applied`` and :meth:`with_outcome`."""

    applied: bool | None = None

    def with_outcome(self, sent: bool) -> Self:
        """This error (a write's lost or refused connection, the store's close, a statement the database refused)
        restated with the write's outcome, of the same class (a :class:`PoolExhaustedError` stays one):
        ``applied=None`` and "may have been applied" once the write (its script, its commit) had been sent,
        ``applied=False`` and "not applied" before; one already known not applied (refused at its start) keeps its
        words. The caller raises it from the driver's exception.

        Why: a write whose connection was cut said only "unreachable"; under repeated ``CLIENT KILL`` 10 of 150
        failed Redis increments had been applied, and PostgreSQL commits whose answer was lost were all committed.
        And a write whose batch SQLite refused before its commit (disk full) said "may have been applied" (1,088 of
        1,088, none of them in the file).

        Example:
            >>> error = StreamUnavailableError("S.set: lost").with_outcome(sent=True)
            >>> str(error), error.applied
            ('S.set: lost; the write had been sent and may have been applied (outcome unknown)', None)
            >>> error = PoolExhaustedError("S.set: pool exhausted").with_outcome(sent=False)
            >>> type(error).__name__, str(error), error.applied
            ('PoolExhaustedError', 'S.set: pool exhausted; the write was not sent and not applied', False)
        """
        if self.applied is False:  # refused at its start: its words say so already
            message, applied = str(self), False
        elif sent:
            message, applied = f"{self}; the write had been sent and may have been applied (outcome unknown)", None
        else:
            message, applied = f"{self}; the write was not sent and not applied", False
        error = type(self)(message)
        error.applied = applied
        return error


class StreamUnavailableError(_WriteOutcome, ConnectionError):
    """The backend cannot be reached (connection refused, reset or lost).

    ``applied`` tells a write's outcome, as :class:`StreamTimeoutError`'s does: ``False`` when the connection failed
    before the write was sent to be committed (nothing was applied), ``None`` when it is unknown (the write had been
    sent, or its commit, when the connection was lost: it may have been applied); the message says the same. Reads
    leave it ``None``. Nothing is ever half-applied: a write is applied whole or not at all.
    """


class PoolExhaustedError(StreamUnavailableError):
    """Every pooled connection stayed busy for longer than the pool's wait limit.

    Raised while waiting for a connection, before the command that waited was sent: that command did nothing. (An
    operation of several commands may have applied those that got a connection before it.)
    """


class StreamTimeoutError(StreamError, TimeoutError):
    """An operation did not finish within its timeout.

    ``applied`` tells a write's outcome: ``False`` when the write was withdrawn before it was sent to be committed
    (it will not be applied), ``None`` when it is unknown (it had been sent: it may have been applied, or may still
    be); the message says the same. Reads, and stores that cannot tell, leave it ``None``.
    """

    applied: bool | None = None


class StreamBackendError(_WriteOutcome):
    """The backend refused the operation (a server error that is neither unavailability nor a timeout).

    ``applied`` tells a write's outcome where the store knows it: ``False`` when the database refused it (or the
    batch it was in) before its commit was sent, ``None`` once it had been sent; ``SQLStream``'s check of its SQLite
    file, :class:`StreamFileLostError`: ``True`` when the write was committed before the file was found gone,
    ``False`` when it was not; else ``None``.
    """


class StreamFileLostError(PicklesByState, StreamBackendError):
    """``SQLStream``'s SQLite database file was found deleted, renamed away, replaced or truncated under the open
    store: this operation and every later one fail so, naming the path. ``problem`` says what was found,
    ``committed`` what became of a write committed just before the check (``applied``: ``applied_if_committed``),
    ``advice`` what to do; ``applied`` tells a write's outcome, as :class:`StreamBackendError`'s does.

    Example:
        >>> error = StreamFileLostError("S: the file is gone", "it went with the file", "reopen the store", True)
        >>> str(error), isinstance(error, StreamBackendError)
        ('S: the file is gone; nothing was read or written: reopen the store', True)
    """

    def __init__(self, problem: str, committed: str, advice: str, applied_if_committed: bool | None,
                 outcome: str = "nothing was read or written") -> None:
        super().__init__(f"{problem}; {outcome}: {advice}")
        self.problem, self.committed, self.advice = problem, committed, advice
        self.applied_if_committed = applied_if_committed

    def again(self) -> StreamFileLostError:
        """The same error, to raise for another operation (the store raises one of its own for each).

        Example:
            >>> error = StreamFileLostError("S: the file is gone", "it went with the file", "reopen the store", True)
            >>> again = error.again()
            >>> again is not error, str(again) == str(error)
            (True, True)
        """
        return StreamFileLostError(self.problem, self.committed, self.advice, self.applied_if_committed)

    def with_outcome(self, sent: bool) -> Self:
        """:meth:`for_write` (this error's outcome is told by what the check found, not by the driver).

        Example:
            >>> error = StreamFileLostError("S: the file is gone", "it went with the file", "reopen the store", True)
            >>> error.with_outcome(sent=False).applied
            False
        """
        return self.for_write(sent)  # type: ignore[return-value]  # (the class is final in use)

    def for_write(self, sent: bool) -> StreamFileLostError:
        """Restated for one write: committed (``sent``: its commit or statement was sent, and it succeeded, or this
        error would not be) or not applied.

        Example:
            >>> error = StreamFileLostError("S: the file is gone", "it went with the file", "reopen the store", True)
            >>> for sent in (True, False):
            ...     restated = error.for_write(sent)
            ...     print(restated.applied, "|", restated)
            True | S: the file is gone; it went with the file: reopen the store
            False | S: the file is gone; this write was not applied: reopen the store
        """
        if not sent:
            error = StreamFileLostError(self.problem, self.committed, self.advice, self.applied_if_committed,
                                        "this write was not applied")
            error.applied = False
            return error
        error = StreamFileLostError(self.problem, self.committed, self.advice, self.applied_if_committed,
                                    self.committed)
        error.applied = self.applied_if_committed
        return error


class StreamDataError(StreamError, ValueError):
    """A stored value is not JSON, or not UTF-8 text (written by something else than a stream store).

    ``applied`` tells the outcome of a write that met it (:meth:`for_write`); reads leave it ``None``.
    """

    applied: bool | None = None

    def for_write(self, applied: bool) -> StreamDataError:
        """This error restated for a write of the item: ``applied`` ``False`` when the write was refused for it
        (the SQL stores: its old value cannot be told, and the value is kept for whoever repairs it), ``True`` when
        it was stored anyway (Redis's ``set`` and ``delete``, which replace the value and read the old one in one
        step): only the old value is missing from the answer.

        Example:
            >>> error = StreamDataError("item 'i': its stored value is not JSON").for_write(applied=True)
            >>> print(error)
            item 'i': its stored value is not JSON; the write was applied, its old value could not be returned
            >>> error.applied
            True
        """
        done = "applied, its old value could not be returned" if applied else "not applied"
        error = StreamDataError(f"{self}; the write was {done}")
        error.applied = applied
        return error


def unreadable_value(stream_name: str, group_id: str, item_id: str, raw: str | bytes, exc: ValueError
                     ) -> StreamDataError:
    """The error for an item whose stored value ``raw`` failed to parse with ``exc``.

    Example:
        >>> print(unreadable_value("s", "g", "i", b'"\\xff"', ValueError("bad")))
        item 'i' of group 'g' of stream 's': its stored value is not UTF-8 text (invalid start byte at byte 1), \
written by something else than a stream store
    """
    return StreamDataError(f"item {item_id!r} of group {group_id!r} of stream {stream_name!r}: its stored value "
                           f"{why_unreadable(raw, exc)}, written by something else than a stream store")


def why_unreadable(raw: str | bytes, exc: ValueError) -> str:
    """What is wrong with a stored value ``raw`` that failed to parse with ``exc``: not UTF-8 (where), or not JSON.

    Example:
        >>> why_unreadable(b"[1,", ValueError("unexpected end of data"))
        'is not JSON (unexpected end of data)'
    """
    try:
        if isinstance(raw, bytes):
            raw.decode()
    except UnicodeDecodeError as bad:
        return f"is not UTF-8 text ({bad.reason} at byte {bad.start})"
    return f"is not JSON ({exc})"


class StreamTooLargeError(PicklesByState, StreamError, ValueError):
    """A group's items are more bytes of JSON than a read's ``max_bytes`` allows (:meth:`Backend.list_text`); the
    read gave up before building the whole text. ``size``: the UTF-8 bytes found (at least; a store that counts
    characters before building says so), ``max_bytes``: the bound.

    Example:
        >>> exc = StreamTooLargeError("s", "g", 10, 4)
        >>> str(exc), exc.size, exc.max_bytes
        ("the items of group 'g' of stream 's' are 10 or more bytes of JSON, over the read's max_bytes (4)", 10, 4)
    """

    def __init__(self, stream_name: str, group_id: str, size: int, max_bytes: int) -> None:
        super().__init__(f"the items of group {group_id!r} of stream {stream_name!r} are {size} or more bytes of "
                         f"JSON, over the read's max_bytes ({max_bytes})")
        self.size = size
        self.max_bytes = max_bytes


class StreamValueTooLargeError(PicklesByState, StreamError, ValueError):
    """An update refused because the value it would leave is more UTF-8 bytes of JSON than its ``max_bytes``
    (``update(..., max_bytes=)`` / ``update_parsed(..., max_bytes=)``): nothing was written for it and no event was
    published (``applied`` is ``False``). ``size``: the new value's bytes, ``max_bytes``: the bound.

    Example:
        >>> exc = StreamValueTooLargeError("the updated value", 10, 4)
        >>> str(exc), exc.size, exc.max_bytes, exc.applied
        ("the updated value is 10 bytes of JSON, over the update's max_bytes (4); nothing was written", 10, 4, False)
    """

    applied: bool | None = False

    def __init__(self, what: str, size: int, max_bytes: int) -> None:
        super().__init__(f"{what} is {size} bytes of JSON, over the update's max_bytes ({max_bytes}); "
                         "nothing was written")
        self.what = what
        self.size = size
        self.max_bytes = max_bytes


def check_value_bytes(text: str, max_bytes: int | None, what: str = "the updated value") -> None:
    """Raise :class:`StreamValueTooLargeError` when ``text`` (a new value's JSON, as the store encoded it) is over
    ``max_bytes`` UTF-8 bytes (``None``: no bound). ASCII text is measured without encoding it.

    Example:
        >>> check_value_bytes('"ab"', 4)
        >>> try:
        ...     check_value_bytes('"é"', 3)
        ... except StreamValueTooLargeError as exc:
        ...     print(exc.size, exc.max_bytes)
        4 3
    """
    if max_bytes is not None and len(text) > max_bytes // 4 and (size := utf8_size(text)) > max_bytes:
        raise StreamValueTooLargeError(what, size, max_bytes)


class UpdateConflictError(StreamError, RuntimeError):
    """An optimistic ``update`` lost the race more than its attempt limit allows, in a row."""


class SchemaMissingError(StreamError, RuntimeError):
    """The SQL database has no stream table yet (run ``iii-streams migrate URL``)."""


class StreamClosedError(_WriteOutcome, RuntimeError):
    """The store was closed (``aclose()``) before or while the operation ran.

    ``applied`` tells a write's outcome, as :class:`StreamUnavailableError`'s does: ``False`` when the operation was
    refused at its start or the write had not been sent when the close cut it (nothing was applied), ``None`` when
    it had been sent (the close cut the connection after the command or commit was sent: it may have been applied);
    the message says the same. Reads cut by the close leave it ``None``.

    Example:
        >>> error = StreamClosedError("S is closed").with_outcome(sent=False)
        >>> str(error), error.applied
        ('S is closed; the write was not sent and not applied', False)
    """


def closed_unapplied(where: str) -> StreamClosedError:
    """The error of an operation a closed store refused (``where``: ``"SQLStream.get"``): nothing was applied.

    Example:
        >>> error = closed_unapplied("SQLStream.get")
        >>> str(error), error.applied
        ('SQLStream.get: the store is closed; nothing was applied', False)
    """
    refused = StreamClosedError(f"{where}: the store is closed; nothing was applied")
    refused.applied = False
    return refused


def utf8_size(text: str) -> int:
    """The UTF-8 bytes of ``text`` (ASCII, the common case, without encoding it).

    Example:
        >>> utf8_size("ab"), utf8_size("é")
        (2, 2)
    """
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def check_list_bytes(input: Any, size: int, max_bytes: int | None) -> None:
    """:class:`StreamTooLargeError` when ``size`` bytes of a ``list_text`` of ``input`` (a ``StreamListInput``) are
    over ``max_bytes`` (``None``: no bound).

    Example:
        >>> from iii.stream import StreamListInput
        >>> check_list_bytes(StreamListInput(stream_name="s", group_id="g"), 4, 4)
        >>> try:
        ...     check_list_bytes(StreamListInput(stream_name="s", group_id="g"), 5, 4)
        ... except StreamTooLargeError as exc:
        ...     print(exc.size, exc.max_bytes)
        5 4
    """
    if max_bytes is not None and size > max_bytes:
        raise StreamTooLargeError(input.stream_name, input.group_id, size, max_bytes)


def check_timeout(timeout: float | None, name: str = "timeout") -> float | None:
    """``timeout`` if it is ``None`` or a positive, finite number of seconds; a ``ValueError`` naming it otherwise.

    Example:
        >>> check_timeout(2), check_timeout(None)
        (2.0, None)
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < math.inf:
        raise ValueError(f"{name} must be a positive number of seconds or None, got {timeout!r}")
    return float(timeout)


def check_text(text: str, what: str) -> str:
    """``text`` if UTF-8 can encode it; a ``ValueError`` naming ``what`` and the first unpaired surrogate otherwise.

    Python strings (and JSON's ``\\ud800`` escapes) can hold an unpaired surrogate that no store can encode: refused
    before a write is queued, such a text fails its own caller alone instead of the batch it would share.

    Example:
        >>> check_text("héllo", "data")
        'héllo'
        >>> check_text("a\\ud800", "item")
        Traceback (most recent call last):
        ...
        ValueError: item holds an unpaired surrogate '\\ud800' (character 1): not valid Unicode, no store can encode it
    """
    if text.isascii():  # O(1) in CPython: the common case costs nothing
        return text
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} holds an unpaired surrogate {text[exc.start]!r} (character {exc.start}): not valid "
                         "Unicode, no store can encode it") from None
    return text


VALUE_ROOM: Final = 3
"""The levels a stored value's change event and its delivery add: the event wraps it in 2
(``{"event": {"data": value}}``), the call a stream trigger makes with the event in 1 more."""
SEND_ROOM: Final = VALUE_ROOM + 1
"""The levels around a ``send``'s data: its custom event wraps it in 3 (``{"event": {"event": {"data": data}}}``),
a stream trigger's call in 1 more."""
MAX_VALUE_DEPTH: Final = MAX_JSON_DEPTH - VALUE_ROOM
"""The deepest nesting a store keeps: its change events, and the calls of the stream triggers they fire, stay within
the :data:`~iii.wire.MAX_JSON_DEPTH` levels JSON is read with (watchers over Redis or PostgreSQL, the engine's
socket clients, the workers a trigger calls)."""


def _too_deep(what: str, room: int) -> str:
    return (f"{what} nests deeper than {MAX_JSON_DEPTH - room} levels: the events it goes into and the trigger calls "
            f"they make add {room}, and JSON is read {MAX_JSON_DEPTH} deep at most")


def json_text(value: Any, what: str, *, room: int = VALUE_ROOM) -> str:
    """``value`` as JSON text (:func:`iii.wire.dumps`), nested at most ``room`` levels less than JSON is read with
    (:data:`MAX_VALUE_DEPTH` by default; 0 for an event itself); an unpaired surrogate in it, or deeper nesting, is
    a ``ValueError`` naming ``what``, as :func:`check_text` words it (``dumps`` refuses such text without knowing the
    field).

    Example:
        >>> json_text({"a": "é"}, "data")
        '{"a":"é"}'
        >>> try:
        ...     json_text({"a": "\\ud800"}, "data")
        ... except ValueError as exc:
        ...     print(str(exc)[:57])
        data holds an unpaired surrogate '\\ud800' (character 6 of
        >>> deep: Any = 0
        >>> for _ in range(MAX_VALUE_DEPTH + 1):
        ...     deep = [deep]
        >>> try:
        ...     json_text(deep, "data")
        ... except ValueError as exc:
        ...     print(str(exc)[:56])
        data nests deeper than 125 levels: the events it goes in
    """
    try:
        return dumps_within(value, MAX_JSON_DEPTH - room)
    except UnpairedSurrogateError as exc:  # (its position counts the wrapping lists dumps_within puts around it)
        raise ValueError(f"{what} holds an unpaired surrogate {exc.char!r} (character {exc.position - room} of its "
                         "JSON text): not valid Unicode, no store can encode it") from None
    except ValueError as exc:
        if str(exc) == TOO_DEEP:  # (a NaN's error is raised as it is)
            raise ValueError(_too_deep(what, room)) from None
        raise


def json_size(value: Any, what: str) -> int:
    """The UTF-8 bytes of ``value``'s JSON text (:func:`json_text`), measured on orjson's bytes when it writes
    ``value`` (the text :func:`iii.wire.dumps` makes of JSON's own kinds): no ``str`` made and none encoded again
    (a 1 MB non-ASCII value: ~40 us instead of ~0.8 ms). Else ``json_text``'s, which raises what it raises. A
    value orjson writes and ``json_text`` refuses (NaN, nesting past :data:`MAX_VALUE_DEPTH`) is measured, not
    refused: the store's own encode refuses it.

    Example:
        >>> json_size({"a": "é"}, "data"), utf8_size(json_text({"a": "é"}, "data"))
        (10, 10)
        >>> json_size({"n": 2**70}, "data")  # orjson writes no big integer: json_text's
        28
    """
    if _orjson is not None:
        try:
            return len(_orjson.dumps(value))
        except TypeError:  # (big integers, keys that are not text, unpaired surrogates, 255+ levels)
            pass
    return utf8_size(json_text(value, what))


def check_names(stream_name: str, group_id: str, item_id: str | None = None, *, nul: bool = True) -> None:
    """Refuse names no store can hold (unpaired surrogates; NUL too when ``nul`` is false): a ``ValueError``
    naming the field.

    Example:
        >>> check_names("s", "g\\x00", "i", nul=False)
        Traceback (most recent call last):
        ...
        ValueError: group_id 'g\\x00' holds a NUL character, which PostgreSQL text cannot store
    """
    for what, name in (("stream_name", stream_name), ("group_id", group_id), ("item_id", item_id)):
        if name is None:
            continue
        if not name.isascii():
            check_text(name, what)
        if not nul and "\x00" in name:
            raise ValueError(f"{what} {name[:200]!r} holds a NUL character, which PostgreSQL text cannot store")
