"""The one implementation of stream update-op semantics (docs/reference/payloads.md#streams-stream).

Every stream backend, the engine (when it composes an update for a custom stream) and the SDK's
``create_stream`` fallback call :func:`apply_ops`, so an update means the same thing everywhere.

Rules in short: ``path`` names one top-level key (``"a.b"`` is the literal key ``a.b``); ops act only on an
object; a missing item starts as ``{}``; ops apply in order to a copy and the result is returned.

Example:
    >>> apply_ops({"n": 1}, [{"type": "increment", "path": "n", "by": 2}, {"type": "set", "path": "s", "value": "x"}])
    {'n': 3, 's': 'x'}
    >>> apply_update(None, [{"type": "decrement", "path": "n", "by": 1}])
    (None, {'n': -1})
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import BaseModel

from .stream import UpdateDecrement, UpdateIncrement, UpdateMerge, UpdateOp, UpdateRemove, UpdateSet

__all__ = [
    "OP_TYPES",
    "Op",
    "OpType",
    "apply_ops",
    "apply_update",
    "op_to_wire",
    "ops_to_wire",
    "parse_op",
    "parse_ops",
    "to_model",
]

OpType = Literal["set", "merge", "increment", "decrement", "remove"]
OP_TYPES: Final[tuple[OpType, ...]] = ("set", "merge", "increment", "decrement", "remove")

_I64_MIN: Final = -(2**63)
_I64_MAX: Final = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Op:
    """One validated update op. ``path`` is ``None`` only for a root ``merge``; ``by`` only for (in|de)crement.

    Example:
        >>> parse_op({"type": "remove", "path": "a"})
        Op(type='remove', path='a', value=None, by=0)
    """

    type: OpType
    path: str | None
    value: Any = None
    by: int = 0


def _field(op: Mapping[str, Any] | BaseModel, name: str) -> tuple[bool, Any]:
    if isinstance(op, BaseModel):
        # pydantic may have validated a merge dict into another op class; unset fields are "absent"
        if name not in type(op).model_fields:
            extra = op.model_extra or {}
            return (name in extra, extra.get(name))
        return (True, getattr(op, name))
    return (name in op, op.get(name))


def _dict_field(op: Any, name: str) -> tuple[bool, Any]:
    return (name in op, op.get(name))


def _where(index: int, kind: str) -> str:
    """How an error names op ``index`` (built only when one is raised: the ops of every update pass here)."""
    return f"update op #{index} ({kind})"


def _parse_by(raw: Any, index: int, kind: str, strict: bool) -> int:
    if type(raw) is int and _I64_MIN <= raw <= _I64_MAX:  # the usual case, decoded JSON
        return raw
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise TypeError(f"{_where(index, kind)}: 'by' must be an integer, got {type(raw).__name__} {raw!r}")
    if isinstance(raw, float):
        # T31: production only accepts JSON integers; an integral float is a local convenience unless strict
        if strict or not math.isfinite(raw) or not raw.is_integer():
            raise ValueError(f"{_where(index, kind)}: 'by' must be an integral number (a JSON integer), got {raw!r}")
        raw = int(raw)
    by: int = raw
    if not _I64_MIN <= by <= _I64_MAX:
        raise ValueError(f"{_where(index, kind)}: 'by' {by} does not fit in a signed 64-bit integer")
    return by


def parse_op(op: UpdateOp | Mapping[str, Any] | Op, *, index: int = 0, strict: bool = False) -> Op:
    """Validate one op given as a wire dict, an ``iii.stream`` model or an :class:`Op`.

    ``strict=True`` applies the production engine's input rules (``by`` must already be an ``int``; ``2.0`` is
    refused); the default also accepts integral floats such as ``2.0`` and turns them into ``2``.
    Raises ``TypeError`` for a wrongly typed field and ``ValueError`` for a bad value, naming op ``index``.

    Example:
        >>> parse_op({"type": "increment", "path": "n", "by": 2.0}).by
        2
        >>> parse_op({"type": "increment", "path": "n", "by": 1.5})
        Traceback (most recent call last):
        ...
        ValueError: update op #0 (increment): 'by' must be an integral number (a JSON integer), got 1.5
    """
    if isinstance(op, Op):
        return op
    if type(op) is dict:
        field = _dict_field  # decoded JSON, the usual case: no ABC or model checks per field
    elif isinstance(op, Mapping | BaseModel):
        field = _field
    else:
        raise TypeError(f"update op #{index}: expected an object, got {type(op).__name__}")
    _, kind = field(op, "type")
    if kind not in OP_TYPES:
        raise ValueError(f"update op #{index}: unknown type {kind!r} (expected one of {', '.join(OP_TYPES)})")
    has_path, path = field(op, "path")
    if kind == "merge":
        if path is not None and not isinstance(path, str):
            raise TypeError(f"{_where(index, kind)}: 'path' must be a string or null, got {type(path).__name__}")
    elif not has_path:
        raise ValueError(f"{_where(index, kind)}: 'path' is required")
    elif not isinstance(path, str):
        raise TypeError(f"{_where(index, kind)}: 'path' must be a string, got {type(path).__name__}")
    if kind in ("increment", "decrement"):
        has_by, by = field(op, "by")
        if not has_by:
            raise ValueError(f"{_where(index, kind)}: 'by' is required")
        return Op(kind, path, by=_parse_by(by, index, kind, strict))
    if kind == "remove":
        return Op(kind, path)
    _, value = field(op, "value")
    return Op(kind, path, value)


def parse_ops(ops: Sequence[UpdateOp | Mapping[str, Any] | Op], *, strict: bool = False) -> list[Op]:
    """Validate a whole op list (see :func:`parse_op`); an empty list is allowed.

    Example:
        >>> [o.type for o in parse_ops([{"type": "set", "path": "a", "value": 1}, {"type": "merge", "value": {}}])]
        ['set', 'merge']
    """
    # A plain list skips the ABC checks, and an already parsed op is kept as it is: the engine parses the ops
    # of a ``stream::update`` once, and the store and apply_ops see the same list again (hot path, per update).
    if type(ops) is not list and (isinstance(ops, str | bytes | Mapping) or not isinstance(ops, Sequence)):
        raise TypeError(f"update ops must be a list of op objects, got {type(ops).__name__}")
    return [op if type(op) is Op else parse_op(op, index=i, strict=strict) for i, op in enumerate(ops)]


def _apply_one(v: Any, op: Op) -> Any:
    if op.type == "set":
        if op.path == "":
            if isinstance(op.value, dict):
                # A copy: the ops after it change the working value in place, and the op's own value must stay as
                # the caller gave it (a store that runs the ops again after a retry applied them twice: {"n": 2}).
                return dict(op.value)
            if op.value is not None:
                return op.value
            if isinstance(v, dict):
                v[""] = None  # production in-memory behaviour: a null root set names the key ""
            return v
        if isinstance(v, dict):
            v[op.path] = op.value
        return v
    if not isinstance(v, dict):
        return v  # every other op needs an object to work on
    if op.type == "merge":
        if op.path in ("", None) and isinstance(op.value, dict):
            v.update(op.value)
        return v
    key = op.path
    assert key is not None
    if op.type == "remove":
        v.pop(key, None)
        return v
    current = v.get(key, _MISSING)
    is_int = isinstance(current, int) and not isinstance(current, bool)
    if op.type == "increment":
        v[key] = current + op.by if is_int else op.by
    elif current is _MISSING:
        v[key] = -op.by
    else:
        v[key] = current - op.by if is_int else 0
    return v


_MISSING: Final = object()


def apply_ops(value: Any, ops: Sequence[UpdateOp | Mapping[str, Any] | Op], *, strict: bool = False) -> Any:
    """Apply ``ops`` in order to a copy of ``value`` and return the result; ``value`` is never mutated.

    The copy is shallow (ops only touch top-level keys), so nested values may be shared with ``value`` and
    with the ops. All ops are validated before any is applied.

    Example:
        >>> before = {"a": 1, "b": "x"}
        >>> apply_ops(before, [{"type": "remove", "path": "a"}, {"type": "merge", "path": "", "value": {"c": 2}}])
        {'b': 'x', 'c': 2}
        >>> before
        {'a': 1, 'b': 'x'}
    """
    parsed = parse_ops(ops, strict=strict)
    working = dict(value) if isinstance(value, dict) else value
    for op in parsed:
        working = _apply_one(working, op)
    return working


def apply_update(
    old_value: Any, ops: Sequence[UpdateOp | Mapping[str, Any] | Op], *, strict: bool = False
) -> tuple[Any, Any]:
    """``(old_value, new_value)`` for an update of a stored item; ``None`` means missing and starts as ``{}``.

    Example:
        >>> apply_update({"n": 1}, [{"type": "increment", "path": "n", "by": 1}])
        ({'n': 1}, {'n': 2})
    """
    return old_value, apply_ops({} if old_value is None else old_value, ops, strict=strict)


def op_to_wire(op: UpdateOp | Mapping[str, Any] | Op) -> dict[str, Any]:
    """The wire dict for ``op`` after validation (``merge`` always carries ``path``, T31).

    Example:
        >>> op_to_wire({"type": "merge", "value": {"a": 1}})
        {'type': 'merge', 'path': '', 'value': {'a': 1}}
    """
    parsed = parse_op(op)
    if parsed.type in ("increment", "decrement"):
        return {"type": parsed.type, "path": parsed.path, "by": parsed.by}
    if parsed.type == "remove":
        return {"type": "remove", "path": parsed.path}
    path = "" if parsed.path is None else parsed.path
    return {"type": parsed.type, "path": path, "value": parsed.value}


def ops_to_wire(ops: Sequence[UpdateOp | Mapping[str, Any] | Op], *, strict: bool = False) -> list[dict[str, Any]]:
    """The wire dicts of a whole op list after validation (see :func:`parse_ops`; errors name the op's position).

    Example:
        >>> ops_to_wire([{"type": "remove", "path": "a", "extra": 1}, {"type": "merge", "value": {}}])
        [{'type': 'remove', 'path': 'a'}, {'type': 'merge', 'path': '', 'value': {}}]
    """
    return [op_to_wire(op) for op in parse_ops(ops, strict=strict)]


def to_model(op: UpdateOp | Mapping[str, Any] | Op) -> UpdateOp:
    """The ``iii.stream`` model matching ``op``'s ``type``.

    Example:
        >>> to_model({"type": "increment", "path": "n", "by": 1})
        UpdateIncrement(type='increment', path='n', by=1)
    """
    wire = op_to_wire(op)
    models: dict[str, type[UpdateOp]] = {
        "set": UpdateSet,
        "merge": UpdateMerge,
        "increment": UpdateIncrement,
        "decrement": UpdateDecrement,
        "remove": UpdateRemove,
    }
    return models[wire["type"]].model_validate(wire)
