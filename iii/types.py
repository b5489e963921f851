"""Types shared by the client and user code: HTTP request/response shapes, channels, the client protocol.

Example:
    >>> ApiResponse(status_code=201, body={"ok": True}).__iii_json__()
    {'status_code': 201, 'body': {'ok': True}, 'headers': {}}
    >>> is_channel_ref({"channel_id": "c", "access_key": "k", "direction": "read"})
    True
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from .iii_types import (
    FunctionInfo,
    HttpInvocationConfig,
    RegisterFunctionInput,
    RegisterFunctionMessage,
    RegisterServiceInput,
    RegisterTriggerInput,
    RegisterTriggerTypeInput,
    RegisterTriggerTypeMessage,
    StreamChannelRef,
    TriggerInfo,
    TriggerRequest,
)
from .stream import IStream
from .triggers import Trigger, TriggerHandler

if TYPE_CHECKING:
    from .channels import ChannelReader, ChannelWriter, WritableStream

__all__ = [
    "ApiRequest",
    "ApiResponse",
    "Channel",
    "FunctionsAvailableCallback",
    "HttpRequest",
    "HttpResponse",
    "IIIClient",
    "InternalHttpRequest",
    "Invocation",
    "RemoteFunctionData",
    "RemoteFunctionHandler",
    "RemoteServiceFunctionData",
    "RemoteTriggerTypeData",
    "is_channel_ref",
]

TInput = TypeVar("TInput")
TOutput = TypeVar("TOutput")

RemoteFunctionHandler = Callable[[Any], Awaitable[Any]]
"""What ``register_function`` calls: one positional argument, the raw JSON payload."""

FunctionsAvailableCallback = Callable[[list[FunctionInfo]], None]
"""Receives the full function list each time the engine reports a change."""


class IIIClient(Protocol):
    """The client surface user code may depend on (``III`` implements it)."""

    def register_trigger(self, trigger: RegisterTriggerInput | dict[str, Any]) -> Trigger: ...

    def register_service(self, service: RegisterServiceInput | dict[str, Any]) -> None: ...

    def register_function(
        self,
        func: RegisterFunctionInput | dict[str, Any],
        handler_or_invocation: RemoteFunctionHandler | HttpInvocationConfig,
    ) -> Any: ...

    def trigger(self, request: dict[str, Any] | TriggerRequest) -> Any: ...

    def register_trigger_type(
        self,
        trigger_type: RegisterTriggerTypeInput | dict[str, Any],
        handler: TriggerHandler[Any],
    ) -> None: ...

    def unregister_trigger_type(self, trigger_type: RegisterTriggerTypeInput | dict[str, Any]) -> None: ...

    def create_channel(self, buffer_size: int | None = None) -> Channel: ...

    def create_stream(self, stream_name: str, stream: IStream[Any]) -> None: ...

    def list_functions(self) -> list[FunctionInfo]: ...

    def list_triggers(self, include_internal: bool = False) -> list[TriggerInfo]: ...

    def on_functions_available(self, callback: FunctionsAvailableCallback) -> Callable[[], None]: ...

    def shutdown(self) -> None: ...


class RemoteFunctionData(BaseModel):
    """A registered function as kept by a client: its message and its handler (``None`` when HTTP-invoked).

    Kept for reference-SDK compatibility; :class:`iii.iii.III` does not use it.

    Example:
        >>> RemoteFunctionData(message=RegisterFunctionMessage(id="f")).handler is None
        True
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    message: RegisterFunctionMessage
    handler: RemoteFunctionHandler | None = None


class RemoteServiceFunctionData(BaseModel):
    """Like :class:`RemoteFunctionData`, with a handler required (reference-SDK compatibility).

    Example:
        >>> async def handler(data: Any) -> Any: return data
        >>> RemoteServiceFunctionData(message=RegisterFunctionMessage(id="f"), handler=handler).message.id
        'f'
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    message: RegisterFunctionMessage
    handler: RemoteFunctionHandler


class RemoteTriggerTypeData(BaseModel):
    """A trigger type owned by a client and its handler (reference-SDK compatibility).

    Example:
        >>> # RemoteTriggerTypeData(message=RegisterTriggerTypeMessage(id="t", description="d"), handler=h)
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    message: RegisterTriggerTypeMessage
    handler: TriggerHandler[Any]


class Invocation(Generic[TOutput]):
    """A pending call's future with idempotent ``resolve`` / ``reject`` (reference-SDK compatibility).

    Example:
        >>> loop = asyncio.new_event_loop()
        >>> invocation = Invocation(loop.create_future())
        >>> invocation.resolve(1); invocation.reject(ValueError("late"))
        >>> invocation._future.result()
        1
        >>> loop.close()
    """

    def __init__(self, future: asyncio.Future[TOutput]) -> None:
        self._future = future

    def resolve(self, value: TOutput) -> None:
        """Complete with ``value`` unless already completed."""
        if not self._future.done():
            self._future.set_result(value)

    def reject(self, error: Exception) -> None:
        """Fail with ``error`` unless already completed."""
        if not self._future.done():
            self._future.set_exception(error)


class ApiRequest(BaseModel, Generic[TInput]):
    """An HTTP-trigger request as handlers see it.

    Example:
        >>> ApiRequest(body={"a": 1}).method
        'GET'
    """

    path_params: dict[str, str] = Field(default_factory=dict)
    query_params: dict[str, str | list[str]] = Field(default_factory=dict)
    body: Any | None = None
    headers: dict[str, str | list[str]] = Field(default_factory=dict)
    method: str = "GET"


class ApiResponse(BaseModel, Generic[TOutput]):
    """An HTTP-trigger response; accepts ``statusCode`` or ``status_code`` on input.

    As a function result it is sent by field name (``status_code``), which the engine reads
    (docs/protocol.md#sdk-improvements S9).

    Example:
        >>> ApiResponse(statusCode=404).status_code
        404
    """

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    status_code: int = Field(alias="statusCode")
    body: Any | None = None
    headers: dict[str, str] = Field(default_factory=dict)

    def __iii_json__(self) -> dict[str, Any]:
        """The JSON sent on the wire: field names, ``None`` body kept."""
        from .wire import jsonable

        return {"status_code": self.status_code, "body": jsonable(self.body), "headers": dict(self.headers)}


@dataclass
class Channel:
    """Both ends of a new channel, and the refs to hand to other functions."""

    writer: ChannelWriter
    reader: ChannelReader
    writer_ref: StreamChannelRef
    reader_ref: StreamChannelRef


@dataclass
class InternalHttpRequest:
    """The raw HTTP-trigger request, with the response writer and request-body reader."""

    path_params: dict[str, str]
    query_params: dict[str, str | list[str]]
    body: Any
    headers: dict[str, str | list[str]]
    method: str
    response: ChannelWriter
    request_body: ChannelReader


@dataclass
class HttpRequest:
    """An HTTP-trigger request for streaming handlers (the response goes through :class:`HttpResponse`)."""

    path_params: dict[str, str]
    query_params: dict[str, str | list[str]]
    body: Any
    headers: dict[str, str | list[str]]
    method: str
    request_body: ChannelReader


class HttpResponse:
    """A streamed HTTP response written through a channel.

    Example:
        >>> # await response.status(200); await response.headers({"content-type": "text/plain"})
        >>> # response.stream.write(b"hello"); response.close()
    """

    def __init__(self, writer: ChannelWriter) -> None:
        self._writer = writer

    async def status(self, status_code: int) -> None:
        """Send the status line before any body bytes."""
        from .wire import dumps

        await self._writer.send_message_async(dumps({"type": "set_status", "status_code": status_code}))

    async def headers(self, headers: dict[str, str]) -> None:
        """Send response headers before any body bytes."""
        from .wire import dumps

        await self._writer.send_message_async(dumps({"type": "set_headers", "headers": headers}))

    @property
    def stream(self) -> WritableStream:
        """Where body bytes go."""
        return self._writer.stream

    @property
    def writer(self) -> ChannelWriter:
        """The underlying channel writer."""
        return self._writer

    def close(self) -> None:
        """End the response body."""
        self._writer.close()


def is_channel_ref(value: Any) -> bool:
    """True for a dict shaped like a :class:`StreamChannelRef` (extra keys allowed).

    Example:
        >>> is_channel_ref({"channel_id": "c", "access_key": "k", "direction": "sideways"})
        False
    """
    return (
        isinstance(value, dict)
        and isinstance(value.get("channel_id"), str)
        and isinstance(value.get("access_key"), str)
        and value.get("direction") in ("read", "write")
    )
