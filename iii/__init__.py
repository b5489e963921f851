"""iii SDK for Python: a drop-in for ``iii-sdk`` 0.10 with the fixes of docs/protocol.md#sdk-improvements.

Example:
    >>> import iii
    >>> len(iii.__all__) >= 45
    True
    >>> # client = iii.register_worker("ws://localhost:49134")
"""

# First, so a mix with the published iii-sdk fails with its own clear ImportError (see iii.errors).
from . import errors as _errors  # noqa: F401

# Second, before any ``iii.protocol.X``: importing one of those while ``iii.protocol`` is not loaded yet holds its lock
# while waiting for this package to finish, and a thread running this file waits for it (CPython gh-83065).
from . import protocol as _protocol  # noqa: F401
from ._version import __version__ as __version__
from .channels import ChannelReader, ChannelWriter
from .errors import ConnectionLostError, IIIError, InvocationError, ShuttingDownError
from .format_utils import extract_request_format, extract_response_format, python_type_to_format
from .iii import III, TriggerAction, register_worker
from .iii_constants import FunctionRef, InitOptions, ReconnectionConfig, TelemetryOptions
from .iii_types import (
    EnqueueResult,
    FunctionInfo,
    HttpAuthConfig,
    HttpInvocationConfig,
    MessageType,
    RegisterFunctionFormat,
    RegisterFunctionInput,
    RegisterFunctionMessage,
    RegisterServiceInput,
    RegisterTriggerInput,
    RegisterTriggerMessage,
    RegisterTriggerTypeInput,
    RegisterTriggerTypeMessage,
    StreamChannelRef,
    TriggerActionEnqueue,
    TriggerActionVoid,
    TriggerInfo,
    TriggerRequest,
    WorkerInfo,
)
from .stream import IStream, StreamContext
from .telemetry_types import OtelConfig
from .triggers import Trigger, TriggerConfig, TriggerHandler
from .types import (
    ApiRequest,
    ApiResponse,
    Channel,
    HttpRequest,
    HttpResponse,
    IIIClient,
    InternalHttpRequest,
    RemoteFunctionHandler,
)

# The peripherals land in parallel; until they exist ``import iii`` must still work for the client itself.
try:
    from .logger import Logger
except ModuleNotFoundError as _exc:  # pragma: no cover - transitional
    if _exc.name != "iii.logger":
        raise
try:
    from .utils import http
except ModuleNotFoundError as _exc:  # pragma: no cover - transitional
    if _exc.name != "iii.utils":
        raise

__all__ = [
    "III",
    "ApiRequest",
    "ApiResponse",
    "Channel",
    "ChannelReader",
    "ChannelWriter",
    "ConnectionLostError",
    "EnqueueResult",
    "FunctionInfo",
    "FunctionRef",
    "HttpAuthConfig",
    "HttpInvocationConfig",
    "HttpRequest",
    "HttpResponse",
    "IIIClient",
    "IIIError",
    "IStream",
    "InitOptions",
    "InternalHttpRequest",
    "InvocationError",
    "Logger",
    "MessageType",
    "OtelConfig",
    "ReconnectionConfig",
    "RegisterFunctionFormat",
    "RegisterFunctionInput",
    "RegisterFunctionMessage",
    "RegisterServiceInput",
    "RegisterTriggerInput",
    "RegisterTriggerMessage",
    "RegisterTriggerTypeInput",
    "RegisterTriggerTypeMessage",
    "RemoteFunctionHandler",
    "ShuttingDownError",
    "StreamChannelRef",
    "StreamContext",
    "TelemetryOptions",
    "Trigger",
    "TriggerAction",
    "TriggerActionEnqueue",
    "TriggerActionVoid",
    "TriggerConfig",
    "TriggerHandler",
    "TriggerInfo",
    "TriggerRequest",
    "WorkerInfo",
    "extract_request_format",
    "extract_response_format",
    "http",
    "python_type_to_format",
    "register_worker",
]
