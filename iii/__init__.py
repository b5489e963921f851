"""iii SDK for Python: a drop-in for ``iii-sdk`` 0.10 with the fixes of docs/protocol.md#sdk-improvements.

Each public name (and each module, as an attribute: ``iii.telemetry``) is imported on first use, so ``import iii``
is quick and imports none of the SDK's modules.

Example:
    >>> import iii
    >>> len(iii.__all__) >= 45
    True
    >>> iii.III.__name__, iii.InvocationError.__module__
    ('III', 'iii.errors')
    >>> # client = iii.register_worker("ws://localhost:49134")
"""


def _published_sdk_on_path() -> bool:
    """Whether a directory on ``sys.path`` holds metadata named as the published SDK's (``iii_sdk-*.dist-info``), read
    as ``importlib.metadata`` reads the names: a quick look (that module alone takes milliseconds to import), which
    :mod:`iii.errors` then confirms, with its clear ``ImportError``."""
    from os import listdir
    from sys import path

    for entry in path:
        try:
            names = listdir(entry or ".")
        except (OSError, TypeError, ValueError):
            continue
        for name in names:
            low = name.lower()
            if low.endswith((".dist-info", ".egg-info")) and low.rpartition(".")[0].partition("-")[0] == "iii_sdk":
                return True
    return False


# A mix with the published iii-sdk fails here, with its own clear ImportError (see iii.errors), before any module of the
# mix fails in its own way: at ``import iii`` and at the first import of any module of this package (which imports this
# package first). Only where the quick look sees one, and then ``iii.errors`` raises as it loads (it reads the same
# metadata): a module of ours imported here in a working environment would bring back the deadlock described below.
if _published_sdk_on_path():
    from importlib import import_module as _import_module

    _import_module(".errors", __name__)
del _published_sdk_on_path


# Nothing of ``iii.*`` is imported here, not even ``errors`` or ``_version``. A thread whose first import is a module of
# this package (``from iii.errors import IIIError``) takes that module's lock, then imports this package while holding
# it; a thread running this file at that moment and importing that module waited for the first: the two deadlocked,
# and CPython (before its gh-83065 fix) broke the cycle by handing one of them a half-made module. Not
# ``typing.TYPE_CHECKING``: ``typing`` alone takes milliseconds to import; type checkers read this name as that one.
TYPE_CHECKING = False
if TYPE_CHECKING:
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
    from .logger import Logger
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
    from .utils import http

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

_FROM = {"__version__": "._version", "ChannelReader": ".channels", "ChannelWriter": ".channels",
         "ConnectionLostError": ".errors", "IIIError": ".errors", "InvocationError": ".errors",
         "ShuttingDownError": ".errors", "extract_request_format": ".format_utils",
         "extract_response_format": ".format_utils", "python_type_to_format": ".format_utils", "III": ".iii",
         "TriggerAction": ".iii", "register_worker": ".iii", "FunctionRef": ".iii_constants",
         "InitOptions": ".iii_constants", "ReconnectionConfig": ".iii_constants", "TelemetryOptions": ".iii_constants",
         "EnqueueResult": ".iii_types", "FunctionInfo": ".iii_types", "HttpAuthConfig": ".iii_types",
         "HttpInvocationConfig": ".iii_types", "MessageType": ".iii_types", "RegisterFunctionFormat": ".iii_types",
         "RegisterFunctionInput": ".iii_types", "RegisterFunctionMessage": ".iii_types",
         "RegisterServiceInput": ".iii_types", "RegisterTriggerInput": ".iii_types",
         "RegisterTriggerMessage": ".iii_types", "RegisterTriggerTypeInput": ".iii_types",
         "RegisterTriggerTypeMessage": ".iii_types", "StreamChannelRef": ".iii_types",
         "TriggerActionEnqueue": ".iii_types", "TriggerActionVoid": ".iii_types", "TriggerInfo": ".iii_types",
         "TriggerRequest": ".iii_types", "WorkerInfo": ".iii_types", "Logger": ".logger", "IStream": ".stream",
         "StreamContext": ".stream", "OtelConfig": ".telemetry_types", "Trigger": ".triggers",
         "TriggerConfig": ".triggers", "TriggerHandler": ".triggers", "ApiRequest": ".types", "ApiResponse": ".types",
         "Channel": ".types", "HttpRequest": ".types", "HttpResponse": ".types", "IIIClient": ".types",
         "InternalHttpRequest": ".types", "RemoteFunctionHandler": ".types", "http": ".utils"}


if not TYPE_CHECKING:  # a type checker reads the imports above; a __getattr__ would tell it that every name exists

    def __getattr__(name: str) -> object:
        from ._lazy import attribute, submodule  # here, not above: see iii._lazy

        if name in _FROM or not name.startswith("_"):
            # First, so a mix with the published iii-sdk that the quick look above missed (metadata in a zip, a finder
            # of its own) fails with its own clear ImportError at the first name used.
            submodule(".errors", __name__)
        return attribute(globals(), _FROM, name)

    def __dir__() -> list[str]:
        from ._lazy import names

        return names(globals(), _FROM)


del TYPE_CHECKING
