"""The protocol's message vocabulary: every control-socket message as a typed value.

The pydantic models of the JSON messages are defined in :mod:`iii.iii_types`, the module the published
iii-sdk 0.10 defines them in (their import path and ``__module__`` are part of the public surface); this module
gathers them with the frames that are not JSON objects of their own kind (:class:`Ping`, :class:`Pong`,
binary :class:`Telemetry`) and maps each ``type`` to its model.

Example:
    >>> MODELS["invokefunction"] is InvokeFunctionMessage
    True
    >>> Telemetry("OTLP", b"{}").kind
    'OTLP'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from pydantic import BaseModel

from ..iii_types import (
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

__all__ = [
    "MODELS",
    "TELEMETRY_PREFIXES",
    "Decoded",
    "IIIMessage",
    "InvocationResultMessage",
    "InvokeFunctionMessage",
    "MessageType",
    "Ping",
    "Pong",
    "RegisterFunctionMessage",
    "RegisterServiceMessage",
    "RegisterTriggerMessage",
    "RegisterTriggerTypeMessage",
    "Telemetry",
    "TriggerRegistrationResultMessage",
    "UnregisterFunctionMessage",
    "UnregisterTriggerMessage",
    "UnregisterTriggerTypeMessage",
    "WorkerRegisteredMessage",
]

#: The four-byte prefixes of binary telemetry frames.
TELEMETRY_PREFIXES: Final = (b"OTLP", b"MTRC", b"LOGS")

#: The model of every JSON message ``type`` (``ping``/``pong`` have none: see :class:`Ping`, :class:`Pong`).
MODELS: Final[dict[str, type[BaseModel]]] = {
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
