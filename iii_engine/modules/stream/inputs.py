"""Input parsing for the ``stream::*`` and ``state::*`` built-ins, with production's error shape.

A payload that is not an object, lacks a key or has a mistyped key fails with code ``deserialization_error`` and
the message ``Failed to deserialize input for <function id>: <detail>``, where the detail follows the wording of
the production engine's JSON decoder (``missing field `data```, ``invalid type: integer `1`, expected a
string``). Unknown keys (``_caller_worker_id`` above all) are ignored.

Stream names starting with :data:`RESERVED_PREFIX` are the engine's own (:func:`check_stream_name`).

Example:
    >>> Fields("stream::get", {"stream_name": "s", "group_id": "g", "item_id": "i"}).text("item_id")
    'i'
    >>> Fields("stream::get", {"stream_name": "s"}).text("group_id")
    Traceback (most recent call last):
    ...
    iii_engine.modules.base.EngineError: deserialization_error: Failed to deserialize input for stream::get: \
missing field `group_id`
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.stream_ops import Op, parse_op, parse_ops

from ..base import EngineError

__all__ = ["RESERVED_PREFIX", "Fields", "check_stream_name", "describe", "reserved_name"]

RESERVED_PREFIX: Final = "__iii_"
"""Stream names starting with this are the engine's own: the state module keeps its items under ``__iii_state`` in
a store it may share with the stream module (one SQL ``store_url``), so no stream function, stream trigger or
stream socket join may name one (:func:`check_stream_name`), and ``stream::list_all`` leaves them out."""


def describe(value: Any) -> str:
    """How the production decoder names an unexpected JSON value.

    Example:
        >>> describe(1), describe("x"), describe(None), describe([1])
        ('integer `1`', 'string "x"', 'null', 'sequence')
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f'string "{value}"'
    if isinstance(value, list):
        return "sequence"
    return "map"


def reserved_name(name: str) -> str | None:
    """Why ``name`` is refused as a stream name (it starts with :data:`RESERVED_PREFIX`), or ``None``.

    Example:
        >>> reserved_name("todos") is None
        True
        >>> reserved_name("__iii_state")[:60]
        "stream name '__iii_state' is reserved: names starting with '"
    """
    if not name.startswith(RESERVED_PREFIX):
        return None
    return (f"stream name {name!r:.200} is reserved: names starting with {RESERVED_PREFIX!r} hold the engine's own "
            "data (the state module's store among them) and are not reachable through streams")


def check_stream_name(name: str, code: str) -> str:
    """``name``, or an ``EngineError`` with ``code`` when it is reserved (:func:`reserved_name`).

    Why: with one SQL ``store_url`` for both modules, ``stream::get`` of ``__iii_state`` read every ``state::set``
    value, ``stream::set`` changed what ``state::get`` answered, and any stream socket client joining
    ``__iii_state`` was sent the state's values in its sync.

    Example:
        >>> check_stream_name("todos", "STREAM_GET_ERROR")
        'todos'
        >>> check_stream_name("__iii_state", "STREAM_GET_ERROR")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        iii_engine.modules.base.EngineError: STREAM_GET_ERROR: stream name '__iii_state' is reserved: ...
    """
    refusal = reserved_name(name)
    if refusal is not None:
        raise EngineError(code, refusal)
    return name


class Fields:
    """Typed access to the keys of one built-in's input object; every failure is a ``deserialization_error``.

    Example:
        >>> Fields("state::set", {"scope": "s", "key": "k", "data": 1}).value("value", alias="data")
        1
    """

    def __init__(self, function_id: str, data: Any) -> None:
        self.function_id = function_id
        if not isinstance(data, Mapping):
            raise self.error(f"invalid type: {describe(data)}, expected a JSON object")
        self.data: Mapping[str, Any] = data

    def error(self, detail: str) -> EngineError:
        """The ``deserialization_error`` for ``detail``."""
        return EngineError("deserialization_error", f"Failed to deserialize input for {self.function_id}: {detail}")

    def text(self, key: str) -> str:
        """A required string."""
        if key not in self.data:
            raise self.error(f"missing field `{key}`")
        value = self.data[key]
        if not isinstance(value, str):
            raise self.error(f"invalid type: {describe(value)}, expected a string (field `{key}`)")
        return value

    def optional_text(self, key: str) -> str | None:
        """A string that may be absent or null."""
        value = self.data.get(key)
        if value is not None and not isinstance(value, str):
            raise self.error(f"invalid type: {describe(value)}, expected a string (field `{key}`)")
        return value

    def value(self, key: str, *, alias: str | None = None, required: bool = True) -> Any:
        """Any JSON value; ``alias`` is accepted when ``key`` is absent (``state::set`` takes ``data`` too)."""
        if key in self.data:
            return self.data[key]
        if alias is not None and alias in self.data:
            return self.data[alias]
        if required:
            raise self.error(f"missing field `{key}`")
        return None

    def ops(self, key: str = "ops") -> list[Op]:
        """The update ops, validated with production's input rules (``by`` must be a JSON integer).

        Example:
            >>> ops = Fields("stream::update", {"ops": [{"type": "increment", "path": "n", "by": 2}]}).ops()
            >>> ops == Fields("stream::update", {"ops": [{"by": 2, "path": "n", "type": "increment"}]}).ops()
            True
        """
        raw = self.value(key)
        if not isinstance(raw, list):
            raise self.error(f"invalid type: {describe(raw)}, expected a sequence (field `{key}`)")
        try:
            if len(raw) == 1:
                return [_counter_op(raw[0])]
            return parse_ops(raw, strict=True)
        except (TypeError, ValueError) as exc:
            raise self.error(str(exc)) from None


_COUNTER_OPS: dict[tuple[str, str, int], Op] = {}
_COUNTER_OPS_MAX = 256
# a counter's path is short; a long one is parsed every time, so what is remembered stays small in bytes too
# (256 paths of a 4 MiB frame each would otherwise be held after their updates ended)
_COUNTER_PATH_MAX = 256


def _counter_op(op: Any) -> Op:
    """``parse_op(op, strict=True)``, remembered for ops made of ``type``, ``path`` and an integer ``by`` alone
    (increments and decrements, one per update of a counter): such an op's parse depends on those three values
    only, and its :class:`~iii.stream_ops.Op` holds no value object that two updates could share. Building an
    ``Op`` (a frozen dataclass) and checking its fields cost about 7 µs per update; the lookup a tenth of that.
    Invalid ops, and ops whose path is longer than 256 characters, are parsed every time; at most 256 are
    remembered.

    Example:
        >>> _counter_op({"type": "decrement", "path": "n", "by": 1}) is _counter_op(
        ...     {"type": "decrement", "path": "n", "by": 1})
        True
        >>> _counter_op({"type": "increment", "path": "n", "by": True})
        Traceback (most recent call last):
        ...
        TypeError: update op #0 (increment): 'by' must be an integer, got bool True
    """
    if type(op) is not dict or len(op) != 3:
        return parse_op(op, strict=True)
    kind, path, by = op.get("type"), op.get("path"), op.get("by")
    # exact types: True == 1 and 1.0 == 1 would share a key with 1, and a path must be hashable to be a key
    if type(kind) is not str or type(path) is not str or type(by) is not int or len(path) > _COUNTER_PATH_MAX:
        return parse_op(op, strict=True)
    key = (kind, path, by)
    parsed = _COUNTER_OPS.get(key)
    if parsed is None:
        parsed = parse_op(op, strict=True)
        if parsed.value is not None:  # not reached for three keys with "by": kept for safety
            return parsed
        if len(_COUNTER_OPS) >= _COUNTER_OPS_MAX:
            _COUNTER_OPS.clear()
        _COUNTER_OPS[key] = parsed
    return parsed
