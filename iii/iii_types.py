"""Wire models of the iii protocol (pydantic v2), import-compatible with ``iii-sdk`` 0.10.

Every ``...Message`` model carries ``message_type`` with the wire alias ``type``. Turning models into frames
(and frames back into models) is the job of :mod:`iii.wire`, which applies the rules of
docs/protocol.md#sdk-improvements S1.

Example:
    >>> from iii.iii_types import InvokeFunctionMessage
    >>> InvokeFunctionMessage(function_id="greet", data={"name": "Ada"}).message_type.value
    'invokefunction'
"""

from __future__ import annotations

import warnings
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class HttpAuthHmac(BaseModel):
    """HMAC request signing; ``secret_key`` names an environment variable on the engine host."""

    type: Literal["hmac"] = "hmac"
    secret_key: str


class HttpAuthBearer(BaseModel):
    """Bearer token auth; ``token_key`` names an environment variable on the engine host."""

    type: Literal["bearer"] = "bearer"
    token_key: str


class HttpAuthApiKey(BaseModel):
    """API key in ``header``; ``value_key`` names an environment variable on the engine host."""

    type: Literal["api_key"] = "api_key"
    header: str
    value_key: str


HttpAuthConfig = HttpAuthHmac | HttpAuthBearer | HttpAuthApiKey


class HttpInvocationConfig(BaseModel):
    """How the engine calls an HTTP-invoked function.

    Example:
        >>> HttpInvocationConfig(url="https://example.com/fn").method
        'POST'
    """

    url: str
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    timeout_ms: int | None = None
    headers: dict[str, str] | None = None
    auth: HttpAuthConfig | None = None


class MessageType(str, Enum):  # noqa: UP042 - the reference type is a str Enum
    """The ``type`` of every control-socket message (lowercase wire names)."""

    REGISTER_FUNCTION = "registerfunction"
    UNREGISTER_FUNCTION = "unregisterfunction"
    REGISTER_SERVICE = "registerservice"
    INVOKE_FUNCTION = "invokefunction"
    INVOCATION_RESULT = "invocationresult"
    REGISTER_TRIGGER_TYPE = "registertriggertype"
    REGISTER_TRIGGER = "registertrigger"
    UNREGISTER_TRIGGER = "unregistertrigger"
    UNREGISTER_TRIGGER_TYPE = "unregistertriggertype"
    TRIGGER_REGISTRATION_RESULT = "triggerregistrationresult"
    WORKER_REGISTERED = "workerregistered"


class _Message(BaseModel):
    # Unknown keys are ignored on the wire (docs/protocol.md#framing); aliases and field names are both accepted.
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class RegisterTriggerTypeMessage(_Message):
    id: str
    description: str
    message_type: MessageType = Field(default=MessageType.REGISTER_TRIGGER_TYPE, alias="type")


class UnregisterTriggerTypeMessage(_Message):
    id: str
    message_type: MessageType = Field(default=MessageType.UNREGISTER_TRIGGER_TYPE, alias="type")


class UnregisterTriggerMessage(_Message):
    id: str
    message_type: MessageType = Field(default=MessageType.UNREGISTER_TRIGGER, alias="type")
    trigger_type: str | None = None


class TriggerRegistrationResultMessage(_Message):
    id: str
    trigger_type: str
    function_id: str
    result: Any = None
    error: Any = None
    message_type: MessageType = Field(default=MessageType.TRIGGER_REGISTRATION_RESULT, alias="type")


class RegisterTriggerTypeInput(BaseModel):
    """A custom trigger type: ``id`` and a required ``description``."""

    id: str
    description: str


class RegisterTriggerInput(BaseModel):
    """Bind trigger ``type`` with ``config`` to ``function_id``."""

    type: str
    function_id: str
    config: Any = None


class RegisterServiceInput(BaseModel):
    """A logical service grouping; ``name`` defaults to ``id``."""

    id: str
    name: str | None = None
    description: str | None = None
    parent_service_id: str | None = None


class RegisterTriggerMessage(_Message):
    id: str
    trigger_type: str
    function_id: str
    config: Any
    message_type: MessageType = Field(default=MessageType.REGISTER_TRIGGER, alias="type")


class RegisterServiceMessage(_Message):
    id: str
    name: str | None = None
    description: str | None = None
    parent_service_id: str | None = None
    message_type: MessageType = Field(default=MessageType.REGISTER_SERVICE, alias="type")


class RegisterFunctionFormat(BaseModel):
    """Legacy parameter description (``name``/``type``/``body``/``items``)."""

    name: str
    type: str
    description: str | None = None
    body: list[RegisterFunctionFormat] | None = None
    items: RegisterFunctionFormat | None = None
    required: bool = False


class RegisterFunctionInput(BaseModel):
    """What ``register_function`` accepts besides a plain id string."""

    id: str
    description: str | None = None
    request_format: RegisterFunctionFormat | dict[str, Any] | None = None
    response_format: RegisterFunctionFormat | dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    invocation: HttpInvocationConfig | None = None


class RegisterFunctionMessage(_Message):
    id: str
    description: str | None = None
    request_format: RegisterFunctionFormat | dict[str, Any] | None = None
    response_format: RegisterFunctionFormat | dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    invocation: HttpInvocationConfig | None = None
    message_type: MessageType = Field(default=MessageType.REGISTER_FUNCTION, alias="type")


class TriggerActionEnqueue(BaseModel):
    """Route an invocation through the named queue."""

    type: Literal["enqueue"] = "enqueue"
    queue: str


class TriggerActionVoid(BaseModel):
    """Fire and forget: no result comes back."""

    type: Literal["void"] = "void"


TriggerAction = TriggerActionEnqueue | TriggerActionVoid


class EnqueueResult(BaseModel):
    """The engine's answer to an enqueue action."""

    messageReceiptId: str


class TriggerRequest(BaseModel):
    """Arguments of ``III.trigger``.

    Example:
        >>> TriggerRequest(function_id="greet", payload={"name": "Ada"}).timeout_ms is None
        True
    """

    function_id: str
    payload: Any = None
    action: TriggerActionEnqueue | TriggerActionVoid | None = None
    timeout_ms: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _said_unknown(cls, data: Any) -> Any:
        # Unknown keywords are ignored, as the reference's models ignore them (code written for it keeps working),
        # but not silently: TriggerRequest(function_id="f", data=...) ran the function with payload None.
        if isinstance(data, dict):
            unknown = sorted(str(key) for key in data if key not in cls.model_fields)
            if unknown:
                warnings.warn(f"TriggerRequest ignores {', '.join(map(repr, unknown))}: its fields are "
                              f"{', '.join(cls.model_fields)}", UserWarning, stacklevel=3)
        return data


class InvokeFunctionMessage(_Message):
    function_id: str
    data: Any
    invocation_id: str | None = None
    traceparent: str | None = None
    baggage: str | None = None
    action: TriggerActionEnqueue | TriggerActionVoid | None = None
    message_type: MessageType = Field(default=MessageType.INVOKE_FUNCTION, alias="type")


class InvocationResultMessage(_Message):
    invocation_id: str
    function_id: str
    result: Any = None
    error: Any = None
    traceparent: str | None = None
    baggage: str | None = None
    message_type: MessageType = Field(default=MessageType.INVOCATION_RESULT, alias="type")


class WorkerRegisteredMessage(_Message):
    worker_id: str
    message_type: MessageType = Field(default=MessageType.WORKER_REGISTERED, alias="type")


class UnregisterFunctionMessage(_Message):
    id: str
    message_type: MessageType = Field(default=MessageType.UNREGISTER_FUNCTION, alias="type")


class FunctionInfo(BaseModel):
    """One entry of ``engine::functions::list``."""

    function_id: str
    description: str | None = None
    request_format: dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


class TriggerInfo(BaseModel):
    """One entry of ``engine::triggers::list``."""

    id: str
    trigger_type: str
    function_id: str
    config: Any = None


WorkerStatus = Literal["connected", "available", "busy", "disconnected"]


class WorkerInfo(BaseModel):
    """One entry of ``engine::workers::list`` (the engine's ``latest_metrics`` and ``pid`` are dropped)."""

    id: str
    name: str | None = None
    runtime: str | None = None
    version: str | None = None
    os: str | None = None
    ip_address: str | None = None
    status: WorkerStatus
    connected_at_ms: int
    function_count: int
    functions: list[str]
    active_invocations: int


class StreamChannelRef(BaseModel):
    """Address of one end of a channel; plain JSON inside payloads."""

    channel_id: str
    access_key: str
    direction: Literal["read", "write"]


class OtelLogEvent(BaseModel):
    """An OpenTelemetry log record as the engine reports it."""

    timestamp_unix_nano: int
    observed_timestamp_unix_nano: int
    severity_number: int
    severity_text: str
    body: str
    attributes: dict[str, Any] = Field(default_factory=dict)
    trace_id: str | None = None
    span_id: str | None = None
    resource: dict[str, str] = Field(default_factory=dict)
    service_name: str = ""
    instrumentation_scope_name: str | None = None
    instrumentation_scope_version: str | None = None


IIIMessage = (
    RegisterFunctionMessage
    | UnregisterFunctionMessage
    | InvokeFunctionMessage
    | InvocationResultMessage
    | RegisterServiceMessage
    | RegisterTriggerMessage
    | RegisterTriggerTypeMessage
    | UnregisterTriggerMessage
    | UnregisterTriggerTypeMessage
    | TriggerRegistrationResultMessage
    | WorkerRegisteredMessage
)
