"""The protocol codec: the one JSON policy, and control-socket frames turned into messages and back (no I/O).

Both sides use it: the SDK encodes what it sends and decodes what the engine sends; the embedded engine
decodes strictly (``strict=True``: required keys, UUIDs) so that it rejects exactly what the production engine
rejects, and reports *why* through :class:`WireError`.

Example:
    >>> from iii.iii_types import InvokeFunctionMessage
    >>> encode(InvokeFunctionMessage(function_id="f", data=None))
    '{"function_id":"f","data":null,"type":"invokefunction"}'
    >>> decode('{"type":"ping"}')
    Ping()
"""

from __future__ import annotations

import datetime
import enum
import gc
import json
import math
import re
import uuid
from collections.abc import Iterator
from itertools import chain, compress, filterfalse, islice, repeat
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from ..errors import PicklesByState
from ..iii_types import (
    InvocationResultMessage,
    InvokeFunctionMessage,
    MessageType,
    RegisterServiceMessage,
    RegisterTriggerMessage,
)
from .messages import MODELS as _MODELS
from .messages import TELEMETRY_PREFIXES, Decoded, Ping, Pong, Telemetry

try:  # orjson is optional: ~3x faster, but it cannot hold integers beyond 64 bits
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only without orjson
    _orjson = None  # type: ignore[assignment]

__all__ = [
    "LOG_CLIP",
    "MAX_JSON_DEPTH",
    "MAX_LISTED_DEPTH",
    "TELEMETRY_PREFIXES",
    "TOO_DEEP",
    "Encoded",
    "Ping",
    "Pong",
    "Telemetry",
    "WireError",
    "clip",
    "decode",
    "decode_object",
    "dumps",
    "dumps_within",
    "encode",
    "fits_within",
    "is_uuid",
    "jsonable",
    "loads",
]


# A run of 19+ digits may be an integer beyond 64 bits, which orjson would silently turn into a float.
# Found by mapping digits to "0" and the rest to "." at C speed: several times faster than a regex scan.
_DIGITS_ONLY: Final = bytes(48 if 48 <= i <= 57 else 46 for i in range(256))
_LONG_RUN: Final = b"0" * 19
# The map of one translate pass over a frame of the hot paths: digits and "-" as "0", "[" and "{" as "[", the rest
# as ".". One pass answers both questions (how many brackets? a run that may be a big integer?) where three C passes
# did (the per-frame cost of the hot paths: 1.9 -> 1.2 us); only a run of 20 is then looked at closer (_has_big_int).
_MARKS: Final = bytes(48 if 48 <= i <= 57 or i == 45 else 91 if i in (91, 123) else 46 for i in range(256))
# A long digit run only costs exactness where it is an integer token orjson cannot hold: 20+ digits (2**64 - 1,
# the largest it keeps, has 20) or "-" and 19+ (below -2**63). Such a token stands after "[", ",", ":", JSON
# whitespace or at the start: those map to "s", digits and "-" to "0", so one needle finds both. A run in a string
# (OTLP's nanosecond timestamps "1700000000000000000"), after "." (a fraction) or in an exponent is left to orjson,
# whose floats are correctly rounded (the same as float()); three needles cost 5 ms more per 4 MiB of numbers.
_INT_MARKS: Final = bytes(48 if 48 <= i <= 57 or i == 45 else 115 if i in b"[{,: \t\n\r" else 46
                          for i in range(256))
_MAYBE_BIG: Final = b"0" * 20
_BIG_INT: Final = b"s" + _MAYBE_BIG
_SCAN_WINDOW: Final = 256 * 1024
# Documents from this size on whose values average this many bytes or more skip orjson (see _mostly_text).
_LEAN_PARSE_BYTES: Final = 512 * 1024
_LEAN_BYTES_PER_VALUE: Final = 64
# _mostly_text reads this many evenly spread samples of this many bytes: it only picks the parser (both are exact),
# and counting every byte of a few MiB cost more than parsing a long string does.
_TEXT_SAMPLES: Final = 16
_TEXT_SAMPLE_BYTES: Final = 4096

#: How deeply arrays/objects may nest in one JSON document (a frame's own object counts as one level). The same
#: on every path, decoding and encoding; serde_json (the production engine's parser) stops at 128 as well.
MAX_JSON_DEPTH: Final = 128
#: How much of a bad input a log line or error message quotes.
LOG_CLIP: Final = 200
_TOO_DEEP: Final = f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
TOO_DEEP: Final = _TOO_DEEP
"""The message of the ``ValueError`` for nesting past :data:`MAX_JSON_DEPTH` (:func:`loads`, :func:`dumps`)."""
MAX_LISTED_DEPTH: Final = MAX_JSON_DEPTH - 4
"""The deepest a registration's field (a function's metadata or formats, a trigger's config) nests: the engine's
listings of them (``engine::functions::list``, the functions-available push, ``engine::triggers::list``) put it 4
levels deeper, its frame, the result, the list and the entry."""
_NON_FINITE: Final = "NaN and Infinity are not valid JSON"
# Valid JSON nesting deeper than MAX_JSON_DEPTH opens and closes that many containers and one more: any shorter
# document needs no depth check at all.
_DEEP_MIN_LEN: Final = 2 * (MAX_JSON_DEPTH + 1)




class WireError(ValueError):
    """A frame that cannot be decoded, with what was wrong.

    ``message_type``, ``invocation_id`` and ``function_id`` are filled in as far as they could be read, so an
    engine can answer a broken ``invokefunction`` with an error result (docs/protocol.md#engine-improvements E1).
    """

    def __init__(
        self,
        reason: str,
        *,
        message_type: str | None = None,
        invocation_id: str | None = None,
        function_id: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message_type = message_type
        self.invocation_id = invocation_id
        self.function_id = function_id


def loads(raw: str | bytes) -> Any:
    """Parse JSON under the one policy every path shares (:data:`MAX_JSON_DEPTH`, no NaN/Infinity, exact ints).

    Raises :class:`ValueError` (never ``RecursionError``) naming what was wrong.

    Example:
        >>> loads('[12345678901234567890123]')
        [12345678901234567890123]
        >>> loads('[NaN]')
        Traceback (most recent call last):
        ...
        ValueError: NaN and Infinity are not valid JSON (at char 1)

    An escape of half a UTF-16 surrogate pair with no other half (``"\\ud800"``) stands for no character: it is an
    :class:`UnpairedSurrogateError` on every path, as orjson and serde_json (the production engine) refuse it.

        >>> try:
        ...     loads('["\\\\ud83d\\\\ude00", "\\\\ud800"]')
        ... except UnpairedSurrogateError as exc:
        ...     print(exc.char, exc.position)
        \\ud800 18
    """
    if _orjson is not None and len(raw) <= _SCAN_WINDOW:  # every frame of the hot paths: one parse, one scan
        try:
            parsed = _orjson.loads(raw)
        except _orjson.JSONDecodeError as exc:
            if "infinity" not in str(exc) or not _has_long_digits(raw):
                raise _decode_error(raw, exc) from None
            return _exact_loads(raw)
        data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
        marks = data.translate(_MARKS)
        if _MAYBE_BIG in marks and _has_big_int(data):
            return _exact_loads(raw)
        if len(raw) >= _DEEP_MIN_LEN and marks.count(b"[") > MAX_JSON_DEPTH and not _shallow(parsed):
            _check_tree(parsed)
        return parsed
    # A big document is scanned before it is parsed: one holding an integer orjson cannot keep exact is parsed
    # once, by the exact decoder, and so is one that is mostly text (see _mostly_text).
    if _orjson is None or _mostly_text(raw) or _has_big_int(raw):
        return _exact_loads(raw)
    try:
        value = _orjson.loads(raw)
    except _orjson.JSONDecodeError as exc:
        if "infinity" not in str(exc) or not _has_long_digits(raw):
            raise _decode_error(raw, exc) from None
        return _exact_loads(raw)  # a float beyond a double: the exact decoder names it
    if _more_brackets_than(raw, MAX_JSON_DEPTH) and not _shallow(value):
        _check_tree(value)
    return value


def _exact_loads(raw: str | bytes) -> Any:
    """:func:`loads` by the standard decoder: integers of any size stay exact."""
    text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8")
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise ValueError(_TOO_DEEP) from None
    # The standard decoder takes what orjson (the other path) and serde_json refuse: a lone surrogate escape, and in a
    # str document a lone surrogate character. Either gives a str no UTF-8 can hold, and the same frame would be taken
    # or refused depending on unrelated content (a big integer elsewhere, its size). Refused alike here: the decoded
    # strings are looked at where they are few for their text (mostly text, whose escapes can be dense), the text
    # read where they are many (numbers).
    held = _decoded_surrogate(value, len(text) >> 7)
    if held is not False:
        lone = _surrogate_char(raw) if isinstance(raw, str) else None
        if lone is None and (held or _may_hold_surrogate_escape(raw)):
            lone = _lone_escape(text)
        if lone is not None:
            raise lone
        if held:  # (a decoded surrogate comes from one of those two: never met)
            raise ValueError("JSON text holds an unpaired surrogate")
    if _more_brackets_than(raw, MAX_JSON_DEPTH) and not _shallow(value):
        _check_tree(value)
    return value


def fits_within(value: Any, levels: int) -> bool:
    """Whether ``value`` nests at most ``levels`` lists and objects deep (``levels`` at most
    :data:`MAX_JSON_DEPTH`); a value :func:`dumps` refuses for another reason (a NaN) raises its ``ValueError``.

    Example:
        >>> fits_within({"a": [1]}, 2), fits_within({"a": [1]}, 1), fits_within("[[[", 0)
        (True, False, True)
    """
    if not isinstance(value, dict | list | tuple):
        return True
    try:
        dumps_within(value, levels)
    except ValueError as exc:
        if str(exc) == _TOO_DEEP:
            return False
        raise
    return True


def dumps_within(value: Any, levels: int) -> str:
    """:func:`dumps` of ``value``, refused as nesting too deep (``ValueError``, :data:`TOO_DEEP`) when it nests
    more than ``levels`` lists and objects deep (``levels`` at most :data:`MAX_JSON_DEPTH`): it is encoded inside
    enough lists for the encode's own bound to check it, whose text is cut off after (no second encode).

    Example:
        >>> dumps_within({"a": [1]}, 2)
        '{"a":[1]}'
        >>> dumps_within({"a": [1]}, 1)
        Traceback (most recent call last):
        ...
        ValueError: JSON nested deeper than 128 levels
    """
    room = MAX_JSON_DEPTH - levels
    wrapped = value
    for _ in range(room):
        wrapped = [wrapped]
    text = dumps(wrapped)
    return text[room:len(text) - room] if room else text


def dumps(value: Any) -> str:
    """Serialise compactly to a JSON string, keeping key order and big integers, under the :func:`loads` policy.

    Raises :class:`ValueError` for NaN/Infinity or nesting deeper than :data:`MAX_JSON_DEPTH`, :class:`TypeError`
    for values that have no JSON form.

    Example:
        >>> dumps({"b": 1, "a": [2**70]})
        '{"b":1,"a":[1180591620717411303424]}'
        >>> dumps([float("nan")])
        Traceback (most recent call last):
        ...
        ValueError: NaN and Infinity are not valid JSON
    """
    if _orjson is not None and (_ORJSON_COUNTS_TUPLES or _json_kinds_only(value)):
        text = _orjson_dumps(value)
        if text is not None:
            return text
    return _json_dumps(value)


class Encoded:
    """A JSON value encoded once by :func:`dumps` (so within its policy), to be spliced into frames as it is: one
    large payload sent to many receivers (the engine's fan-outs: a publish to many subscribers, the functions-available
    push) is encoded once, not once per frame. It goes one level down into a frame's object, so it may nest one level
    less than a frame (``ValueError`` past it, :func:`dumps_within`), else the spliced frame would be one its receiver
    cannot read. :meth:`value` is the value it was made from, shared, not a copy: an in-process receiver must not
    change it (a copy for each one cost 7 MB of objects per delivery of a 1 MB message).

    Example:
        >>> message = {"functions": [{"id": "f"}]}
        >>> payload = Encoded(message)
        >>> payload.text, payload.value() is message
        ('{"functions":[{"id":"f"}]}', True)
    """

    __slots__ = ("_value", "text")

    def __init__(self, value: Any) -> None:
        self.text = dumps_within(value, MAX_JSON_DEPTH - 1)
        self._value = value

    def value(self) -> Any:
        """The value it was made from (shared: not to be changed)."""
        return self._value


def _json_dumps(value: Any) -> str:
    """:func:`dumps` by the standard encoder: big integers, non-str keys, payload objects (:func:`jsonable`)."""
    try:
        plain = _plain(value)
        text = json.dumps(plain, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_default)
    except RecursionError:
        raise ValueError(_TOO_DEEP) from None
    except ValueError as exc:
        if "Out of range float" in str(exc):
            raise ValueError(_NON_FINITE) from None
        raise
    if len(text) >= _DEEP_MIN_LEN and _more_brackets_than(text, MAX_JSON_DEPTH) and not _nests_within(plain):
        _check_text_depth(text)
    if not text.isascii():
        _check_surrogates(text)
    return text


def _check_text_depth(text: str) -> None:
    """Refuse the standard encoder's ``text`` when it nests deeper than :data:`MAX_JSON_DEPTH`, read back at C speed.
    Why the text, not the value: the encoder converted objects on its way (an ``__iii_json__`` hook's value, a model
    an enum holds), and their contents are in the text only; a walk of the value took them for leaves, and a value
    of hooks nesting 200 levels was written. NaN and Infinity the encoder refused itself (``allow_nan=False``)."""
    try:
        parsed = json.loads(text)
    except RecursionError:
        raise ValueError(_TOO_DEEP) from None
    if not _nests_within(parsed):
        _check_tree(parsed)


class UnpairedSurrogateError(PicklesByState, ValueError):
    """Text holding half a UTF-16 surrogate pair with no other half, which no UTF-8 text can carry: ``char`` (the
    surrogate, or the ``\\uXXXX`` escape that stands for one when ``escape``) at character ``position`` of the JSON
    text. :func:`dumps` raises it for a str holding one; :func:`loads` for a str document holding one and for such
    an escape, on every path."""

    def __init__(self, char: str, position: int, *, escape: bool = False) -> None:
        if escape:
            message = (f"JSON text holds an unpaired surrogate escape {char} (character {position}), which stands for "
                       "no character")
        else:
            message = (f"text holds an unpaired surrogate {char!r} (character {position}), which JSON on the wire "
                       "cannot carry")
        super().__init__(message)
        self.char = char
        self.position = position
        self.escape = escape


def _check_surrogates(text: str) -> None:
    """Refuse text holding an unpaired surrogate: it has no UTF-8 form, and no engine parses it as a ``\\u``
    escape either (ours and production's refuse a lone surrogate), so the frame would be dropped on the way."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UnpairedSurrogateError(text[exc.start], exc.start) from None


def _surrogate_char(text: str) -> UnpairedSurrogateError | None:
    """The first surrogate character of ``text`` (only a str can hold one: UTF-8 bytes cannot), or None.

    Window by window (no copy of a big document made whole), to UTF-16: the cheapest encoder that refuses a
    surrogate (0.6 ns a character, a fifth of a parse of the same text; UTF-8's costs a third)."""
    if text.isascii():
        return None
    for start in range(0, len(text), _SCAN_WINDOW):
        try:
            text[start:start + _SCAN_WINDOW].encode("utf-16-le")
        except UnicodeEncodeError as exc:
            return UnpairedSurrogateError(text[start + exc.start], start + exc.start)
    return None


def _decoded_surrogate(value: Any, objects: int) -> bool | None:
    """Whether a str of the decoded ``value``, a key or a value, holds a surrogate character (what a lone surrogate
    escape decodes to); None when it gave up, ``value`` having more than ``objects`` objects. Level by level as
    :func:`_look` goes; a str of ASCII (most) costs nothing, others 0.6 ns a character."""
    if not _REFERENTS_OK:
        return None
    level: list[Any] = [value]
    while level:
        objects -= len(level)
        if objects < 0:
            return None
        kinds = set(map(type, level))
        texts: Iterator[str] = iter(())
        if str in kinds:
            texts = compress(level, map(isinstance, level, repeat(str)))
        if dict in kinds:  # keys: the traversal lists a dict's values only
            texts = chain(texts, chain.from_iterable(compress(level, map(isinstance, level, repeat(dict)))))
        if any(_surrogate_char(text) is not None for text in filterfalse(str.isascii, texts)):
            return True
        if kinds & _CONTAINER_KINDS and _next_size(level) > objects:
            return None  # sized before it is listed: numbers by the 100,000 are the text's to check
        level = gc.get_referents(*level)
    return False


# A \u escape of half a surrogate pair with no other half: a high half (D800-DBFF) not followed by the escape of a low
# half, or a low half (DC00-DFFF) not preceded by the escape of a high half. The pattern cannot see whether its
# backslash is itself escaped ("\\ud800" is the text \ud800, no escape): _starts_escape tells.
_LONE_ESCAPE: Final = re.compile(r"\\u[dD](?:[89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])"
                                 r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD])[c-fC-F][0-9a-fA-F]{2})")
# What _LONE_ESCAPE passes over: a low half escape after an escaped backslash and text that reads like a high half
# ("\\ud800\udc00" is the text \ud800, then a lone low half).
_LITERAL_HIGH: Final = re.compile(r"\\\\u[dD][89abAB][0-9a-fA-F]{2}(?=\\u[dD][c-fC-F][0-9a-fA-F]{2})")


def _starts_escape(text: str, at: int) -> bool:
    """Whether the backslash at ``at`` of JSON text starts an escape: an even run of backslashes stands before it."""
    run = 0
    while at > run and text[at - run - 1] == "\\":
        run += 1
    return run % 2 == 0


_SURROGATE_ESCAPE_STR: Final = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES: Final = re.compile(rb"\\u[dD][89a-fA-F]")


def _may_hold_surrogate_escape(raw: str | bytes) -> bool:
    # Most documents hold no backslash at all (one memchr pass); re finds "\ud8".."\udf" at about twice the speed of
    # two bytes.find passes, its cost growing with the backslashes (escaped quotes, newlines, \u escapes) met.
    if isinstance(raw, str):
        return "\\" in raw and _SURROGATE_ESCAPE_STR.search(raw) is not None
    return b"\\" in raw and _SURROGATE_ESCAPE_BYTES.search(raw) is not None


def _lone_escape(text: str) -> UnpairedSurrogateError | None:
    """The first unpaired surrogate escape of the valid JSON ``text``, or None (a pair is one character: fine)."""
    found: tuple[int, str] | None = None
    for match in _LONE_ESCAPE.finditer(text):
        if _starts_escape(text, match.start()):
            found = (match.start(), match.group())
            break
    for match in _LITERAL_HIGH.finditer(text):
        if found is not None and match.end() > found[0]:
            break
        if not _starts_escape(text, match.start() + 1):  # the "\ud8.." is text: the low half after it stands alone
            found = (match.end(), text[match.end():match.end() + 6])
            break
    return None if found is None else UnpairedSurrogateError(found[1], found[0], escape=True)


def _has_long_digits(raw: str | bytes) -> bool:
    # Window by window: a whole-document translate (and, for a str, encode) would cost two copies of a frame of
    # several MiB at once, and the C allocator keeps such peaks long after the frame is gone. Windows overlap so a
    # run across a boundary is still seen; a document that fits in one window is scanned without slicing.
    if len(raw) <= _SCAN_WINDOW:  # every frame of the hot paths: one pass, no window slicing (1.9 -> 0.4 us)
        data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
        return _LONG_RUN in data.translate(_DIGITS_ONLY)
    overlap = len(_LONG_RUN) - 1
    for start in range(0, max(len(raw), 1), _SCAN_WINDOW):
        window = raw[start:start + _SCAN_WINDOW + overlap]
        data = window.encode("utf-8", "surrogatepass") if isinstance(window, str) else window
        if _LONG_RUN in data.translate(_DIGITS_ONLY):
            return True
    return False


def _has_big_int(raw: str | bytes) -> bool:
    """Whether ``raw`` may hold an integer token orjson cannot keep exact (see :data:`_INT_MARKS`). Conservative: a
    string that looks like one only costs a parse by the exact decoder. Window by window, overlapping by a needle,
    so that no copy of a big document is made whole."""
    overlap = len(_BIG_INT) - 1
    for start in range(0, max(len(raw), 1), _SCAN_WINDOW):
        window = raw[start:start + _SCAN_WINDOW + overlap]
        marks = (window.encode("utf-8", "surrogatepass") if isinstance(window, str) else window).translate(_INT_MARKS)
        if _BIG_INT in marks or (start == 0 and marks.startswith(_MAYBE_BIG)):
            return True
    return False


def _mostly_text(raw: str | bytes) -> bool:
    # orjson's reader allocates about 12 times the document before it builds anything; the standard decoder only
    # what the result holds. For a big document that is mostly string data it is as fast, so it gets that one.
    # Sampled: the answer only picks between two exact parsers, and a full count cost more than such a parse.
    if len(raw) < _LEAN_PARSE_BYTES:
        return False
    step = (len(raw) - _TEXT_SAMPLE_BYTES) // (_TEXT_SAMPLES - 1)
    values = 0
    for index in range(_TEXT_SAMPLES):
        sample = raw[index * step:index * step + _TEXT_SAMPLE_BYTES]
        if isinstance(sample, str):
            values += sample.count(",") + sample.count(":") + sample.count("[") + sample.count("{")
        else:
            values += sample.count(b",") + sample.count(b":") + sample.count(b"[") + sample.count(b"{")
    return values * _LEAN_BYTES_PER_VALUE < _TEXT_SAMPLES * _TEXT_SAMPLE_BYTES


def _more_brackets_than(raw: str | bytes, limit: int) -> bool:
    """Whether ``raw`` holds more than ``limit`` of "[" and "{" (an upper bound on its depth; strings count too).

    find() runs at memchr speed and this stops at the first ``limit + 1``: a wide document answers after a few
    hundred calls, a text-heavy one after one fast pass (where two count() passes took 2.3 ms on 4 MiB)."""
    found = 0
    brackets: tuple[Any, ...] = ("[", "{") if isinstance(raw, str) else (b"[", b"{")
    for bracket in brackets:
        at = raw.find(bracket)
        while at >= 0:
            found += 1
            if found > limit:
                return True
            at = raw.find(bracket, at + 1)
    return False


def _orjson_depth_limit() -> int | None:
    """The deepest nesting of containers orjson writes, found once by trying it (None: no orjson, or a limit
    other than the 254 levels this was checked against, so :func:`_shallow` never answers).

    orjson 3.9 writes one level more (255) when the innermost list or object is empty; the largest limit seen is
    the one returned, so :func:`_shallow` wraps enough to refuse a document one level too deep whatever its
    innermost value (a 128-deep document with a scalar innermost is then walked, which is slower, never wrong).
    """
    if _orjson is None:
        return None
    limits: set[int | None] = set()
    innermosts: tuple[Any, ...] = (0, [], {})
    for innermost in innermosts:
        value: Any = innermost
        limit: int | None = None
        for depth in range(1 if innermost == 0 else 2, 257):
            value = [value]
            try:
                _orjson.dumps(value)
            except TypeError:
                limit = depth - 1
                break
        limits.add(limit)
    return max(limits) if limits and limits <= {254, 255} else None  # type: ignore[type-var]


_ORJSON_DEPTH = _orjson_depth_limit()


def _orjson_counts_tuples() -> bool:
    """Whether orjson counts tuples toward its nesting limit, as it counts lists and objects (found once by trying).

    orjson 3.12.0 and 3.13.0 do not: a chain of 3,000 tuples nested in each other corrupted the heap and ended the
    process (``malloc(): corrupted top size``, or a segfault), where 3.11 refused it as too deep; and a value of tuples
    nested past :data:`MAX_JSON_DEPTH` passed the depth proofs below, which rely on orjson's count. Such a version is
    handed only values that hold no tuple (:func:`_json_kinds_only`); the others go to the standard encoder. Our
    dependency keeps orjson below 3.12, so this is for an install that overrode it. The probe nests 300: a version
    that does not count them writes that many without harm."""
    if _orjson is None:
        return True
    value: Any = 0
    for _ in range(300):
        value = (value,)
    try:
        _orjson.dumps(value)
    except TypeError:
        return True
    return False


_ORJSON_COUNTS_TUPLES: Final = _orjson_counts_tuples()
_JSON_KINDS: Final = frozenset({dict, list, str, int, float, bool, type(None)})


def _json_kinds_only(value: Any) -> bool:
    """Whether ``value`` holds nothing but plain dicts, lists and JSON scalars, nesting at most one level past
    :data:`MAX_JSON_DEPTH` (so no tuple, and nothing orjson writes by its fields, where a tuple could hide), looked at
    level by level at C speed as :func:`_look` does. False sends the value to the standard encoder."""
    if not _REFERENTS_OK:
        return False
    level: list[Any] = [value]
    for _ in range(MAX_JSON_DEPTH + 2):
        if not set(map(type, level)) <= _JSON_KINDS:
            return False
        level = gc.get_referents(*compress(level, map(isinstance, level, repeat(_DICT_OR_LIST))))
        if not level:
            return True
    return False


_DICT_OR_LIST: Final = (dict, list)


def _shallow(value: Any) -> bool:
    """True when the decoded ``value`` surely nests no deeper than :data:`MAX_JSON_DEPTH`, found at C speed: orjson
    writes it wrapped in enough lists to reach exactly its own limit only if it is that shallow. False means "walk
    it" (too deep, orjson missing or different, or something orjson cannot write such as a big integer). Decoded
    JSON holds no NaN or Infinity (both decoders refuse them), so depth is all that is left to check."""
    if not _WRAP_LEVELS:
        return False
    try:
        _wrapped(value)
    except TypeError:
        return False
    return True


#: How many lists :func:`_wrapped` puts around a value (0: no orjson, or one whose limit is unknown).
_WRAP_LEVELS: Final = 0 if _ORJSON_DEPTH is None else _ORJSON_DEPTH - MAX_JSON_DEPTH
# The wrapping lists, kept for reuse (building 126 lists cost 3 us a call): one set per call in progress, so that
# threads and re-entered calls never share one.
_WRAPPERS: Final[list[tuple[list[Any], list[Any]]]] = []


def _wrapped(value: Any) -> bytes:
    """orjson's text of ``value`` inside :data:`_WRAP_LEVELS` lists: TypeError unless ``value`` nests no deeper than
    :data:`MAX_JSON_DEPTH` (and orjson can write it at all)."""
    assert _orjson is not None
    try:
        outer, inner = _WRAPPERS.pop()
    except IndexError:
        inner = [None]
        outer = inner
        for _ in range(_WRAP_LEVELS - 1):
            outer = [outer]
    inner[0] = value
    try:
        return _orjson.dumps(outer)
    finally:
        inner[0] = None
        _WRAPPERS.append((outer, inner))


# A document whose text is this long is big: worth writing wrapped at once (see _WrapAhead).
_BIG_TEXT: Final = 64 * 1024
# From this long on, a value whose text holds a "null" is looked at level by level rather than walked (see _look).
_LOOK_TEXT: Final = 4 * 1024
_NONE_KIND: Final = type(None)
# The types whose objects the level-by-level look knows: what JSON decodes to (and tuples). Anything else orjson
# writes (dataclasses, enums, UUIDs, subclasses) is left to the walk.
_PLAIN_KINDS: Final = frozenset({dict, list, tuple, str, int, float, bool, _NONE_KIND})
_CONTAINERS: Final = (dict, list, tuple)
_CONTAINER_KINDS: Final = frozenset(_CONTAINERS)


class _WrapAhead:
    """Whether :func:`dumps` writes its next value wrapped (see :func:`_wrapped`), proving its depth in the one
    encode. Big documents come in runs (batches, pages, replays): one that had to be encoded a second time for its
    depth sets it, a small one written wrapped clears it (wrapping costs 2 us of orjson's time per call)."""

    on = False


def _orjson_dumps(value: Any) -> str | None:
    """:func:`dumps` by orjson, the policy checked; None when orjson cannot write ``value`` (big integers, non-str
    keys, unknown types, 255+ levels: the standard encoder's path writes it or says what is wrong).

    orjson writes NaN/Infinity as null and nests up to 254 levels. So a value with a "null" in its text is looked at
    (a big one with few objects for its text, long strings, is looked at first: cheaper than reading the text), and
    one with more than 128 brackets in its text (a wide document, or a deep one) has its depth proven at C speed."""
    assert _orjson is not None
    out: bytes | None = None
    start = 0
    proven = False  # the value is known to nest within MAX_JSON_DEPTH
    if _WrapAhead.on and _WRAP_LEVELS:
        try:
            out = _wrapped(value)
        except TypeError as exc:
            if "ecursion" not in str(exc):  # not a depth matter: orjson cannot write it, wrapped or not
                return None
        else:
            start = _WRAP_LEVELS
            proven = True
    if out is None:
        try:
            out = _orjson.dumps(value)
        except TypeError:
            return None
    end = len(out) - start
    size = end - start
    if size < _LOOK_TEXT or not _REFERENTS_OK:
        if out.find(b"null", start, end) >= 0:
            _check_tree(value)  # a small value: the walk is cheapest, and proves the depth too
            proven = True
    else:
        looked = _look(value, _NO_LIMIT, size >> 10)  # few objects for their text (long strings): cheaper than it
        if looked is None:
            null = _NULL.search(out, start, end)  # re's search: twice as fast as bytes.find here
            if null is not None:
                looked = _refuse_non_finite(value, out, null.end(), end)
        if looked is not None and 0 < looked <= MAX_JSON_DEPTH:
            proven = True
    # Under _LOOK_TEXT (every frame of the call paths: a traceparent takes an answer past _DEEP_MIN_LEN) two C-speed
    # counts answer without _more_brackets_than's Python-level call and find loop.
    if not proven and size >= _DEEP_MIN_LEN and (
            out.count(b"[") + out.count(b"{") > MAX_JSON_DEPTH if size < _LOOK_TEXT
            else _more_brackets_than(out, MAX_JSON_DEPTH)):
        _WrapAhead.on = size >= _BIG_TEXT
        if not _shallow(value):
            _check_tree(value)
    elif start and size < _BIG_TEXT:
        _WrapAhead.on = False
    return out.decode() if not start else str(memoryview(out)[start:end], "utf-8")  # no copy of the text first


_NULL: Final = re.compile(b"null")
_NO_LIMIT: Final = 1 << 62


def _refuse_non_finite(value: Any, out: bytes, after: int, end: int) -> int:
    """Refuse a NaN or an infinity in ``value``, which orjson wrote as ``null`` into ``out`` (its first "null" ends
    at ``after``, its text at ``end``). Returns what :func:`_look` does; a walk proves the depth too (1).

    ``value`` is looked at level by level (the walk cost Python time per node: 26-37 ms for 4 MiB holding a None
    anywhere, 5-9 times orjson's encode). Every "null" of the text is a None or a NaN/Infinity, so the look stops as
    soon as the Nones met account for all of them: a None in a frame's envelope ends it on the first level."""
    looked = _look(value, 1 + out.count(b"null", after, end), _NO_LIMIT)  # "null"s in strings too: never fewer
    if looked is None:  # objects orjson writes by their fields or value (dataclasses, enums...): the walk knows them
        _check_tree(value)
        return 1
    return looked


def _look(value: Any, nulls: int, objects: int) -> int | None:
    """Look at ``value`` level by level for a NaN or an infinity (a ValueError), at C speed: the collector's
    traversal lists each level's objects, C code tells their types, counts their Nones and sums their floats.

    Returns how many levels there were (the depth, or one more when the deepest level holds scalars); 0 when it
    stopped early, the Nones met being ``nulls``: then every "null" orjson wrote was a None, no NaN. None when it
    gave up: more than ``objects`` objects, more than MAX_JSON_DEPTH + 1 levels, or objects other than JSON's."""
    nones = 0
    levels = 0
    level: list[Any] = [value]
    while level:
        objects -= len(level)
        levels += 1
        if objects < 0 or levels > MAX_JSON_DEPTH + 1:
            return None
        kinds = set(map(type, level))
        if not kinds <= _PLAIN_KINDS:
            return None
        if _NONE_KIND in kinds:
            nones += level.count(None)
            if nones >= nulls:
                return 0
        if float in kinds and not math.isfinite(sum(compress(level, map(isinstance, level, repeat(float))))):
            if not all(map(math.isfinite, compress(level, map(isinstance, level, repeat(float))))):
                raise ValueError(_NON_FINITE)  # (else finite floats whose sum overflowed)
        if objects < _NO_LIMIT >> 1 and kinds & _CONTAINER_KINDS and _next_size(level) > objects:
            return None  # a bounded look sizes the next level before it is listed
        level = gc.get_referents(*level)
    return levels


def _next_size(level: list[Any]) -> int:
    """How many objects the level after ``level`` holds: the lengths of its containers, summed at C speed."""
    return sum(map(len, compress(level, map(isinstance, level, repeat(_CONTAINERS)))))


def _nests_within(value: Any) -> bool:
    """Whether ``value`` (a document the standard encoder wrote) surely nests no deeper than
    :data:`MAX_JSON_DEPTH`, looked at as :func:`_look` does; False means "walk it"."""
    if not _REFERENTS_OK:
        return False
    looked = _look(value, _NO_LIMIT, _NO_LIMIT)
    return looked is not None and 0 < looked <= MAX_JSON_DEPTH


def _referents_ok() -> bool:
    """Whether the collector's traversal lists every item of a list or tuple and every value of a dict, scalars
    included (CPython's does; the docs promise only objects that may be in a cycle), as the looks above rely on."""
    nan = float("nan")
    sample: list[Any] = [None, 1.5, nan, "s", 7, True]
    found = gc.get_referents([*sample], (*sample,), dict(zip("abcdef", sample, strict=True)))
    return all(sum(item is x for item in found) == 3 for x in sample)


_REFERENTS_OK: Final = _referents_ok()


def _check_tree(value: Any) -> None:
    """Refuse non-finite floats and nesting deeper than :data:`MAX_JSON_DEPTH` (iteratively: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        item, depth = pop()
        kind = type(item)
        # Plain containers first: most of what is walked, and no float (no type derives from both), so they skip
        # the isinstance calls below (the walk runs on every frame holding a null: the REST API's body, say).
        if kind is dict:
            children: Any = item.values()
        elif kind is list or kind is tuple:
            children = item
        elif kind is float or isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError(_NON_FINITE)
            continue
        # A subclass's contents are read as orjson reads them, from the dict's or the list's own storage: an
        # overridden values() or __iter__ hid a NaN from the walk while orjson wrote it as null.
        elif isinstance(item, dict):
            children = dict.values(item)
        elif isinstance(item, list):
            children = list.__iter__(item)
        elif isinstance(item, tuple):
            children = tuple.__iter__(item)
        elif hasattr(item, "__dataclass_fields__") and not isinstance(item, type):
            children = [getattr(item, name) for name in item.__dataclass_fields__]
        elif isinstance(item, enum.Enum):
            # orjson writes an enum as its value, in place: a NaN there came out as null (the standard path refused it)
            push((item.value, depth))
            continue
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            raise ValueError(_TOO_DEEP)
        depth += 1
        for child in children:
            kind = type(child)
            # a float is checked where it is met: pushed, 2 million of them held a tuple each (8 MiB of "1.5,"
            # peaked 49 MiB over the estimate checked before the parse)
            if kind is float:
                if not math.isfinite(child):
                    raise ValueError(_NON_FINITE)
            elif kind not in _LEAVES:
                push((child, depth))


def _decode_error(raw: str | bytes, exc: ValueError) -> ValueError:
    """The error for a document orjson refused: its message, or ours where the document broke the depth, NaN/Infinity
    or surrogate rule (the same as the standard decoder's path raises for it)."""
    message = str(exc)
    if "depth limit" in message or "recursion" in message:
        return ValueError(_TOO_DEEP)
    if "infinity" in message:
        return ValueError(_NON_FINITE)
    if "surrogate" in message:  # "no low surrogate", "invalid high surrogate", "str is not valid UTF-8: surrogates..."
        text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8", "replace")
        lone = (_surrogate_char(raw) if isinstance(raw, str) else None) or _lone_escape(text)
        if lone is not None:
            return lone
    pos = getattr(exc, "pos", None)
    if isinstance(pos, int) and pos >= 0:
        around = raw[max(0, pos - 1):pos + 9]
        # surrogatepass: a str holding a lone surrogate (orjson refuses it) must get this ValueError, not a
        # UnicodeEncodeError from building the message
        head = around.encode("utf-8", "surrogatepass") if isinstance(around, str) else bytes(around)
        if any(word in head for word in (b"NaN", b"Infinity")):
            return ValueError(f"{_NON_FINITE} (at char {pos})")
    return ValueError(message)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{_NON_FINITE} (got {name})")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{_NON_FINITE} ({text[:40]} overflows a double)")
    return number


_DECODER: Final = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
_LEAVES: Final = frozenset({str, int, bool, type(None)})


def escape_surrogates(value: str) -> str:
    """``value`` with each lone surrogate written as its escape: such a string (a file name that is not UTF-8, as
    ``os.listdir`` decodes it) has no UTF-8 or JSON form (a frame or a log line holding it cannot be written).

    Example:
        >>> escape_surrogates(b"report-\\xff.csv".decode("utf-8", "surrogateescape"))
        'report-\\\\udcff.csv'
        >>> escape_surrogates("é")
        'é'
    """
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def clip(value: object, limit: int = LOG_CLIP) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for logging input that an attacker controls.

    Example:
        >>> clip("x" * 1000, 10)
        "'xxxxxxxx…(1002 chars)"
    """
    if isinstance(value, str | bytes | bytearray) and len(value) > limit:
        head = repr(value[:limit])[:limit - 1]
        return f"{head}…({len(value) + 2} chars)"
    if isinstance(value, dict | list | tuple):
        # the first items, each cut: repr() of a whole hostile frame cost 5 ms a MB on the thread that logged it
        text = _bounded_repr(value, limit, 0)
        return text if len(text) <= limit else f"{text[:limit - 1]}…"
    text = _bounded_repr(value, limit, 0)
    return text if len(text) <= limit else f"{text[:limit - 1]}…({len(text)} chars)"


_REPR_ITEMS: Final = 16
_REPR_DEPTH: Final = 4


def _bounded_repr(value: object, budget: int, depth: int) -> str:
    """``repr(value)`` built from at most :data:`_REPR_ITEMS` items a container, :data:`_REPR_DEPTH` levels deep,
    until about ``budget`` characters: its cost is bounded whatever the size of ``value`` (dict subclasses included;
    keys are not sorted). Never raises for an :class:`Exception` of ``value``'s: such a value is named by its type.

    Example:
        >>> _bounded_repr({"type": "x", "data": list(range(10**6))}, 60, 0)
        "{'type': 'x', 'data': [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, …]}"
        >>> _bounded_repr(10**5000, 60, 0)
        '<int of 16610 bits>'
    """
    try:
        if isinstance(value, dict | list | tuple):
            if depth >= _REPR_DEPTH:
                return "…"
            items = islice(value.items() if isinstance(value, dict) else value, _REPR_ITEMS)
            parts: list[str] = []
            used = 0
            for item in items:
                if isinstance(value, dict):
                    key, inner = item
                    part = f"{_bounded_repr(key, budget - used, depth + 1)}: " \
                           f"{_bounded_repr(inner, budget - used, depth + 1)}"
                else:
                    part = _bounded_repr(item, budget - used, depth + 1)
                parts.append(part)
                used += len(part) + 2
                if used >= budget:
                    break
            more = ", …" if len(parts) < len(value) else ""
            opening, closing = ("{", "}") if isinstance(value, dict) else ("[", "]") if isinstance(value, list) \
                else ("(", ")")
            return f"{opening}{', '.join(parts)}{more}{closing}"
        if isinstance(value, str | bytes | bytearray):
            return repr(value[:budget]) + ("…" if len(value) > budget else "")
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 4 * budget:
            return f"<int of {value.bit_length()} bits>"  # (repr() of one past 4,300 digits raises)
        return repr(value)
    except Exception:
        return f"<{type(value).__name__}>"


def _default(value: Any) -> Any:
    converted = jsonable(value)
    if converted is value:
        converted = _as_orjson_writes(value)
    return converted


def _as_orjson_writes(value: Any) -> Any:
    """What orjson writes by itself for ``value`` of a type the standard encoder does not know (dates and times,
    UUIDs, enums): a document takes the same text on both paths. Before, a datetime went out as text unless the same
    document held an integer beyond 64 bits (or anything else that sends it down this path): then it was a
    :class:`TypeError`."""
    if isinstance(value, datetime.datetime):
        offset = value.utcoffset()
        if offset is None or (not offset.seconds % 60 and not offset.microseconds):
            return value.isoformat()
        # RFC 3339 offsets are whole minutes; orjson rounds the seconds of a local mean time's offset
        seconds = round(offset.total_seconds())
        minutes = (abs(seconds) + 30) // 60
        sign = "-" if seconds < 0 else "+"
        return f"{value.replace(tzinfo=None).isoformat()}{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, datetime.time):
        if value.tzinfo is not None:
            raise TypeError("datetime.time must not have tzinfo set")
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def jsonable(value: Any) -> Any:
    """Turn payload objects into plain JSON values.

    Objects may define ``__iii_json__()`` (channel ends serialise as their refs, ``ApiResponse`` by field name);
    other pydantic models are dumped by alias keeping ``None`` fields; dataclasses and tuples are converted.

    Example:
        >>> from iii.iii_types import TriggerActionVoid
        >>> jsonable({"a": (1, TriggerActionVoid())})
        {'a': [1, {'type': 'void'}]}
    """
    hook = getattr(value, "__iii_json__", None)
    if hook is not None and callable(hook):
        return hook()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    # a subclass is read from its own storage, as orjson reads it: an overridden items() or __iter__ hid a NaN
    if isinstance(value, dict):
        plain = {k if type(k) is str else _key(k): jsonable(v) for k, v in dict.items(value)}
        if len(plain) != dict.__len__(value):
            raise ValueError(_same_key(value))
        return plain
    if isinstance(value, list):
        return [jsonable(v) for v in list.__iter__(value)]
    if isinstance(value, tuple):
        return [jsonable(v) for v in tuple.__iter__(value)]
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return jsonable(dataclasses.asdict(value))
    return value


_LEAF_KINDS: Final = frozenset({str, int, float, bool, _NONE_KIND})


def _plain(value: Any) -> Any:
    """``value`` ready for the standard encoder, written as :func:`jsonable` of it is: dicts with str keys, lists and
    tuples go as they are (no copy) where they hold plain values only, told at C speed, and :func:`jsonable` converts
    the rest. It converted every value, at Python speed per node: 120 ms for 4 MiB of big integers, 4 times
    ``json.dumps`` of it."""
    kind = type(value)
    if kind is dict:
        if not set(map(type, value)) <= {str}:
            return jsonable(value)  # its rules for other keys (and for two keys that read the same then)
        if set(map(type, value.values())) <= _LEAF_KINDS:
            return value
        return {k: v if type(v) in _LEAF_KINDS else _plain(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        if set(map(type, value)) <= _LEAF_KINDS:
            return value
        return [v if type(v) in _LEAF_KINDS else _plain(v) for v in value]
    return jsonable(value)


def _key(key: Any) -> str:
    """A non-string object key as :func:`json.dumps` writes it (the reference SDK's encoder): ``True`` as
    ``"true"``, ``None`` as ``"null"``, numbers in JSON form; any other key is a :class:`TypeError`. Before, every
    key went through ``str()``: ``{True: 1}`` went out as ``{"True":1}`` and a tuple key was accepted."""
    if isinstance(key, str):  # a subclass (a str enum): its text, as json.dumps writes it
        return str.__str__(key)
    if key is True or key is False:
        return "true" if key else "false"
    if key is None:
        return "null"
    if isinstance(key, int):
        return int.__repr__(key)
    if isinstance(key, float):
        if not math.isfinite(key):
            raise ValueError(_NON_FINITE)
        return float.__repr__(key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _same_key(value: dict[Any, Any]) -> str:
    """The error for a dict two of whose keys are one JSON key (``1`` and ``"1"``): written, one value was lost (the
    reference SDK's ``json.dumps`` writes the key twice, and a reader keeps the last)."""
    seen: dict[str, Any] = {}
    for key in dict.__iter__(value):
        text = key if type(key) is str else _key(key)
        if text in seen:
            return f"object keys {seen[text]!r} and {key!r} are both the JSON key {text!r}: one value would be lost"
        seen[text] = key
    return "two object keys are one JSON key"  # not reached: the caller saw fewer keys written than held


# Optional envelope keys are omitted when None, as the production engine does; these are always sent.
_ALWAYS_PRESENT: Final[dict[type[BaseModel], tuple[str, ...]]] = {
    InvokeFunctionMessage: ("data",),
    RegisterTriggerMessage: ("config",),
}


def to_frame_dict(message: BaseModel) -> dict[str, Any]:
    """The JSON object for ``message`` (docs/protocol.md#sdk-improvements S1: ``data``/``config`` always present).

    Example:
        >>> from iii.iii_types import RegisterTriggerMessage
        >>> to_frame_dict(RegisterTriggerMessage(id="t", trigger_type="cron", function_id="f", config=None))
        {'id': 't', 'trigger_type': 'cron', 'function_id': 'f', 'config': {}, 'type': 'registertrigger'}
    """
    out: dict[str, Any] = {}
    for name, field in type(message).model_fields.items():
        value = getattr(message, name)
        key = field.alias or name
        if value is None:
            if name in _ALWAYS_PRESENT.get(type(message), ()):
                out[key] = {} if name == "config" else None
            continue
        if name in ("data", "result", "config", "error", "metadata"):
            out[key] = jsonable(value)
        elif isinstance(value, MessageType):
            out[key] = value.value
        elif isinstance(value, BaseModel):
            out[key] = value.model_dump(mode="json", by_alias=True, exclude_none=True)
        else:
            out[key] = value
    return out


def encode(message: BaseModel | dict[str, Any] | Ping | Pong) -> str:
    """One text frame for ``message``.

    Example:
        >>> encode(Pong())
        '{"type":"pong"}'
    """
    if isinstance(message, Ping):
        return '{"type":"ping"}'
    if isinstance(message, Pong):
        return '{"type":"pong"}'
    if isinstance(message, dict):
        return dumps(jsonable(message))
    return dumps(to_frame_dict(message))


_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def is_uuid(value: object) -> bool:
    """Whether ``value`` is a string the production engine accepts as a UUID.

    Example:
        >>> is_uuid("8d1c3b4e-0f6a-4c39-9c55-2f1f3f0f5a11"), is_uuid("abc"), is_uuid(7)
        (True, False, False)
    """
    if not isinstance(value, str):
        return False
    if _CANONICAL_UUID.fullmatch(value):
        return True
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "<message>"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


# Where an unparseable frame may still say who is waiting for an answer: the ends of the frame, since senders put
# the envelope keys before or after the payload.
_SALVAGE_WINDOW: Final = 64 * 1024
_SALVAGE_TYPE: Final = re.compile(r'"type"\s*:\s*"(invokefunction|invocationresult)"')
_SALVAGE_ID: Final = re.compile(r'"invocation_id"\s*:\s*"([0-9a-fA-F-]{32,36})"')
_SALVAGE_FUNCTION: Final = re.compile(r'"function_id"\s*:\s*"((?:[^"\\]|\\.){0,512})"')


def salvage_invocation(raw: str | bytes) -> dict[str, str | None]:
    """For a frame that is not valid JSON: ``message_type``/``invocation_id``/``function_id`` when it plainly is an
    ``invokefunction`` or an ``invocationresult`` with one UUID ``invocation_id`` (read from its first and last
    64 KiB), so the call's caller can be answered instead of hanging; all ``None`` otherwise (and when the frame
    names both types: a payload may quote another frame).

    Example:
        >>> salvage_invocation('{"type":"invokefunction","invocation_id":"8d1c3b4e-0f6a-4c39-9c55-2f1f3f0f5a11",'
        ...                    '"function_id":"f","data":NaN}')["invocation_id"]
        '8d1c3b4e-0f6a-4c39-9c55-2f1f3f0f5a11'
        >>> salvage_invocation('{"type":"invocationresult","invocation_id":"8d1c3b4e-0f6a-4c39-9c55-2f1f3f0f5a11",'
        ...                    '"result":NaN}')["message_type"]
        'invocationresult'
        >>> salvage_invocation('{"type":"invokefunction","invocation_id":"8d1c3b4e-0f6a-4c39-9c55-2f1f3f0f5a11",'
        ...                    '"function_id":"x\\\\ud800"}')["function_id"]  # a lone surrogate escape
        'x?'
    """
    none: dict[str, str | None] = {"message_type": None, "invocation_id": None, "function_id": None}
    if isinstance(raw, str):
        windows = [raw] if len(raw) <= 2 * _SALVAGE_WINDOW else [raw[:_SALVAGE_WINDOW], raw[-_SALVAGE_WINDOW:]]
    else:
        data = bytes(raw)
        parts = [data] if len(data) <= 2 * _SALVAGE_WINDOW else [data[:_SALVAGE_WINDOW], data[-_SALVAGE_WINDOW:]]
        windows = [part.decode("utf-8", "replace") for part in parts]
    if not windows[0].lstrip().startswith("{"):
        return none
    kinds = {m.group(1) for w in windows for m in _SALVAGE_TYPE.finditer(w)}
    if len(kinds) != 1:
        return none
    ids = {m.group(1) for w in windows for m in _SALVAGE_ID.finditer(w) if is_uuid(m.group(1))}
    if len(ids) != 1:
        return none  # none, or ambiguous (the payload may quote other invocations)
    function = next((m.group(1) for w in windows for m in _SALVAGE_FUNCTION.finditer(w)), "")
    try:
        function_id = json.loads(f'"{function}"')
    except ValueError:
        function_id = function
    if not function_id.isascii():
        # a lone surrogate escape ("x\\ud800") cannot go back out as UTF-8: the reply naming it failed to encode,
        # and the caller waited for good (the reply is matched by its invocation id; the name is for people)
        function_id = function_id.encode("utf-8", "replace").decode("utf-8")
    return {"message_type": kinds.pop(), "invocation_id": ids.pop(), "function_id": function_id}


def decode(raw: str | bytes, *, strict: bool = False) -> Decoded | None:
    """Parse one frame; ``None`` for blank frames, :class:`WireError` for anything undecodable.

    ``strict`` applies the production engine's checks on worker input: UUID invocation ids and the
    ``registerservice`` name rule. An unparseable ``invokefunction`` still names its ``invocation_id`` when it can
    (:func:`salvage_invocation`).

    Example:
        >>> decode('{"type":"workerregistered","worker_id":"w1"}').worker_id
        'w1'
        >>> decode('{"type":"nope"}')
        Traceback (most recent call last):
        ...
        iii.protocol.codec.WireError: unknown message type 'nope'
    """
    if isinstance(raw, bytes | bytearray | memoryview):
        data = bytes(raw)
        prefix = data[:4]
        if prefix in TELEMETRY_PREFIXES:
            return Telemetry(prefix.decode(), data[4:])
        text_or_bytes: str | bytes = data
        if not data.strip():
            return None
    else:
        if not raw.strip():
            return None
        text_or_bytes = raw
    try:
        obj = loads(text_or_bytes)
    except ValueError as exc:  # UnicodeDecodeError included
        raise WireError(f"invalid JSON: {exc}", **salvage_invocation(text_or_bytes)) from None
    return decode_object(obj, strict=strict)


def decode_object(obj: Any, *, strict: bool = False) -> Decoded:
    """Turn an already parsed frame (see :func:`loads`) into a message; :class:`WireError` says what was wrong.

    Example:
        >>> decode_object({"type": "ping"})
        Ping()
    """
    if not isinstance(obj, dict):
        raise WireError(f"a frame must be a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    if kind == "ping":
        return Ping()
    if kind == "pong":
        return Pong()
    if not isinstance(kind, str):
        raise WireError("missing or non-string 'type'")
    model = _MODELS.get(kind)
    if model is None:
        raise WireError(f"unknown message type {clip(kind)}", message_type=clip(kind, 64))
    invocation_id = obj.get("invocation_id")
    function_id = obj.get("function_id")
    context = {
        "message_type": kind,
        "invocation_id": invocation_id if is_uuid(invocation_id) else None,
        "function_id": function_id if isinstance(function_id, str) else None,
    }
    if strict:
        if model is InvokeFunctionMessage and invocation_id is not None and not is_uuid(invocation_id):
            raise WireError(f"invocation_id {clip(invocation_id)} is not a UUID", **context)
        if model is InvocationResultMessage and not is_uuid(invocation_id):
            raise WireError(f"invocation_id {clip(invocation_id)} is not a UUID", **context)
        if model is RegisterServiceMessage:
            if "name" in obj and obj["name"] is None:
                raise WireError("registerservice 'name' must not be null", **context)
            obj.setdefault("name", "")
    try:
        return model.model_validate(obj)  # type: ignore[return-value]
    except ValidationError as exc:
        raise WireError(f"{kind}: {_describe(exc)}", **context) from None
