"""Dump the public surface of the ``iii`` SDK modules (docs/protocol.md#reference-sdk-differences) as JSON on stdout.

Run it under the interpreter whose ``iii`` package you want described; it imports nothing but the standard
library, ``iii`` and pydantic, so it works in the reference SDK's own environment too.

For every module: whether it imports, its ``__all__``, and every public name it owns (see :func:`owned_names`),
each described by :func:`describe` (kind, signature, pydantic fields, dataclass fields, enum members, methods).

Example:
    $ /tmp/ref/venv/bin/python tests/interop/surface_dump.py > ref.json
    $ .venv/bin/python tests/interop/surface_dump.py iii.stream      # only some modules
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import importlib
import inspect
import json
import re
import sys
import types
import typing
from typing import Any

MODULES = (
    "iii",
    "iii.iii",
    "iii.iii_types",
    "iii.iii_constants",
    "iii.types",
    "iii.triggers",
    "iii.channels",
    "iii.stream",
    "iii.state",
    "iii.utils",
    "iii.format_utils",
    "iii.logger",
    "iii.telemetry",
    "iii.telemetry_types",
    "iii.telemetry_exporters",
    "iii.worker_metrics",
    "iii.otel_worker_gauges",
)

_SCALARS = (bool, int, float, str, bytes, type(None))
_CONTAINERS = (tuple, list, dict, set, frozenset)
_MISSING = object()
_STDLIB_SOURCES = (typing, collections.abc, types)
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def stable_repr(value: Any) -> str:
    """``repr`` without memory addresses, so two processes describe the same default identically.

    Example:
        >>> stable_repr(lambda: 1).startswith("<function")
        True
    """
    text = _ADDRESS.sub("", repr(value))
    # Functions as defaults: only the qualified name is comparable across processes.
    if isinstance(value, types.FunctionType):
        text = f"<function {value.__qualname__}>"
    return text


def describe_signature(obj: Any, *, drop_first: bool = False) -> dict[str, Any] | str:
    """Parameters as ``[{name, kind, default}]`` (``default`` absent when required), or an error string.

    Example:
        >>> describe_signature(lambda a, *, b=1: None)["params"][1]
        {'name': 'b', 'kind': 'KEYWORD_ONLY', 'default': '1'}
    """
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError) as exc:
        return f"<no signature: {type(exc).__name__}>"
    params = list(sig.parameters.values())
    if drop_first and params and params[0].kind in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        params = params[1:]
    out = []
    for p in params:
        entry: dict[str, Any] = {"name": p.name, "kind": p.kind.name}
        if p.default is not p.empty:
            entry["default"] = stable_repr(p.default)
        out.append(entry)
    return {"params": out}


def _is_plain_import(name: str, value: Any) -> bool:
    """``from typing import Callable`` and friends: the same object under the same name in a stdlib module."""
    return any(getattr(source, name, _MISSING) is value for source in _STDLIB_SOURCES)


def _is_typing_alias(name: str, value: Any) -> bool:
    """A module-level type alias (``X = Union[...]``, ``StreamContext = Any``), not a plain typing import."""
    if isinstance(value, typing.TypeVar) or _is_plain_import(name, value):
        return False
    module = getattr(value, "__module__", None)
    origin = typing.get_origin(value)
    if origin is not None or isinstance(value, types.UnionType):
        return True
    if module == "typing":
        own_name = getattr(value, "_name", None) or getattr(value, "__name__", None)
        return own_name != name
    return False


def owned_names(module: types.ModuleType) -> list[str]:
    """Public names a module offers on purpose: ``__all__``, plus classes/functions defined in it, plus
    constants and type aliases. Plain imports of other modules' names are left out.

    Example:
        >>> import json as j
        >>> "dumps" in owned_names(j)
        True
    """
    names = set(getattr(module, "__all__", ()) or ())
    for name, value in vars(module).items():
        if name.startswith("_") or isinstance(value, types.ModuleType) or _is_plain_import(name, value):
            continue
        if inspect.isclass(value) or inspect.isfunction(value) or inspect.isbuiltin(value):
            owned = getattr(value, "__module__", None) == module.__name__
        else:
            owned = isinstance(value, _SCALARS + _CONTAINERS) or dataclasses.is_dataclass(value)
        if owned or _is_typing_alias(name, value):
            names.add(name)
    return sorted(names)


def _pydantic_fields(cls: type) -> dict[str, Any] | None:
    fields = getattr(cls, "model_fields", None)
    if not isinstance(fields, dict):
        return None
    out: dict[str, Any] = {}
    for fname, info in fields.items():
        # An alias equal to the field name behaves like no alias at all.
        alias = info.alias if info.alias != fname else None
        entry: dict[str, Any] = {"alias": alias, "required": info.is_required()}
        if not info.is_required():
            try:
                entry["default"] = stable_repr(info.get_default(call_default_factory=True))
            except Exception as exc:  # a factory that needs validated data
                entry["default"] = f"<factory error {type(exc).__name__}>"
        out[fname] = entry
    return out


def _dataclass_fields(cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        entry: dict[str, Any] = {}
        if f.default is not dataclasses.MISSING:
            entry["default"] = stable_repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            entry["default"] = stable_repr(f.default_factory())
        out[f.name] = entry
    return out


def _member_kind(raw: Any) -> str:
    if isinstance(raw, staticmethod):
        return "staticmethod"
    if isinstance(raw, classmethod):
        return "classmethod"
    if isinstance(raw, property):
        return "property"
    if inspect.isfunction(raw):
        return "method"
    return "attribute"


def _methods(cls: type) -> dict[str, Any]:
    """Public members defined by classes of the ``iii`` package in ``cls``'s MRO (not pydantic/object ones)."""
    out: dict[str, Any] = {}
    for name in dir(cls):
        if name.startswith("_") or name == "model_config":
            continue
        owner = next((k for k in cls.__mro__ if name in vars(k)), None)
        if owner is None or not str(getattr(owner, "__module__", "")).startswith("iii"):
            continue
        raw = vars(owner)[name]
        kind = _member_kind(raw)
        if kind == "attribute" and name in (getattr(cls, "model_fields", None) or {}):
            continue
        entry: dict[str, Any] = {"kind": kind}
        func = raw.__func__ if isinstance(raw, staticmethod | classmethod) else raw
        if kind in ("method", "staticmethod", "classmethod"):
            entry["async"] = inspect.iscoroutinefunction(func)
            entry["abstract"] = bool(getattr(func, "__isabstractmethod__", False))
            entry["signature"] = describe_signature(func, drop_first=kind != "staticmethod")
        elif kind == "property":
            entry["settable"] = raw.fset is not None
        else:
            entry["value"] = stable_repr(raw) if isinstance(raw, _SCALARS) else type(raw).__name__
        out[name] = entry
    return out


def _describe_class(cls: type) -> dict[str, Any]:
    info: dict[str, Any] = {"kind": "class"}
    pydantic = _pydantic_fields(cls)
    if issubclass(cls, enum.Enum):
        info["flavour"] = "enum"
        info["mixin"] = [b.__name__ for b in cls.__mro__[1:] if b in (str, int)]
        info["members"] = {m.name: stable_repr(m.value) for m in cls}
        return info
    if pydantic is not None:
        info["flavour"] = "pydantic"
        info["fields"] = pydantic
        config = getattr(cls, "model_config", {}) or {}
        # Effective values: an explicit setting equal to pydantic's default behaves the same as none.
        info["config"] = {
            "populate_by_name": bool(config.get("populate_by_name") or config.get("validate_by_name")),
            "extra": config.get("extra") or "ignore",
        }
        params = (getattr(cls, "__pydantic_generic_metadata__", None) or {}).get("parameters", ())
        info["generic"] = len(params)
    elif dataclasses.is_dataclass(cls):
        info["flavour"] = "dataclass"
        info["fields"] = _dataclass_fields(cls)
        info["init"] = describe_signature(cls)
    else:
        info["flavour"] = "protocol" if getattr(cls, "_is_protocol", False) else "plain"
        info["generic"] = len(getattr(cls, "__parameters__", ()))
        info["abstract"] = bool(getattr(cls, "__abstractmethods__", ()))
        info["exception"] = issubclass(cls, BaseException)
        if info["flavour"] == "plain":
            info["init"] = describe_signature(cls)
    info["methods"] = _methods(cls)
    return info


def describe(name: str, value: Any) -> dict[str, Any]:
    """One public name: ``{"kind": ...}`` plus whatever can be compared for that kind.

    Example:
        >>> describe("X", 3)
        {'kind': 'constant', 'type': 'int', 'value': '3'}
    """
    if isinstance(value, types.ModuleType):
        return {"kind": "module", "name": value.__name__}
    if _is_typing_alias(name, value):
        return {"kind": "alias"}
    if inspect.isclass(value):
        return _describe_class(value)
    if inspect.isfunction(value) or inspect.isbuiltin(value):
        return {
            "kind": "function",
            "async": inspect.iscoroutinefunction(value),
            "signature": describe_signature(value),
        }
    if isinstance(value, _SCALARS + _CONTAINERS):
        return {"kind": "constant", "type": type(value).__name__, "value": stable_repr(value)}
    if dataclasses.is_dataclass(value):
        return {"kind": "constant", "type": type(value).__name__, "value": stable_repr(value)}
    if callable(value):
        return {"kind": "callable", "signature": describe_signature(value)}
    return {"kind": "object", "type": type(value).__name__}


def _channel_instances(module: types.ModuleType) -> dict[str, Any]:
    """Instance attributes of the channel ends (``stream`` is set in ``__init__``, invisible on the class)."""
    from iii.iii_types import StreamChannelRef

    out: dict[str, Any] = {}
    for cls_name, direction in (("ChannelWriter", "write"), ("ChannelReader", "read")):
        ref = StreamChannelRef(channel_id="c", access_key="k", direction=direction)
        # Both ends connect lazily, so constructing one opens nothing.
        instance = getattr(module, cls_name)("ws://127.0.0.1:9", ref)
        attributes = {
            name: type(getattr(instance, name)).__name__
            for name in dir(instance)
            if not name.startswith("_") and not callable(getattr(instance, name))
        }
        out[cls_name] = {"attributes": attributes}
    return out


# Modules whose classes need an instance to show their whole surface.
_INSTANCE_PROBES = {"iii.channels": _channel_instances}


def dump_module(module_name: str) -> dict[str, Any]:
    """The description of one module, or ``{"import_error": ...}``.

    Example:
        >>> dump_module("json")["names"]["dumps"]["kind"]
        'function'
    """
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        return {"import_error": f"{type(exc).__name__}: {exc}"}
    all_names = getattr(module, "__all__", None)
    names: dict[str, Any] = {}
    for name in owned_names(module):
        if not hasattr(module, name):
            names[name] = {"kind": "missing (listed in __all__)"}
            continue
        names[name] = describe(name, getattr(module, name))
    out: dict[str, Any] = {
        "file": getattr(module, "__file__", None),
        "all": sorted(all_names) if all_names is not None else None,
        "names": names,
    }
    probe = _INSTANCE_PROBES.get(module_name)
    if probe is not None:
        try:
            out["instances"] = probe(module)
        except Exception as exc:
            out["instances"] = f"<probe failed: {type(exc).__name__}: {exc}>"
    return out


def main(argv: list[str]) -> int:
    modules = argv or list(MODULES)
    json.dump({m: dump_module(m) for m in modules}, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
