"""The worker's side of the control socket as a state machine: no sockets, tasks or clocks inside.

:class:`ClientSession` holds what the protocol remembers across connections: the registration book (replayed on
every new connection, docs/protocol.md#production-behaviour-our-sdk-copes-with), the calls waiting for a result and
the connection *generation* (answers
computed for an older connection are dropped, since the engine halted those invocations). Its driver
(:class:`iii.III`) moves the bytes and runs the handlers:

- *commands in, bytes out*: ``register_*``/``unregister_*``/:meth:`ClientSession.start_call`/
  :meth:`ClientSession.answer` return the text frame to write (registrations are also kept for replay);
- *bytes in, events out*: :meth:`ClientSession.receive` turns one incoming frame into a list of events
  (:class:`Send`, :class:`WorkerRegistered`, :class:`CallSucceeded`, :class:`CallFailed`,
  :class:`InvocationRequested`, :class:`TriggerRequested`, :class:`TriggerDropped`, :class:`FrameSkipped`);
- *connection changes*: :meth:`ClientSession.connection_opened` (the replay), :meth:`ClientSession.connection_ready`
  (the ``engine::workers::register`` call), :meth:`ClientSession.connection_lost` (which calls fail: those whose
  frame reached the old socket; frames still queued are re-sent, docs/protocol.md#sdk-improvements S5).

Example:
    >>> session = ClientSession()
    >>> session.register_trigger_type("hook", "web hooks")
    '{"type":"registertriggertype","id":"hook","description":"web hooks"}'
    >>> session.connection_opened()
    ['{"type":"registertriggertype","id":"hook","description":"web hooks"}']
    >>> session.receive('{"type":"workerregistered","worker_id":"w1"}')
    [WorkerRegistered(worker_id='w1')]
    >>> session.receive('{"type":"ping"}')
    [Send(frame='{"type":"pong"}', droppable=True)]
"""

from __future__ import annotations

import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from importlib import import_module
from types import MemberDescriptorType
from typing import TYPE_CHECKING, Any, Final

from ..errors import ConnectionLostError, InvocationError, ShuttingDownError

if TYPE_CHECKING:
    from . import frames
else:  # `from . import` waits for the package's __init__ (tests/unit/test_concurrent_first_imports.py)
    frames = import_module(".frames", __package__)
from .codec import clip, escape_surrogates, loads, salvage_invocation
from .ids import InvocationIds, new_invocation_id

__all__ = [
    "RESULT_NOT_SENT",
    "WORKER_BUSY",
    "CallFailed",
    "CallSucceeded",
    "ClientSession",
    "Event",
    "FrameSkipped",
    "InvocationIds",
    "InvocationRequested",
    "Send",
    "TriggerDropped",
    "TriggerRequested",
    "WorkerRegistered",
    "describe_registration",
    "message_too_large",
    "registration_too_large",
    "result_too_large",
    "worker_busy",
]

#: The function every worker calls once its connection is ready, with its metadata.
REGISTER_WORKER_FUNCTION: Final = "engine::workers::register"


@dataclass(frozen=True, slots=True)
class Send:
    """Write ``frame`` now (a pong, or an answer the session could give without running anything); a
    ``droppable`` one (a pong: the engine asks again) may be dropped when the outbound queue is full, so a peer
    flooding pings while it does not read cannot grow the queue without end."""

    frame: str
    droppable: bool = False


@dataclass(frozen=True, slots=True)
class WorkerRegistered:
    """The engine named this connection (``None`` if its ``worker_id`` was not a string)."""

    worker_id: str | None


@dataclass(frozen=True, slots=True)
class CallSucceeded:
    """The call ``invocation_id`` returned ``result``."""

    invocation_id: str
    result: Any


@dataclass(frozen=True, slots=True)
class CallFailed:
    """The call ``invocation_id`` failed with ``error`` (an error result, a lost connection, shutdown)."""

    invocation_id: str
    error: BaseException


@dataclass(frozen=True, slots=True)
class InvocationRequested:
    """Run local function ``function_id``; answer with :meth:`ClientSession.answer` unless ``invocation_id`` is
    ``None`` (fire and forget)."""

    invocation_id: str | None
    function_id: str
    data: Any
    traceparent: str | None
    baggage: str | None
    generation: int
    #: The frame's text has no ``channel_id`` key (not even one written with ``\\u`` escapes), so ``data`` holds no
    #: channel ref and need not be walked for one (issue 10: a walk of every payload, per call).
    no_channel_refs: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class TriggerRequested:
    """The engine binds trigger ``trigger_id`` of our type ``trigger_type``; answer with
    :meth:`ClientSession.trigger_registered`."""

    trigger_id: str
    trigger_type: str
    function_id: str
    config: Any
    generation: int


@dataclass(frozen=True, slots=True)
class TriggerDropped:
    """The engine unbinds trigger ``trigger_id`` of our type ``trigger_type`` (``function_id``/``config`` as
    registered, or empty when the session never saw it)."""

    trigger_id: str
    trigger_type: str
    function_id: str
    config: Any


@dataclass(frozen=True, slots=True)
class FrameSkipped:
    """A frame that needs no action; ``level`` is the logging level it deserves and ``reason`` says why."""

    level: int
    reason: str


Event = Send | WorkerRegistered | CallSucceeded | CallFailed | InvocationRequested | TriggerRequested | \
    TriggerDropped | FrameSkipped

_CHANNEL_ADVICE: Final = "send bulk data through a channel (create_channel) and pass its ref instead"


def _slot_setters(cls: type) -> tuple[Callable[[Any, Any], None], ...] | None:
    """The ``__set__`` of the slot of each of ``cls``'s fields, in field order: what :func:`_call_succeeded` and
    :func:`_invocation_requested` fill an event with. ``None`` (they call ``cls`` itself) unless every field is a
    plain slot and nothing runs after ``__init__``."""
    if hasattr(cls, "__post_init__"):
        return None
    setters = []
    for each in fields(cls):
        slot = cls.__dict__.get(each.name)
        if type(slot) is not MemberDescriptorType:
            return None
        setters.append(slot.__set__)
    return tuple(setters)


# A frozen dataclass's __init__ sets each field through object.__setattr__ by name, a Python-level call costing twice
# what the event's slots cost set directly: an event per call made (its answer) and per invocation served.
_new_object = object.__new__
_SUCCEEDED: Final = _slot_setters(CallSucceeded)
_REQUESTED: Final = _slot_setters(InvocationRequested)


def _call_succeeded(invocation_id: str, result: Any) -> CallSucceeded:
    """``CallSucceeded(invocation_id, result)``, its slots set directly (see :data:`_SUCCEEDED`)."""
    if _SUCCEEDED is None or len(_SUCCEEDED) != 2:
        return CallSucceeded(invocation_id, result)
    event = _new_object(CallSucceeded)
    set_id, set_result = _SUCCEEDED
    set_id(event, invocation_id)
    set_result(event, result)
    return event


def _invocation_requested(invocation_id: str | None, function_id: str, data: Any, traceparent: str | None,
                          baggage: str | None, generation: int, no_channel_refs: bool) -> InvocationRequested:
    """``InvocationRequested(...)`` of these fields, its slots set directly (see :data:`_SUCCEEDED`)."""
    if _REQUESTED is None or len(_REQUESTED) != 7:
        return InvocationRequested(invocation_id, function_id, data, traceparent, baggage, generation, no_channel_refs)
    event = _new_object(InvocationRequested)
    set_id, set_function, set_data, set_traceparent, set_baggage, set_generation, set_refs = _REQUESTED
    set_id(event, invocation_id)
    set_function(event, function_id)
    set_data(event, data)
    set_traceparent(event, traceparent)
    set_baggage(event, baggage)
    set_generation(event, generation)
    set_refs(event, no_channel_refs)
    return event


def message_too_large(function_id: str, size: int, limit: int) -> InvocationError:
    """The error of a call never sent because its message is over the engine's size limit (sent, the engine would
    close the connection with 1009 and every other call on it would fail).

    Example:
        >>> message_too_large("f", 5_000_100, 4_194_304).message[:70]
        "The call to 'f' was not sent: its message is 5,000,100 bytes, over the"
    """
    return InvocationError("message_too_large", f"The call to '{function_id}' was not sent: its message is {size:,} "
                                                f"bytes, over the engine's limit of {limit:,} bytes "
                                                f"(max_message_size); {_CHANNEL_ADVICE}")


def _text_of(value: Any) -> str:
    """``value`` as text any JSON writer takes (:func:`~iii.protocol.codec.escape_surrogates`), a non-string by its
    ``str()``, ``None`` as nothing."""
    return escape_surrogates(value if isinstance(value, str) else "" if value is None else str(value))


RESULT_NOT_SENT: Final = "result_not_sent"
"""The error code answering an invocation whose handler returned, but whose result could not be sent (no JSON form,
or over the engine's message size limit): the handler's work is done (a queue does not run the job again)."""


def result_too_large(function_id: str, size: int, limit: int) -> dict[str, Any]:
    """The error body answering an invocation whose result's message is over the engine's size limit."""
    return {"code": RESULT_NOT_SENT,
            "message": f"The result of '{function_id}' was not sent: its message is {size:,} bytes, over the "
                       f"engine's limit of {limit:,} bytes (max_message_size); return bulk data through a channel "
                       "(create_channel) and its ref instead"}


WORKER_BUSY: Final = "worker_busy"
"""The error code of an invocation a worker refused, unrun, for running as many as it may at once."""


def worker_busy(function_id: str, limit: int) -> dict[str, Any]:
    """The error body answering an invocation refused because the worker already runs ``limit`` of them.

    Example:
        >>> worker_busy("f", 3)["code"]
        'worker_busy'
    """
    return {"code": WORKER_BUSY,
            "message": f"'{function_id:.200}' was not run: this worker is running as many invocations as it may at "
                       f"once ({limit:,}, max_invocations); try again later, or run more workers"}


def registration_too_large(what: str, size: int, limit: int) -> ValueError:
    """The error of a registration refused because its message is over the engine's size limit: registrations are
    sent again on every connect, so sent, it would close the connection with 1009 at every connect, for ever.

    Example:
        >>> str(registration_too_large("function 'f'", 70_000, 65_536))[:72]
        "function 'f' was not registered: its registration message is 70,000 byte"
    """
    return ValueError(f"{what} was not registered: its registration message is {size:,} bytes, over the engine's "
                      f"limit of {limit:,} bytes (max_message_size); make its description, metadata, formats or "
                      "config smaller")


_KINDS: Final = {"registerfunction": "function", "registertrigger": "trigger", "registertriggertype": "trigger type",
                 "registerservice": "service"}


def describe_registration(frame: str) -> str:
    """What a registration frame registers, for messages: ``function 'f'``, ``trigger 't1' (type 'cron', function
    'f')``, ``trigger type 'hook'``, ``service 's'``.

    Example:
        >>> describe_registration('{"type":"registertrigger","id":"t1","trigger_type":"cron","function_id":"f"}')
        "trigger 't1' (type 'cron', function 'f')"
    """
    try:
        msg = loads(frame)
    except (ValueError, UnicodeDecodeError):
        msg = None
    if not isinstance(msg, dict):
        return f"a registration {clip(frame, 60)}"
    kind = _KINDS.get(str(msg.get("type")), f"{clip(msg.get('type'), 40)}")
    what = f"{kind} {clip(str(msg.get('id')), 200)}"
    if msg.get("type") == "registertrigger":
        what += (f" (type {clip(str(msg.get('trigger_type')), 100)}, "
                 f"function {clip(str(msg.get('function_id')), 200)})")
    return what


Check = Callable[[str], None]


def _unchecked(_frame: str) -> None:
    return None


_WARNING: Final = 30
_DEBUG: Final = 10


@dataclass(slots=True)
class _Function:
    frame: str
    invokable: bool  # False for HTTP-invoked functions: the engine calls their URL, never this worker


class ClientSession:
    """The client protocol state: registrations, pending calls, generation, worker id.

    Example:
        >>> session = ClientSession()
        >>> iid, frame = session.start_call("f", {"x": 1})
        >>> [event] = session.receive('{"type":"invocationresult","invocation_id":"%s","result":2}' % iid)
        >>> event.result, session.is_pending(iid)
        (2, False)
    """

    def __init__(self) -> None:
        self._functions: dict[str, _Function] = {}
        self._services: dict[str, str] = {}
        self._triggers: dict[str, str] = {}
        self._trigger_types: dict[str, str] = {}
        # Triggers of our types the engine bound, so an unregister can pass their function and config along:
        # trigger id → (type, function id, config). Forgotten by the engine's unregistertrigger, a refusal, the
        # type's release (unregister_trigger_type) or a reconnect's sweep (forget_owned_trigger).
        self._owned_triggers: dict[str, tuple[str, str, Any]] = {}
        self._pending: dict[str, str] = {}  # invocation id → function id
        self.generation = 0
        self.worker_id: str | None = None
        self._lost_worker_id: str | None = None

    # ------------------------------------------------------------ registration book

    def register_function(self, message: Any, *, invokable: bool, check: Check = _unchecked) -> str:
        """Remember function ``message.id`` (a :class:`~iii.iii_types.RegisterFunctionMessage`) for replay and
        return its frame; ``ValueError`` if the id is taken. ``check(frame)`` may refuse it (raise): nothing is
        remembered then. (So are the other ``register_*``'s.)"""
        if message.id in self._functions:
            raise ValueError(f"function id '{message.id}' already registered")
        frame = frames.register_function(message)
        check(frame)
        self._functions[message.id] = _Function(frame, invokable)
        return frame

    def has_function(self, function_id: str) -> bool:
        """Whether ``function_id`` is registered here."""
        return function_id in self._functions

    def unregister_function(self, function_id: str) -> str:
        """Forget ``function_id``; the frame telling the engine."""
        self._functions.pop(function_id, None)
        return frames.unregister_function(function_id)

    def register_trigger(self, trigger_type: str, function_id: str, config: Any,
                         check: Check = _unchecked) -> tuple[str, str]:
        """Remember a new trigger (its id is made here); ``(trigger_id, frame)``."""
        trigger_id = str(uuid.uuid4())
        frame = frames.register_trigger(trigger_id, trigger_type, function_id, config)
        check(frame)
        self._triggers[trigger_id] = frame
        return trigger_id, frame

    def unregister_trigger(self, trigger_id: str, trigger_type: str | None) -> str:
        """Forget trigger ``trigger_id``; the frame telling the engine."""
        self._triggers.pop(trigger_id, None)
        return frames.unregister_trigger(trigger_id, trigger_type)

    def register_trigger_type(self, type_id: str, description: str, check: Check = _unchecked) -> str:
        """Own trigger type ``type_id`` (replayed on reconnect); its frame."""
        frame = frames.register_trigger_type(type_id, description)
        check(frame)
        self._trigger_types[type_id] = frame
        return frame

    def owns_trigger_type(self, type_id: str) -> bool:
        """Whether this worker registered trigger type ``type_id``."""
        return type_id in self._trigger_types

    def unregister_trigger_type(self, type_id: str) -> str:
        """Stop owning ``type_id``, forgetting the triggers of it the engine bound here; the frame telling the engine.

        (Those triggers are forgotten here, not when the engine's ``unregistertrigger`` for each comes: while
        disconnected none comes, and a production engine, which ignores the type's release, sends none.)

        Example:
            >>> session = ClientSession()
            >>> _ = session.register_trigger_type("hook", "web hooks")
            >>> _ = session.receive('{"type":"registertrigger","id":"t1","trigger_type":"hook","function_id":"f"}')
            >>> _ = session.unregister_trigger_type("hook")
            >>> session.owned_trigger_count
            0
        """
        self._trigger_types.pop(type_id, None)
        # (the loop's thread may add one meanwhile: copy() walks the table in one C-level step)
        for trigger_id, (owned_type, _, _) in self._owned_triggers.copy().items():
            if owned_type == type_id:
                self._owned_triggers.pop(trigger_id, None)
        return frames.unregister_trigger_type(type_id)

    def forget_owned_trigger(self, type_id: str, trigger_id: str) -> None:
        """Forget trigger ``trigger_id`` of our type ``type_id``: the engine no longer has it (a reconnect's sweep
        found it gone), so no ``unregistertrigger`` will come for it.

        Example:
            >>> session = ClientSession()
            >>> _ = session.register_trigger_type("hook", "web hooks")
            >>> _ = session.receive('{"type":"registertrigger","id":"t1","trigger_type":"hook","function_id":"f"}')
            >>> before = session.owned_trigger_count
            >>> session.forget_owned_trigger("hook", "t1")
            >>> before, session.owned_trigger_count
            (1, 0)
        """
        owned = self._owned_triggers.get(trigger_id)
        if owned is not None and owned[0] == type_id:
            del self._owned_triggers[trigger_id]

    @property
    def owned_trigger_count(self) -> int:
        """How many triggers of our types the engine bound here and has not unbound (what is kept of them)."""
        return len(self._owned_triggers)

    def register_service(self, message: Any, check: Check = _unchecked) -> str:
        """Remember service ``message.id`` (a :class:`~iii.iii_types.RegisterServiceMessage`); its frame."""
        frame = frames.register_service(message)
        check(frame)
        self._services[message.id] = frame
        return frame

    def replay(self) -> list[str]:
        """Every registration, in the order the engine needs them: trigger types, services, functions, triggers.

        The book is changed from the caller's threads (``register_*``) while the loop reads it here: each table is
        copied in one C-level step (``list(d.values())``) before any Python code walks it; a generator over the
        live dict raised "dictionary changed size during iteration" when a thread registered meanwhile.
        """
        return [
            *list(self._trigger_types.values()),
            *list(self._services.values()),
            *[f.frame for f in list(self._functions.values())],
            *list(self._triggers.values()),
        ]

    def missing_functions(self, present: Iterable[Any]) -> list[str]:
        """Frames of our functions absent from ``present`` (ids the engine listed), for the T7 recovery."""
        listed = set(present)
        # dict.copy() runs in C without allocating per entry, so no collection (and no switch to a thread that
        # registers) can come in the middle; list(items()) makes a tuple per entry, and a collection there could
        return [f.frame for fid, f in self._functions.copy().items() if fid not in listed]

    def missing_triggers(self, present: Iterable[Any]) -> list[str]:
        """Frames of our triggers absent from ``present`` (ids the engine listed), for the T7 recovery."""
        listed = set(present)
        return [frame for tid, frame in self._triggers.copy().items() if tid not in listed]  # see missing_functions

    def holds(self, frame: str) -> bool:
        """Whether ``frame``, a function or trigger registration of :meth:`missing_functions` /
        :meth:`missing_triggers`, is still the book's entry for its id (it was not unregistered or replaced since).

        Example:
            >>> session = ClientSession()
            >>> trigger_id, frame = session.register_trigger("cron", "f", {})
            >>> before = session.holds(frame)
            >>> before, session.holds(session.unregister_trigger(trigger_id, "cron")), session.holds(frame)
            (True, False, False)
        """
        try:
            msg = loads(frame)
        except (ValueError, UnicodeDecodeError):
            return False
        if not isinstance(msg, dict):
            return False
        kind, entry_id = msg.get("type"), msg.get("id")
        if not isinstance(entry_id, str):
            return False
        if kind == "registerfunction":
            function = self._functions.get(entry_id)
            return function is not None and function.frame == frame
        return kind == "registertrigger" and self._triggers.get(entry_id) == frame

    # ------------------------------------------------------------ connection changes

    def connection_opened(self) -> list[str]:
        """A new socket is up: a new generation starts; the frames to write before anything else (the replay)."""
        self.generation += 1
        return self.replay()

    def connection_ready(
        self, metadata: Any, traceparent: str | None = None, baggage: str | None = None
    ) -> tuple[str, str | None]:
        """The replay went out: ``(register-worker frame, old worker id)``; a non-``None`` old id means the
        registrations must be checked once the engine forgot that worker
        (docs/protocol.md#production-behaviour-our-sdk-copes-with T7)."""
        frame = frames.invoke_function(
            REGISTER_WORKER_FUNCTION, metadata, traceparent=traceparent, baggage=baggage, action={"type": "void"}
        )
        old, self._lost_worker_id = self._lost_worker_id, None
        return frame, old

    def connection_lost(self, queued: Iterable[str], *, too_big: bool = False,
                        refused_over: int | None = None) -> list[CallFailed]:
        """The socket went away. Calls whose frame is still ``queued`` (never written) stay pending and go out
        on the next connection; the others fail at once (docs/protocol.md#sdk-improvements S5) with
        :class:`~iii.errors.ConnectionLostError`, whose message says the call may have run: its frame was written
        to the socket, and an engine that read it before it saw the socket close (a stalled or SIGSTOPped one
        reads what its kernel buffered when it resumes) calls the function all the same, the answer going nowhere.
        ``too_big``: the engine closed it with 1009, which their errors say; ``refused_over``: this client closed it
        with 1009, the engine having sent a message over that many bytes.

        Example:
            >>> session = ClientSession()
            >>> iid, _ = session.start_call("f", {})
            >>> message = session.connection_lost([], too_big=True)[0].error.message
            >>> message.partition(", ")[2].partition("; ")[0]
            'after the call was sent: it may have run (retry only if running it twice is safe)'
            >>> message.partition("; ")[2]
            'the engine closed the connection: a message over its size limit (1009)'
            >>> iid, _ = session.start_call("f", {})
            >>> session.connection_lost([], refused_over=1024)[0].error.message.partition("; ")[2]
            "the engine sent a message over this client's limit of 1,024 bytes (1009)"
        """
        self._lost_worker_id = self.worker_id or self._lost_worker_id
        self.worker_id = None
        keep = set(queued)
        why = "; the engine closed the connection: a message over its size limit (1009)" if too_big else ""
        if refused_over is not None:
            why = f"; the engine sent a message over this client's limit of {refused_over:,} bytes (1009)"
        failed = []
        for iid in [iid for iid in self._pending if iid not in keep]:
            function_id = self._pending.pop(iid)
            # (the words of earlier versions first, for code that matches on them)
            message = (f"Connection to the engine was lost while invoking '{function_id}', after the call was sent: "
                       f"it may have run (retry only if running it twice is safe){why}")
            failed.append(CallFailed(iid, ConnectionLostError("connection_lost", message)))
        return failed

    def call_dropped(self, invocation_id: str, reason: str) -> CallFailed | None:
        """A pending call whose frame was dropped before reaching any socket: it fails with
        :class:`~iii.errors.ConnectionLostError` (the engine never saw it, so trying again is safe).

        Example:
            >>> session = ClientSession()
            >>> iid, _ = session.start_call("f", {})
            >>> session.call_dropped(iid, "queue full").error.message
            "The call to 'f' was never sent: queue full"
        """
        function_id = self._pending.pop(invocation_id, None)
        if function_id is None:
            return None
        message = f"The call to '{function_id}' was never sent: {reason}"
        return CallFailed(invocation_id, ConnectionLostError("connection_lost", message))

    def call_too_big(self, invocation_id: str, size: int, limit: int) -> CallFailed | None:
        """A pending call whose frame, queued, turned out over the size limit of the socket it was to go out on:
        it fails with :func:`message_too_large` (never sent)."""
        function_id = self._pending.pop(invocation_id, None)
        if function_id is None:
            return None
        return CallFailed(invocation_id, message_too_large(function_id, size, limit))

    def close(self, cause: str | None = None) -> list[CallFailed]:
        """Shutting down: every pending call fails with :class:`~iii.errors.ShuttingDownError`, noting ``cause``
        (why, when not by a call of the user's) as every later call's error does.

        Example:
            >>> session = ClientSession()
            >>> invocation_id, _ = session.start_call("greet", {})
            >>> [failed] = session.close("the interpreter is exiting")
            >>> failed.invocation_id == invocation_id, failed.error.__notes__
            (True, ['the interpreter is exiting'])
        """
        failed = [CallFailed(iid, ShuttingDownError(cause)) for iid in self._pending]
        self._pending.clear()
        return failed

    # ------------------------------------------------------------ calls

    def start_call(
        self,
        function_id: str,
        payload: Any,
        *,
        action: dict[str, Any] | None = None,
        traceparent: str | None = None,
        baggage: str | None = None,
    ) -> tuple[str | None, str]:
        """A call: ``(invocation_id, frame)``; the id is ``None`` for a void action (nobody waits), else the call
        is pending until :meth:`receive` sees its result, :meth:`connection_lost` fails it or :meth:`forget`."""
        invocation_id, frame = self.new_call(function_id, payload, action=action, traceparent=traceparent,
                                             baggage=baggage)
        if invocation_id is not None:
            self.track_call(invocation_id, function_id)
        return invocation_id, frame

    @staticmethod
    def new_call(
        function_id: str,
        payload: Any,
        *,
        action: dict[str, Any] | None = None,
        traceparent: str | None = None,
        baggage: str | None = None,
    ) -> tuple[str | None, str]:
        """The ``(invocation_id, frame)`` of :meth:`start_call` without remembering the call: it touches no
        session state, so any thread may build the frame; :meth:`track_call` (on the session's thread) starts it.

        Example:
            >>> ClientSession.new_call("f", 1, action={"type": "void"})
            (None, '{"type":"invokefunction","function_id":"f","data":1,"action":{"type":"void"}}')
        """
        invocation_id = None if action is not None and action.get("type") == "void" else new_invocation_id()
        try:
            frame = frames.invoke_function(
                function_id, payload, invocation_id=invocation_id, traceparent=traceparent, baggage=baggage,
                action=action,
            )
        except (TypeError, ValueError) as exc:
            # The type and text stay the reference SDK's (json.dumps's); the note says which call it was.
            exc.add_note(f"the call to {clip(function_id, 100)} was not sent: it cannot be written as JSON")
            raise
        return invocation_id, frame

    def track_call(self, invocation_id: str, function_id: str) -> None:
        """Call ``invocation_id`` (a frame of :meth:`new_call`) now waits for its result."""
        self._pending[invocation_id] = function_id

    def pending_function(self, invocation_id: str) -> str | None:
        """The function of call ``invocation_id`` while it waits for its result, else ``None``."""
        return self._pending.get(invocation_id)

    def is_pending(self, invocation_id: str) -> bool:
        """Whether call ``invocation_id`` still waits for a result (a queued frame of a finished call is dropped)."""
        return invocation_id in self._pending

    def forget(self, invocation_id: str) -> None:
        """The caller stopped waiting (timeout, cancellation): a late result is ignored."""
        self._pending.pop(invocation_id, None)

    # ------------------------------------------------------------ answers

    def answer(
        self,
        invocation_id: str,
        function_id: str,
        *,
        result: Any = None,
        error: Any = None,
        traceparent: str | None = None,
        generation: int,
    ) -> str | None:
        """The ``invocationresult`` for a finished :class:`InvocationRequested`, or ``None`` when it belongs to an
        older connection (the engine halted it). A result with no JSON form becomes a :data:`RESULT_NOT_SENT`
        error (the handler ran: before, ``invocation_failed``, and a queue ran its job again and dead-lettered it)."""
        if generation != self.generation:
            return None
        try:
            return frames.invocation_result(
                invocation_id, function_id, result=result, error=error, traceparent=traceparent
            )
        except (TypeError, ValueError) as exc:
            if error is not None:
                # the handler's own error that cannot be written as it is (a lone surrogate in its text): still a
                # failure, never "its result was not sent", which a queue counts as done
                failure = {"code": _text_of(error.get("code") if isinstance(error, dict) else None)
                           or "invocation_failed",
                           "message": _text_of(error.get("message") if isinstance(error, dict) else error)}
            else:
                failure = {
                    "code": RESULT_NOT_SENT,
                    "message": f"result of {function_id} is not JSON-serialisable: {exc}",
                    "stacktrace": traceback.format_exc(),
                }
            return frames.invocation_result(invocation_id, function_id, error=failure, traceparent=traceparent)

    def trigger_registered(self, event: TriggerRequested, error: Any = None) -> str | None:
        """The answer to ``event`` (``error`` if the handler refused it), or ``None`` for an older connection."""
        if error is not None:
            self._owned_triggers.pop(event.trigger_id, None)  # refused: no unregister hook for it
        if event.generation != self.generation:
            return None
        return frames.trigger_registration_result(event.trigger_id, event.trigger_type, event.function_id,
                                                  error=error)

    # ------------------------------------------------------------ incoming frames

    def receive(self, raw: str | bytes) -> list[Event]:
        """Decode one incoming frame (parsed once) into the events it causes."""
        try:
            msg = loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return self._not_json(raw, exc)
        if not isinstance(msg, dict):
            return [FrameSkipped(_WARNING, f"Skipping a frame that is not a JSON object: {clip(raw, 200)}")]
        kind = msg.get("type")
        if kind == "invocationresult":
            return self._on_result(msg)
        if kind == "invokefunction":
            # A JSON key equal to "channel_id" is written as is or with a backslash-u escape; in a text frame without
            # either no channel ref can hide (bytes may be any UTF encoding: those are walked as before).
            return self._on_invoke(msg, type(raw) is str and "channel_id" not in raw and "\\u" not in raw)
        if kind == "workerregistered":
            worker_id = msg.get("worker_id")
            if not isinstance(worker_id, str) and self.worker_id is not None:
                # a later one without a usable id must not erase the connection's: the recovery of registrations
                # lost in the engine's cleanup after the next reconnect looks for that id
                return [FrameSkipped(_WARNING, f"Skipping a workerregistered frame without a string worker_id (this "
                                               f"connection is {self.worker_id!r}): {clip(raw, 200)}")]
            if not isinstance(worker_id, str):  # said here: the later "no workerregistered came" would mislead
                return [FrameSkipped(_WARNING, f"A workerregistered frame without a string worker_id: this "
                                               f"connection's worker id stays unknown: {clip(raw, 200)}"),
                        WorkerRegistered(None)]
            self.worker_id = worker_id
            return [WorkerRegistered(worker_id)]
        if kind == "registertrigger":
            return self._on_register_trigger(msg)
        if kind == "unregistertrigger":
            return self._on_unregister_trigger(msg)
        if kind == "ping":
            return [Send(frames.PONG, droppable=True)]
        if kind == "pong":
            return []
        return [FrameSkipped(_DEBUG, f"Ignoring message of type {kind!r}")]

    def _not_json(self, raw: str | bytes, exc: Exception) -> list[Event]:
        """A frame that is not JSON; one that plainly answers a call of ours fails that call at once (before, it
        waited out its whole timeout for an answer that had come)."""
        events: list[Event] = [FrameSkipped(_WARNING, f"Skipping a frame that is not JSON ({exc}): {clip(raw, 200)}")]
        salvaged = salvage_invocation(raw)
        invocation_id = salvaged["invocation_id"]
        if (salvaged["message_type"] == "invocationresult" and invocation_id is not None
                and self._pending.pop(invocation_id, None) is not None):
            events.append(CallFailed(invocation_id, InvocationError(
                "invalid_result", f"the answer to invocation {invocation_id} could not be decoded: {exc}")))
        elif salvaged["message_type"] == "invokefunction" and invocation_id is not None:
            # its caller is told at once, as the engine tells a worker's broken call (before, it waited out its
            # timeout for an answer that could never come); droppable, as every answer made 1:1 from a frame
            function_id = salvaged["function_id"] or ""
            error = {"code": "invalid_message", "message": f"the call of {clip(function_id, 200)} could not be decoded "
                                                          f"by the worker: {exc!s:.300}"}
            events.append(Send(frames.invocation_result(invocation_id, function_id, error=error), droppable=True))
        return events

    def _on_result(self, msg: dict[str, Any]) -> list[Event]:
        invocation_id = msg.get("invocation_id")
        if not isinstance(invocation_id, str) or self._pending.pop(invocation_id, None) is None:
            return [FrameSkipped(_DEBUG, f"Result for an unknown or expired invocation {invocation_id!r} ignored")]
        error = msg.get("error")
        if error:
            return [CallFailed(invocation_id, InvocationError.from_wire(error))]
        return [_call_succeeded(invocation_id, msg.get("result"))]

    def _on_invoke(self, msg: dict[str, Any], no_channel_refs: bool = False) -> list[Event]:
        invocation_id = msg.get("invocation_id")
        function_id = msg.get("function_id")
        if not isinstance(function_id, str):
            return [FrameSkipped(_WARNING, f"invokefunction without a string function_id ignored: {clip(msg, 200)}")]
        if invocation_id is not None and not isinstance(invocation_id, str):
            # Run, it would be a call nobody can be answered for (before: run as fire-and-forget, without a word)
            return [FrameSkipped(_WARNING, f"invokefunction of {clip(function_id, 200)} not run: its invocation_id is "
                                           f"not a string ({clip(invocation_id, 80)})")]
        iid = invocation_id
        function = self._functions.get(function_id)
        if function is not None and function.invokable:
            traceparent, baggage = msg.get("traceparent"), msg.get("baggage")
            return [_invocation_requested(iid, function_id, msg.get("data"),
                                          traceparent if isinstance(traceparent, str) else None,
                                          baggage if isinstance(baggage, str) else None, self.generation,
                                          no_channel_refs)]
        if function is None:
            error = {"code": "function_not_found", "message": f"Function '{function_id}' not found"}
        else:
            error = {"code": "function_not_invokable",
                     "message": "Function is HTTP-invoked and cannot be invoked locally"}
        events: list[Event] = [FrameSkipped(_WARNING, error["message"])]
        if iid is not None:
            # droppable at a full outbound queue, like a pong: made 1:1 from the engine's frames, so an engine that
            # calls unknown functions while it does not read could otherwise grow the queue without end
            events.append(Send(frames.invocation_result(iid, function_id, error=error), droppable=True))
        return events

    def _on_register_trigger(self, msg: dict[str, Any]) -> list[Event]:
        trigger_id = str(msg.get("id", ""))
        trigger_type = msg.get("trigger_type")
        function_id = str(msg.get("function_id", ""))
        if isinstance(trigger_type, str) and trigger_type in self._trigger_types:
            config = msg.get("config")
            # known from the request on: an unregister that comes while the owner's register hook still runs (the
            # engine lists the trigger before the owner's answer) gets its config, not None
            self._owned_triggers[trigger_id] = (trigger_type, function_id, config)
            return [TriggerRequested(trigger_id, trigger_type, function_id, config, self.generation)]
        error = {"code": "trigger_type_not_found", "message": "Trigger type not found"}
        # droppable at a full outbound queue, like a pong: made 1:1 from the engine's frames, so an engine sending
        # these while it did not read grew the queue without end (196,498 frames, 230 MB in 6 s)
        return [Send(frames.trigger_registration_result(trigger_id, trigger_type, function_id, error=error),
                     droppable=True)]

    def _on_unregister_trigger(self, msg: dict[str, Any]) -> list[Event]:
        trigger_id = str(msg.get("id", ""))
        trigger_type = msg.get("trigger_type")
        known = self._owned_triggers.pop(trigger_id, None)
        if not isinstance(trigger_type, str) or trigger_type not in self._trigger_types:
            return [FrameSkipped(_DEBUG, f"unregistertrigger {trigger_id} for a type we do not own "
                                         f"({trigger_type!r})")]
        _, function_id, config = known or ("", "", None)
        return [TriggerDropped(trigger_id, trigger_type, function_id, config)]
