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

import json
import math
import re
import uuid
from typing import Any, Final

from pydantic import BaseModel, ValidationError

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
    "TELEMETRY_PREFIXES",
    "Ping",
    "Pong",
    "Telemetry",
    "WireError",
    "clip",
    "decode",
    "decode_object",
    "dumps",
    "encode",
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
    """
    if _orjson is not None and len(raw) <= _SCAN_WINDOW:  # every frame of the hot paths: one parse, one scan
        try:
            parsed = _orjson.loads(raw)
        except _orjson.JSONDecodeError as exc:
            if "infinity" not in str(exc) or not _has_long_digits(raw):
                raise ValueError(_explain(raw, exc)) from None
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
            raise ValueError(_explain(raw, exc)) from None
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
    if _more_brackets_than(raw, MAX_JSON_DEPTH) and not _shallow(value):
        _check_tree(value)
    return value


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
    if _orjson is not None:
        try:
            out = _orjson.dumps(value)
        except TypeError:
            pass  # big integers, non-str keys, unknown types, deep nesting: the stdlib path says what is wrong
        else:
            # orjson writes NaN/Infinity as null and nests up to 254 levels: look closer only when that can be.
            # Many brackets usually mean a wide document (a batch of 512 spans), not a deep one: asking orjson
            # about the depth costs one more C-speed encode, where the walk costs Python time per node.
            if b"null" in out or (len(out) >= _DEEP_MIN_LEN and _more_brackets_than(out, MAX_JSON_DEPTH)
                                  and not _shallow(value)):
                _check_tree(value)
            return out.decode()
    try:
        plain = jsonable(value)
        text = json.dumps(plain, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_default)
    except RecursionError:
        raise ValueError(_TOO_DEEP) from None
    except ValueError as exc:
        if "Out of range float" in str(exc):
            raise ValueError(_NON_FINITE) from None
        raise
    if _bracket_count(text) > MAX_JSON_DEPTH:
        _check_tree(plain)
    if not text.isascii():
        _check_surrogates(text)
    return text


class UnpairedSurrogateError(ValueError):
    """:func:`dumps` met an unpaired surrogate: ``char``, at ``position`` in the JSON text it would have written."""

    def __init__(self, char: str, position: int) -> None:
        super().__init__(f"text holds an unpaired surrogate {char!r} (character {position}), which JSON on the wire "
                         "cannot carry")
        self.char = char
        self.position = position


def _check_surrogates(text: str) -> None:
    """Refuse text holding an unpaired surrogate: it has no UTF-8 form, and no engine parses it as a ``\\u``
    escape either (ours and production's refuse a lone surrogate), so the frame would be dropped on the way."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UnpairedSurrogateError(text[exc.start], exc.start) from None


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


def _bracket_count(raw: str | bytes) -> int:
    # An upper bound on nesting depth at C speed (brackets inside strings count too): most documents skip the walk.
    if isinstance(raw, str):
        return raw.count("[") + raw.count("{")
    return raw.count(b"[") + raw.count(b"{")


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


def _shallow(value: Any) -> bool:
    """True when the decoded ``value`` surely nests no deeper than :data:`MAX_JSON_DEPTH`, found at C speed: orjson
    writes it wrapped in enough lists to reach exactly its own limit only if it is that shallow. False means "walk
    it" (too deep, orjson missing or different, or something orjson cannot write such as a big integer). Decoded
    JSON holds no NaN or Infinity (both decoders refuse them), so depth is all that is left to check."""
    if _ORJSON_DEPTH is None or _orjson is None:
        return False
    for _ in range(_ORJSON_DEPTH - MAX_JSON_DEPTH):
        value = [value]
    try:
        _orjson.dumps(value)
    except TypeError:
        return False
    return True


def _check_tree(value: Any) -> None:
    """Refuse non-finite floats and nesting deeper than :data:`MAX_JSON_DEPTH` (iteratively: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is float or isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError(_NON_FINITE)
            continue
        if kind is dict or isinstance(item, dict):
            children: Any = item.values()
        elif kind is list or kind is tuple or isinstance(item, list | tuple):
            children = item
        elif hasattr(item, "__dataclass_fields__") and not isinstance(item, type):
            children = [getattr(item, name) for name in item.__dataclass_fields__]
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            raise ValueError(_TOO_DEEP)
        for child in children:
            if type(child) not in _LEAVES:
                stack.append((child, depth + 1))


def _explain(raw: str | bytes, exc: ValueError) -> str:
    """orjson's message, or ours when the document broke the depth or NaN/Infinity rule."""
    message = str(exc)
    if "depth limit" in message or "recursion" in message:
        return _TOO_DEEP
    if "infinity" in message:
        return _NON_FINITE
    pos = getattr(exc, "pos", None)
    if isinstance(pos, int) and pos >= 0:
        around = raw[max(0, pos - 1):pos + 9]
        # surrogatepass: a str holding a lone surrogate (orjson refuses it) must get this ValueError, not a
        # UnicodeEncodeError from building the message
        head = around.encode("utf-8", "surrogatepass") if isinstance(around, str) else bytes(around)
        if any(word in head for word in (b"NaN", b"Infinity")):
            return f"{_NON_FINITE} (at char {pos})"
    return message


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{_NON_FINITE} (got {name})")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{_NON_FINITE} ({text[:40]} overflows a double)")
    return number


_DECODER: Final = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
_LEAVES: Final = frozenset({str, int, bool, type(None)})


def clip(value: object, limit: int = LOG_CLIP) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for logging input that an attacker controls.

    Example:
        >>> clip("x" * 1000, 10)
        "'xxxxxxxx…(1002 chars)"
    """
    if isinstance(value, str | bytes | bytearray) and len(value) > limit:
        head = repr(value[:limit])[:limit - 1]
        return f"{head}…({len(value) + 2} chars)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 1]}…({len(text)} chars)"


def _default(value: Any) -> Any:
    converted = jsonable(value)
    if converted is value:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
    return converted


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
    if isinstance(value, dict):
        return {k if type(k) is str else _key(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return jsonable(dataclasses.asdict(value))
    return value


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
