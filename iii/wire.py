"""The protocol core: turning control-socket frames into messages and back, with no I/O.

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
import re
import uuid
from dataclasses import dataclass
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from .iii_types import (
    IIIMessage,
    InvocationResultMessage,
    InvokeFunctionMessage,
    MessageType,
    RegisterFunctionMessage,
    RegisterServiceMessage,
    RegisterTriggerMessage,
    RegisterTriggerTypeMessage,
    TriggerRegistrationResultMessage,
    UnregisterFunctionMessage,
    UnregisterTriggerMessage,
    UnregisterTriggerTypeMessage,
    WorkerRegisteredMessage,
)

try:  # orjson is optional: ~3x faster, but it cannot hold integers beyond 64 bits
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only without orjson
    _orjson = None  # type: ignore[assignment]

__all__ = [
    "TELEMETRY_PREFIXES",
    "Ping",
    "Pong",
    "Telemetry",
    "WireError",
    "decode",
    "dumps",
    "encode",
    "jsonable",
    "loads",
]

TELEMETRY_PREFIXES: Final = (b"OTLP", b"MTRC", b"LOGS")

_MODELS: Final[dict[str, type[BaseModel]]] = {
    MessageType.REGISTER_FUNCTION.value: RegisterFunctionMessage,
    MessageType.UNREGISTER_FUNCTION.value: UnregisterFunctionMessage,
    MessageType.REGISTER_SERVICE.value: RegisterServiceMessage,
    MessageType.INVOKE_FUNCTION.value: InvokeFunctionMessage,
    MessageType.INVOCATION_RESULT.value: InvocationResultMessage,
    MessageType.REGISTER_TRIGGER_TYPE.value: RegisterTriggerTypeMessage,
    MessageType.REGISTER_TRIGGER.value: RegisterTriggerMessage,
    MessageType.UNREGISTER_TRIGGER.value: UnregisterTriggerMessage,
    MessageType.UNREGISTER_TRIGGER_TYPE.value: UnregisterTriggerTypeMessage,
    MessageType.TRIGGER_REGISTRATION_RESULT.value: TriggerRegistrationResultMessage,
    MessageType.WORKER_REGISTERED.value: WorkerRegisteredMessage,
}

# A run of 19+ digits may be an integer beyond 64 bits, which orjson would silently turn into a float.
_LONG_DIGITS: Final = re.compile(rb"\d{19,}")


@dataclass(frozen=True)
class Ping:
    """``{"type":"ping"}``; answered with :class:`Pong`."""


@dataclass(frozen=True)
class Pong:
    """``{"type":"pong"}``."""


@dataclass(frozen=True)
class Telemetry:
    """A binary telemetry frame (``OTLP``/``MTRC``/``LOGS`` + OTLP-JSON); never answered."""

    kind: str
    body: bytes


Decoded = IIIMessage | Ping | Pong | Telemetry


class WireError(ValueError):
    """A frame that cannot be decoded, with what was wrong.

    ``message_type``, ``invocation_id`` and ``function_id`` are filled in as far as they could be read, so an
    engine can answer a broken ``invokefunction`` with an error result (PROTOCOL §9.1 E1).
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
    """Parse JSON exactly: big integers stay integers.

    Example:
        >>> loads('[12345678901234567890123]')
        [12345678901234567890123]
    """
    if _orjson is not None:
        data = raw.encode() if isinstance(raw, str) else raw
        if _LONG_DIGITS.search(data) is None:
            return _orjson.loads(data)
    return json.loads(raw)


def dumps(value: Any) -> str:
    """Serialise compactly to a JSON string, keeping key order and big integers.

    Example:
        >>> dumps({"b": 1, "a": [2**70]})
        '{"b":1,"a":[1180591620717411303424]}'
    """
    if _orjson is not None:
        try:
            return _orjson.dumps(value).decode()
        except TypeError:
            pass  # big integers, non-str keys, unknown types: the stdlib path says what is wrong
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_default)


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
        return {k if isinstance(k, str) else str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return jsonable(dataclasses.asdict(value))
    return value


# Optional envelope keys are omitted when None, as the production engine does; these are always sent.
_ALWAYS_PRESENT: Final[dict[type[BaseModel], tuple[str, ...]]] = {
    InvokeFunctionMessage: ("data",),
    RegisterTriggerMessage: ("config",),
}


def to_frame_dict(message: BaseModel) -> dict[str, Any]:
    """The JSON object for ``message`` (PROTOCOL §9.5 S1: ``data``/``config`` always present).

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


def _is_uuid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
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


def decode(raw: str | bytes, *, strict: bool = False) -> Decoded | None:
    """Parse one frame; ``None`` for blank frames, :class:`WireError` for anything undecodable.

    ``strict`` applies the production engine's checks on worker input: UUID invocation ids and the
    ``registerservice`` name rule.

    Example:
        >>> decode('{"type":"workerregistered","worker_id":"w1"}').worker_id
        'w1'
        >>> decode('{"type":"nope"}')
        Traceback (most recent call last):
        ...
        iii.wire.WireError: unknown message type 'nope'
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
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"invalid JSON: {exc}") from None
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
        raise WireError(f"unknown message type {kind!r}", message_type=kind)
    invocation_id = obj.get("invocation_id")
    function_id = obj.get("function_id")
    context = {
        "message_type": kind,
        "invocation_id": invocation_id if _is_uuid(invocation_id) else None,
        "function_id": function_id if isinstance(function_id, str) else None,
    }
    if strict:
        if model is InvokeFunctionMessage and invocation_id is not None and not _is_uuid(invocation_id):
            raise WireError(f"invocation_id {invocation_id!r} is not a UUID", **context)
        if model is InvocationResultMessage and not _is_uuid(invocation_id):
            raise WireError(f"invocation_id {invocation_id!r} is not a UUID", **context)
        if model is RegisterServiceMessage:
            if "name" in obj and obj["name"] is None:
                raise WireError("registerservice 'name' must not be null", **context)
            obj.setdefault("name", "")
    try:
        return model.model_validate(obj)  # type: ignore[return-value]
    except ValidationError as exc:
        raise WireError(f"{kind}: {_describe(exc)}", **context) from None
