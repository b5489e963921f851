"""Input parsing for the ``stream::*`` and ``state::*`` built-ins, with production's error shape.

A payload that is not an object, lacks a key or has a mistyped key fails with code ``deserialization_error`` and
the message ``Failed to deserialize input for <function id>: <detail>``, where the detail follows the wording of
the production engine's JSON decoder (``missing field `data```, ``invalid type: integer `1`, expected a
string``). Unknown keys (``_caller_worker_id`` above all) are ignored.

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
from typing import Any

from iii.stream_ops import Op, parse_ops

from ..base import EngineError

__all__ = ["Fields", "describe"]


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
        """The update ops, validated with production's input rules (``by`` must be a JSON integer)."""
        raw = self.value(key)
        if not isinstance(raw, list):
            raise self.error(f"invalid type: {describe(raw)}, expected a sequence (field `{key}`)")
        try:
            return parse_ops(raw, strict=True)
        except (TypeError, ValueError) as exc:
            raise self.error(str(exc)) from None
