"""The engine's per-worker session: one control-socket peer's protocol, with no sockets, tasks or clocks.

The engine (the driver) hands every frame a worker sends to :meth:`WorkerSession.receive` and gets back one
event saying what the frame means (or ``None`` for frames that mean nothing: blank ones, ``pong``,
``workerregistered``). Undecodable frames become :class:`Rejected`, carrying the ``invalid_message`` answer the
JSON policy asks for when the frame was plainly an ``invokefunction`` with an id (docs/protocol.md#engine-improvements
E1). Frames the
engine sends are built by the session's command methods, which return the text to write.

Frames over :data:`OFFLOOP_PARSE_BYTES` may be parsed in a worker thread: :func:`read_frame` is pure, and
:meth:`WorkerSession.accept` books its outcome afterwards.

Example:
    >>> session = WorkerSession("w1")
    >>> session.receive('{"type":"ping"}')
    PingReceived()
    >>> session.pong()
    '{"type":"pong"}'
    >>> event = session.receive('{"type":"invokefunction","invocation_id":"8D1C3B4E-0F6A-4C39-9C55-2F1F3F0F5A11",'
    ...                         '"function_id":"f","data":1}')
    >>> event.message["invocation_id"]  # written in canonical form, as production re-serialises it
    '8d1c3b4e-0f6a-4c39-9c55-2f1f3f0f5a11'
    >>> rejected = session.receive('{"type":"invokefunction","invocation_id":"8d1c3b4e-0f6a-4c39-9c55-2f1f3f0f5a11"}')
    >>> rejected.reply is not None, session.dropped_frames
    (True, 1)
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from . import frames
else:  # `from . import` waits for the package's __init__ (tests/unit/test_concurrent_first_imports.py)
    frames = import_module(".frames", __package__)
from .codec import WireError, decode_object, is_uuid, loads, salvage_invocation
from .messages import (
    TELEMETRY_PREFIXES,
    InvocationResultMessage,
    InvokeFunctionMessage,
    Ping,
    RegisterFunctionMessage,
    RegisterServiceMessage,
    RegisterTriggerMessage,
    RegisterTriggerTypeMessage,
    Telemetry,
    TriggerRegistrationResultMessage,
    UnregisterFunctionMessage,
    UnregisterTriggerMessage,
    UnregisterTriggerTypeMessage,
)

#: Frames longer than this are best parsed off the event loop (the Python-level depth walk then yields the GIL).
OFFLOOP_PARSE_BYTES = 256 * 1024  # a parse this size holds the interpreter for a few ms at most
#: Longest reason quoted in an ``invalid_message`` answer.
REPLY_REASON_CLIP = 1000
_LOWER_UUID_LEN = 36
#: An id already in canonical form (lower-case hex, hyphenated), as :func:`str` of a :class:`uuid.UUID` writes it.
_LOWER_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_RESULT_KEYS = frozenset(("type", "invocation_id", "function_id", "result", "error", "traceparent", "baggage"))


def clip_text(text: str, limit: int = 300) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was.

    Example:
        >>> clip_text("abcdef", 3)
        'abc…(6 chars)'
    """
    return text if len(text) <= limit else f"{text[:limit]}…({len(text)} chars)"


# -- events (what a worker's frame means) ---------------------------------------------------------------------


# The two events of the call path are named tuples (immutable, like the frozen dataclasses below): one is made per
# frame, and a frozen dataclass's ``__init__`` (an ``object.__setattr__`` per field) costs about three times as much.
class Invoke(NamedTuple):
    """A well-formed ``invokefunction`` as a plain dict (``invocation_id`` canonical when present)."""

    message: dict[str, Any]


class Result(NamedTuple):
    """A well-formed ``invocationresult`` as a plain dict (``invocation_id`` canonical).

    ``verbatim`` is the frame as sent when it already is what the engine would write to the caller (only known
    keys, canonical id, no null ``result``/``error``/``traceparent``/``baggage``): it is then forwarded as is,
    saving the re-encoding.
    """

    message: dict[str, Any]
    verbatim: str | None = None


@dataclass(frozen=True, slots=True)
class PingReceived:
    """``ping``: answer with :meth:`WorkerSession.pong`."""


@dataclass(frozen=True, slots=True)
class TelemetryReceived:
    """A binary ``OTLP``/``MTRC``/``LOGS`` frame; never answered."""

    kind: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Rejected:
    """An undecodable frame: ``reason`` says why; ``reply`` is the ``invalid_message`` result to send, if any;
    ``result_id``: the invocation an undecodable ``invocationresult`` plainly answers (its caller must hear that the
    answer was lost, or it waits for good: production's calls have no engine-side timeout)."""

    reason: str
    reply: str | None
    result_id: str | None = None


@dataclass(frozen=True, slots=True)
class RegisterFunction:
    """``registerfunction``; ``invocation`` is set for an HTTP-invoked function."""

    id: str
    description: str | None
    request_format: Any
    response_format: Any
    metadata: Any
    invocation: Any


@dataclass(frozen=True, slots=True)
class UnregisterFunction:
    """``unregisterfunction``."""

    id: str


@dataclass(frozen=True, slots=True)
class RegisterService:
    """``registerservice`` (``name`` is ``""`` when not given)."""

    id: str
    name: str
    parent_service_id: str | None


@dataclass(frozen=True, slots=True)
class RegisterTriggerType:
    """``registertriggertype``."""

    id: str
    description: str


@dataclass(frozen=True, slots=True)
class UnregisterTriggerType:
    """``unregistertriggertype``."""

    id: str


@dataclass(frozen=True, slots=True)
class RegisterTrigger:
    """``registertrigger`` (``config`` exactly as sent)."""

    id: str
    trigger_type: str
    function_id: str
    config: Any


@dataclass(frozen=True, slots=True)
class UnregisterTrigger:
    """``unregistertrigger``."""

    id: str


@dataclass(frozen=True, slots=True)
class TriggerRegistrationResult:
    """A worker's answer to a ``registertrigger`` the engine sent it (``error`` set when it failed)."""

    id: str
    trigger_type: str
    error: Any


Event = (Invoke | Result | PingReceived | TelemetryReceived | Rejected | RegisterFunction | UnregisterFunction
         | RegisterService | RegisterTriggerType | UnregisterTriggerType | RegisterTrigger | UnregisterTrigger
         | TriggerRegistrationResult)


# -- decoding -------------------------------------------------------------------------------------------------


def _normalise_id(obj: dict[str, Any]) -> bool:
    """Check ``invocation_id`` and write it in canonical form."""
    value = obj.get("invocation_id")
    if type(value) is str and _LOWER_UUID.fullmatch(value):  # what every SDK sends: one match, nothing to rewrite
        return True
    if type(value) is not str or not is_uuid(value):
        return False
    if len(value) != _LOWER_UUID_LEN or value != value.lower():
        obj["invocation_id"] = str(uuid.UUID(value))
    return True


def _optional_str(obj: dict[str, Any], key: str) -> bool:
    value = obj.get(key)
    return value is None or type(value) is str


def _fast_invoke(obj: dict[str, Any]) -> bool:
    """Whether a parsed ``invokefunction`` is well-formed (else the strict decoder says why)."""
    if type(obj.get("function_id")) is not str or "data" not in obj:
        return False
    if obj.get("invocation_id") is not None and not _normalise_id(obj):
        return False
    if not (_optional_str(obj, "traceparent") and _optional_str(obj, "baggage")):
        return False
    action = obj.get("action")
    if action is None:
        return True
    if type(action) is not dict:
        return False
    kind = action.get("type")
    return kind == "void" or (kind == "enqueue" and type(action.get("queue")) is str)


def _fast_result(obj: dict[str, Any]) -> bool:
    """Whether a parsed ``invocationresult`` is well-formed."""
    return (type(obj.get("function_id")) is str and _normalise_id(obj)
            and _optional_str(obj, "traceparent") and _optional_str(obj, "baggage"))


def _verbatim(obj: dict[str, Any], sent_id: object) -> bool:
    """Whether a well-formed result frame is already what the engine would send on (see :class:`Result`)."""
    if obj["invocation_id"] is not sent_id or not obj.keys() <= _RESULT_KEYS:
        return False
    if obj.get("traceparent", "") is None or obj.get("baggage", "") is None:
        return False
    if "error" in obj:
        return obj["error"] is not None and "result" not in obj  # the engine drops the result next to an error
    return obj.get("result", 0) is not None


def _as_dict(msg: InvokeFunctionMessage | InvocationResultMessage) -> dict[str, Any]:
    out = msg.model_dump(exclude={"message_type"})
    if out.get("invocation_id") is not None:
        _normalise_id(out)
    return out


def _rejected(err: WireError) -> Rejected:
    reply = None
    if err.message_type == "invokefunction" and err.invocation_id is not None:
        reply = frames.invocation_result(err.invocation_id, err.function_id or "", error={
            "code": "invalid_message", "message": clip_text(err.reason, REPLY_REASON_CLIP)})
    elif err.message_type == "invocationresult" and err.invocation_id is not None:
        # in canonical form, as a good result's id is matched: the call's id written in upper case or without
        # dashes (a form the engine accepts) ended nothing, and its caller waited for good
        return Rejected(err.reason, None, str(uuid.UUID(err.invocation_id)))
    return Rejected(err.reason, reply)


def _from_message(msg: Any, obj: dict[str, Any]) -> Event | None:
    if isinstance(msg, InvokeFunctionMessage | InvocationResultMessage):
        return Invoke(_as_dict(msg)) if isinstance(msg, InvokeFunctionMessage) else Result(_as_dict(msg))
    if isinstance(msg, RegisterFunctionMessage):
        return RegisterFunction(msg.id, msg.description, obj.get("request_format"), obj.get("response_format"),
                                obj.get("metadata"), obj.get("invocation") if msg.invocation is not None else None)
    if isinstance(msg, UnregisterFunctionMessage):
        return UnregisterFunction(msg.id)
    if isinstance(msg, RegisterServiceMessage):
        return RegisterService(msg.id, msg.name or "", msg.parent_service_id)
    if isinstance(msg, RegisterTriggerTypeMessage):
        return RegisterTriggerType(msg.id, msg.description)
    if isinstance(msg, UnregisterTriggerTypeMessage):
        return UnregisterTriggerType(msg.id)
    if isinstance(msg, RegisterTriggerMessage):
        return RegisterTrigger(msg.id, msg.trigger_type, msg.function_id, obj.get("config", msg.config))
    if isinstance(msg, UnregisterTriggerMessage):
        return UnregisterTrigger(msg.id)
    if isinstance(msg, TriggerRegistrationResultMessage):
        return TriggerRegistrationResult(msg.id, msg.trigger_type, msg.error)
    if isinstance(msg, Ping):
        return PingReceived()
    return None  # pong and workerregistered from a worker mean nothing


def read_frame(raw: str | bytes) -> Event | None:
    """What one frame means, under the one JSON policy (parsed once); pure, so it may run in a thread.

    Example:
        >>> read_frame('{"type":"unregisterfunction","id":"a::b"}')
        UnregisterFunction(id='a::b')
        >>> read_frame("   ") is None
        True
        >>> read_frame('{"type":"nope"}').reason
        "unknown message type 'nope'"
    """
    if isinstance(raw, bytes) and raw[:4] in TELEMETRY_PREFIXES:
        return TelemetryReceived(raw[:4].decode(), raw[4:])
    try:
        obj = loads(raw)
    except ValueError as exc:
        if not raw or raw.isspace():
            return None  # blank frames are ignored, as production does
        return _rejected(WireError(f"invalid JSON: {exc}", **salvage_invocation(raw)))
    if type(obj) is dict:
        kind = obj.get("type")
        if kind == "invokefunction" and _fast_invoke(obj):
            return Invoke(obj)
        if kind == "invocationresult":
            sent_id = obj.get("invocation_id")
            if _fast_result(obj):
                return Result(obj, raw if type(raw) is str and _verbatim(obj, sent_id) else None)
        if kind == "ping":
            return PingReceived()
    try:
        msg = decode_object(obj, strict=True)
    except WireError as err:
        return _rejected(err)
    if isinstance(msg, Telemetry):  # pragma: no cover - a JSON object never decodes to telemetry
        return None
    return _from_message(msg, obj)


class WorkerSession:
    """One worker's side of the control protocol: frames in → :data:`Event`, commands → frames out.

    It counts what it saw (``frames_in``, ``telemetry_frames``, ``dropped_frames``) and owns nothing else: routing,
    registries and modules belong to the driver.
    """

    __slots__ = ("dropped_frames", "frames_in", "telemetry_frames", "worker_id")

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self.frames_in = 0
        self.telemetry_frames = 0
        self.dropped_frames = 0

    @staticmethod
    def parse_off_loop(raw: str | bytes) -> bool:
        """Whether ``raw`` is big enough that the driver should run :func:`read_frame` in a thread."""
        return len(raw) > OFFLOOP_PARSE_BYTES and not (isinstance(raw, bytes) and raw[:4] in TELEMETRY_PREFIXES)

    def receive(self, raw: str | bytes) -> Event | None:
        """What the frame ``raw`` means (see :func:`read_frame`), booked on this session."""
        return self.accept(read_frame(raw))

    def accept(self, event: Event | None) -> Event | None:
        """Book an event :func:`read_frame` produced (possibly in a thread) and hand it back."""
        self.frames_in += 1
        kind = type(event)
        if kind is TelemetryReceived:
            self.telemetry_frames += 1
        elif kind is Rejected:
            self.dropped_frames += 1
        return event

    # -- commands (every frame is built by :mod:`iii.protocol.frames`) ------------------------------------------

    def registered(self) -> str:
        """The ``workerregistered`` greeting naming this worker's id."""
        return frames.worker_registered(self.worker_id)

    @staticmethod
    def pong() -> str:
        """The answer to a ``ping``."""
        return frames.PONG

    @staticmethod
    def invoke(invocation_id: str, function_id: str, data: Any, traceparent: str | None = None,
               baggage: str | None = None) -> str:
        """Ask this worker to run ``function_id`` (the answer comes back as a :class:`Result`)."""
        return frames.invoke_function(function_id, data, invocation_id=invocation_id, traceparent=traceparent,
                                      baggage=baggage)

    @staticmethod
    def result(invocation_id: str, function_id: str, result: Any, error: Any, traceparent: str | None = None,
               baggage: str | None = None, result_json: str | None = None) -> str:
        """Answer one of this worker's invocations (``result`` left out when null or when ``error`` is set;
        ``result_json``: the result already encoded, see :func:`iii.protocol.frames.invocation_result`)."""
        return frames.invocation_result(invocation_id, function_id, result=result, error=error,
                                        traceparent=traceparent, baggage=baggage, result_json=result_json)

    @staticmethod
    def register_trigger(trigger_id: str, trigger_type: str, function_id: str, config: Any) -> str:
        """Hand this worker (the trigger type's owner) a trigger to serve."""
        return frames.register_trigger(trigger_id, trigger_type, function_id, config)

    @staticmethod
    def unregister_trigger(trigger_id: str, trigger_type: str) -> str:
        """Tell this worker (the trigger type's owner) to stop serving a trigger."""
        return frames.unregister_trigger(trigger_id, trigger_type)
