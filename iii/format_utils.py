"""JSON Schema for a handler's request and response, derived from its type hints.

``register_function`` sends these as ``request_format`` / ``response_format``
(docs/protocol.md#reference-sdk-differences). For every
annotation the reference SDK understands (primitives, ``None``, ``list[X]``, ``dict[str, X]``, ``X | None``,
pydantic models) the schema is identical to the reference's, so registration frames match. Ours also covers
what the reference answers ``None`` for: bare ``list`` / ``dict``, other unions (``anyOf``), ``Literal``,
``TypedDict`` and dataclasses.

Example:
    >>> python_type_to_format(list[int])
    {'type': 'array', 'items': {'type': 'integer'}, '$schema': 'https://json-schema.org/draft/2020-12/schema'}
    >>> async def handler(data: dict[str, str]) -> bool: ...
    >>> extract_response_format(handler)["type"]
    'boolean'
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from typing import Any, Final, Literal, get_args, get_origin, get_type_hints, is_typeddict

from pydantic import BaseModel, TypeAdapter

__all__ = ["extract_request_format", "extract_response_format", "python_type_to_format"]

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"

_PRIMITIVES: Final[dict[Any, str]] = {str: "string", int: "integer", float: "number", bool: "boolean"}
_NONE_TYPE: Final = type(None)

Schema = dict[str, Any]


def _union_members(annotation: Any) -> tuple[Any, ...] | None:
    """The members of ``X | Y`` / ``Union[X, Y]``, or ``None`` when the annotation is not a union."""
    origin = get_origin(annotation)
    if origin is types.UnionType or origin is typing.Union:
        return get_args(annotation)
    return None


def _nullable(inner: Schema | None) -> Schema | None:
    # The reference turns {"type": T} into {"type": [T, "null"]} and leaves type-less schemas alone; keeping
    # that exact rule keeps our registration frames identical to the reference's.
    if inner is not None and "type" in inner:
        inner["type"] = [inner["type"], "null"]
    return inner


def _union_schema(members: tuple[Any, ...]) -> Schema | None:
    concrete = [m for m in members if m is not _NONE_TYPE]
    if len(concrete) == 1 and len(members) == 2:
        return _nullable(_schema(concrete[0]))
    options = [_schema(m) for m in members]
    if any(option is None for option in options):
        return None  # one member accepts anything, so the union does too: say nothing rather than be wrong
    return {"anyOf": options}


def _typeddict_schema(annotation: Any) -> Schema:
    # pydantic rejects typing.TypedDict before Python 3.12, so describe it ourselves.
    hints = get_type_hints(annotation)
    properties = {name: _schema(hint) or {} for name, hint in hints.items()}
    schema: Schema = {"type": "object", "properties": properties, "title": annotation.__name__}
    required = [name for name in hints if name in annotation.__required_keys__]
    if required:
        schema["required"] = required
    return schema


def _via_pydantic(annotation: Any) -> Schema | None:
    """Schema of a dataclass / Literal through pydantic, or ``None`` if pydantic cannot describe it."""
    try:
        schema: Schema = TypeAdapter(annotation).json_schema()
    except Exception:  # pydantic raises several unrelated types for unsupported annotations
        return None
    return schema


def _schema(annotation: Any) -> Schema | None:
    """The schema without the ``$schema`` header; ``None`` when the annotation says nothing useful."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return None
    members = _union_members(annotation)
    if members is not None:
        return _union_schema(members)
    if annotation is _NONE_TYPE:
        return {"type": "null"}
    if annotation in _PRIMITIVES:
        return {"type": _PRIMITIVES[annotation]}
    if annotation is list:
        return {"type": "array"}
    if annotation is dict:
        return {"type": "object"}
    origin = get_origin(annotation)
    if origin is list:
        array: Schema = {"type": "array"}
        args = get_args(annotation)
        items = _schema(args[0]) if args else None
        if items is not None:
            array["items"] = items
        return array
    if origin is dict:
        mapping: Schema = {"type": "object"}
        args = get_args(annotation)
        values = _schema(args[1]) if len(args) >= 2 else None
        if values is not None:
            mapping["additionalProperties"] = values
        return mapping
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        model_schema: Schema = annotation.model_json_schema()
        return model_schema
    if is_typeddict(annotation):
        return _typeddict_schema(annotation)
    if origin is Literal or dataclasses.is_dataclass(annotation):
        return _via_pydantic(annotation)
    return None


def python_type_to_format(annotation: Any) -> dict[str, Any] | None:
    """JSON Schema (with a 2020-12 ``$schema`` key) for a type annotation, or ``None`` if unsupported.

    Example:
        >>> python_type_to_format(int | None)["type"]
        ['integer', 'null']
        >>> python_type_to_format(Any) is None
        True
    """
    schema = _schema(annotation)
    if schema is not None:
        schema["$schema"] = JSON_SCHEMA_DIALECT
    return schema


def _hints(func: Any) -> dict[str, Any] | None:
    if not callable(func):
        return None
    try:
        return get_type_hints(func)
    except Exception:  # unresolvable forward references, odd callables: no format rather than a failed registration
        return None


def extract_request_format(func: Any) -> dict[str, Any] | None:
    """Schema of the first parameter of ``func`` (the invocation payload), or ``None`` if it has no hint.

    Example:
        >>> def handler(data: list[str]) -> None: ...
        >>> extract_request_format(handler)["items"]
        {'type': 'string'}
    """
    hints = _hints(func)
    if hints is None:
        return None
    try:
        parameters = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return None
    if not parameters:
        return None
    annotation = hints.get(parameters[0].name, inspect.Parameter.empty)
    if annotation is inspect.Parameter.empty:
        return None
    return python_type_to_format(annotation)


def extract_response_format(func: Any) -> dict[str, Any] | None:
    """Schema of the return annotation of ``func``, or ``None`` if it has none.

    Example:
        >>> def handler(data: object) -> dict[str, int]: ...
        >>> extract_response_format(handler)["additionalProperties"]
        {'type': 'integer'}
    """
    hints = _hints(func)
    if hints is None or "return" not in hints:
        return None
    return python_type_to_format(hints["return"])
