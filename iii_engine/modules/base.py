"""What an engine module is, and what the engine offers it.

The engine is functions all the way down: a module contributes built-in functions and trigger types to the
same registry worker functions live in, and reaches everything else (calling functions, firing triggers, the
channel relay) through :class:`EngineServices`. Modules never import ``iii_engine.engine``.

Example:
    >>> class Hello(EngineModule):
    ...     name = "hello"
    ...     class_names = ("modules::hello::HelloModule",)
    ...     async def start(self) -> None:
    ...         async def greet(data: object, ctx: InvocationContext) -> object:
    ...             return {"hello": data}
    ...         self.services.register_function(BuiltinFunction("hello::greet", greet))
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar, Final, NamedTuple, Protocol, cast

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.callback_set import callback_name
from iii.errors import PicklesByState
from iii.iii_types import TriggerInfo
from iii.protocol.client import RESULT_NOT_SENT, WORKER_BUSY
from iii_streams.messages import error_line, mask_passwords

from .. import closing
from ..settings import MAX_TIMEOUT_MS, Field, Settings


class EngineError(PicklesByState, Exception):
    """An error result ``{code, message}`` produced by the engine or a built-in function.

    Example:
        >>> EngineError("function_not_found", "Function x not found").body()
        {'code': 'function_not_found', 'message': 'Function x not found'}
    """

    def __init__(self, code: str, message: str, stacktrace: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.stacktrace = stacktrace

    def body(self) -> dict[str, Any]:
        """The wire ``ErrorBody``."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.stacktrace is not None:
            out["stacktrace"] = self.stacktrace
        return out


UNWRITABLE: Final = "serialization_error"
"""The error code of a call whose data the engine cannot write in a frame for its worker (no JSON form, or nested
past what JSON is read with once the frame's own level counts): data the engine made itself, as a trigger's event.
Nothing was sent; sending it again cannot succeed."""

#: The error codes of a condition call that did not decide (:meth:`EngineServices.condition_passes` with
#: ``wait_if_busy=False`` raises them): its worker refused it for being busy, the call was stopped unanswered (its
#: worker left, the engine is stopping) or timed out, nobody serves the function now, its data could not be
#: written for its worker (:data:`UNWRITABLE`: it was never asked), or its answer could not be sent
#: (``result_not_sent``: it ran, and what it decided is unknown).
UNDECIDED_CODES: frozenset[str] = frozenset({WORKER_BUSY, "invocation_stopped", "invocation_timeout",
                                             "function_not_found", "engine_stopping", UNWRITABLE, RESULT_NOT_SENT})


class CallNotSent(EngineError):
    """The :class:`EngineError` (``invocation_stopped``) ending a call whose callee left before the call's frame
    reached its socket (it waited for room in the callee's queue, or was dropped from it unwritten): nothing ran,
    and a retry is safe. Only the engine raises it: a worker's answer comes for a call it received, so an error a
    worker sends, whatever its words, is never one.

    ``worker_id`` names the worker that left (``None`` when not known), so that a caller can tell whether another
    worker serves the function already.

    Example:
        >>> isinstance(CallNotSent("invocation_stopped", "Invocation of f stopped: ..."), EngineError)
        True
    """

    worker_id: str | None = None


class UnwritableBody(dict[str, Any]):
    """The error body (:meth:`CallUnwritable.body`) of a call the engine could not write for its worker, told apart
    by its type from a worker's answer of the same code (the REST API answers the one 400, the other 500); written
    as a plain object.

    Example:
        >>> body = CallUnwritable(UNWRITABLE, "the call of f could not be written for its worker").body()
        >>> isinstance(body, UnwritableBody), body["code"]
        (True, 'serialization_error')
    """


class CallUnwritable(EngineError):
    """The :class:`EngineError` (:data:`UNWRITABLE`) ending a call whose data the engine could not write in a frame
    for its worker: nothing was sent, and no later try of the same data can succeed (a queue dead-letters its job at
    once). Only the engine raises it: a worker answers only a call it received, so its error is never one.

    Example:
        >>> isinstance(CallUnwritable(UNWRITABLE, "the call of f could not be written for its worker"), EngineError)
        True
    """

    def body(self) -> UnwritableBody:
        """The wire ``ErrorBody``, typed as the engine's own (:class:`UnwritableBody`)."""
        return UnwritableBody(super().body())


class EngineStartError(PicklesByState, RuntimeError):
    """The engine could not start; everything it had started is stopped again and every port released.

    ``str()`` is one line, with URL passwords masked.
    """


class ModuleStartError(EngineStartError):
    """A configured module could not start (bad settings, store unreachable, port taken, not implemented here).

    Example:
        >>> str(ModuleStartError("modules::stream::StreamModule", OSError(98, "Address already in use")))
        'module modules::stream::StreamModule cannot start: Address already in use'
    """

    def __init__(self, module: str, cause: BaseException | str) -> None:
        self.module = module
        self.reason = mask_passwords(cause) if isinstance(cause, str) else error_line(cause)
        super().__init__(f"module {module} cannot start: {self.reason}")


class ModuleStoppedError(PicklesByState, RuntimeError):
    """A module the engine stopped tried to add something to it (a function, a trigger type, a listener, …): refused,
    as nothing would take it away again (a function of a stopped module was routed to it for good).

    Example:
        >>> str(ModuleStoppedError("state", "function state::get"))
        'module state is stopped: its function state::get is refused'
    """

    def __init__(self, module: str, what: str) -> None:
        self.module = module
        super().__init__(f"module {module} is stopped: its {what} is refused")


class InvocationContext(NamedTuple):
    """Who called a built-in function and with which trace context (immutable).

    A named tuple, not a frozen dataclass: one is made per built-in call, and a frozen dataclass's ``__init__``
    (one ``object.__setattr__`` per field) costs about three times as much.

    Example:
        >>> InvocationContext("w1", traceparent="00-ab").caller_worker_id, InvocationContext().invocation_id
        ('w1', None)
    """

    caller_worker_id: str | None = None
    invocation_id: str | None = None
    traceparent: str | None = None
    baggage: str | None = None


BuiltinHandler = Callable[[Any, InvocationContext], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class EncodedResult:
    """A built-in's result handed over already encoded: ``json`` is the JSON text of the result (made by the
    codec, so within its policy).

    Why: a large reply that does not change between calls (``engine::functions::list`` of 10,000 functions is
    1.2 MB) is encoded once and reused; a worker caller gets the text spliced into its ``invocationresult`` frame,
    an in-process caller the decoded value (its own copy).

    Example:
        >>> EncodedResult('{"functions":[]}').json
        '{"functions":[]}'
    """

    json: str


@dataclass
class BuiltinFunction:
    """A function implemented inside the engine; listed and routed like any worker function."""

    id: str
    handler: BuiltinHandler
    description: str | None = None
    request_format: dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


class TriggerTypeHandler(Protocol):
    """Engine-side registrator of a built-in trigger type (``cron``, ``http``, ``stream`` …).

    A handler that keeps more per trigger than its registration's values (a task, a subscription) may say how
    much in a ``retained_bytes_per_trigger`` attribute: each of its triggers holds that much more of its
    registrant's ``max_registration_bytes_per_worker``."""

    async def register(self, trigger: TriggerInfo) -> None:
        """Activate ``trigger``; raise :class:`EngineError` to reject it (it is then not stored).
        :func:`trigger_registrant` tells, during the call, which worker registered it."""

    async def unregister(self, trigger: TriggerInfo) -> None:
        """Deactivate ``trigger``."""


_REGISTRANT: ContextVar[str | None] = ContextVar("iii_engine_trigger_registrant", default=None)


def trigger_registrant() -> str | None:
    """The id of the worker that registered the trigger a :meth:`TriggerTypeHandler.register` under way is for
    (``None``: one the engine registered, or outside such a call). Why: the trigger's function may be another
    worker's, and a bound per worker counted against the function's server let one worker use up another's.

    Example:
        >>> async def demo() -> tuple[str | None, str | None]:
        ...     with registering("worker-1"):
        ...         inside = trigger_registrant()
        ...     return inside, trigger_registrant()
        >>> asyncio.run(demo())
        ('worker-1', None)
    """
    return _REGISTRANT.get()


@contextlib.contextmanager
def registering(worker_id: str | None) -> Iterator[None]:
    """``with registering(worker_id):`` around the engine's :meth:`TriggerTypeHandler.register` call (see
    :func:`trigger_registrant`)."""
    token = _REGISTRANT.set(worker_id)
    try:
        yield
    finally:
        _REGISTRANT.reset(token)


class InvocationObserver(Protocol):
    """Watches every function execution the engine routes (the observability module's call spans and counters).

    ``call_started`` returns a token that is handed back to ``call_finished`` when the execution ends; for a
    call routed to a worker (``builtin=False``) that is when the worker's result arrives."""

    def call_started(self, function_id: str, traceparent: str | None, *, builtin: bool,
                     worker_id: str | None = None) -> Any:
        """An execution of ``function_id`` begins."""

    def call_finished(self, token: Any, error: Any, *, builtin: bool) -> None:
        """It ended; ``error`` is the error body or ``None``."""

    def child_traceparent(self, token: Any) -> str | None:
        """The ``traceparent`` to send with the routed call, so the callee's spans nest inside this call's."""


TelemetryListener = Callable[[str, bytes, str], None]
"""``listener(kind, body, worker_id)``: a telemetry frame and the id of the worker connection that sent it."""
AnyTelemetryListener = TelemetryListener | Callable[[str, bytes], None]


def telemetry_listener(listener: AnyTelemetryListener) -> TelemetryListener:
    """``listener`` as a :data:`TelemetryListener`: one written for ``(kind, body)``, as listeners were before the
    worker's id was passed, is wrapped to take it (given three arguments, it failed on every frame). One that takes
    neither, or is async (its coroutine would never run: listeners are called inside the frame's handling), is
    refused here, with a ``TypeError`` naming it; it was accepted and failed on every frame.

    Example:
        >>> got = []
        >>> telemetry_listener(lambda kind, body: got.append(kind))("LOGS", b"{}", "w1"); got
        ['LOGS']
        >>> telemetry_listener(lambda body: None)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: telemetry listener ...<lambda> takes neither (kind, body, worker_id) nor (kind, body)
    """
    name = callback_name(listener)
    call = type(listener).__call__ if not inspect.isroutine(listener) else listener  # (an object with async __call__)
    if inspect.iscoroutinefunction(listener) or inspect.iscoroutinefunction(call):
        raise TypeError(f"telemetry listener {name} is async; it must return at once (start a task of its own "
                        f"for slow work)")
    try:
        signature = inspect.signature(listener)
    except (TypeError, ValueError):  # (no signature to read: taken as it is)
        return cast(TelemetryListener, listener)
    try:
        signature.bind("", b"", "")
    except TypeError:
        try:
            signature.bind("", b"")
        except TypeError:
            raise TypeError(f"telemetry listener {name} takes neither (kind, body, worker_id) nor (kind, body)"
                            ) from None
        two = cast(Callable[[str, bytes], None], listener)
        return lambda kind, body, _worker_id: two(kind, body)
    return cast(TelemetryListener, listener)


class StartedCall(Protocol):
    """A call in flight from :meth:`EngineServices.start_invocation`."""

    @property
    def future(self) -> asyncio.Future[tuple[Any, Any]]:
        """Resolves to ``(result, error_body)``, as an ``invocationresult`` carries them."""

    def abandon(self) -> None:
        """Stop waiting: the call leaves the engine's pending table (a late result is dropped)."""


class LocalEnd(Protocol):
    """One end of a relay channel opened in-process (what :meth:`ChannelService.open_local` hands out)."""

    async def send(self, message: str | bytes) -> None:
        """Send one message (writer end)."""

    async def recv(self) -> str | bytes:
        """Receive one message (reader end); raises ``ConnectionClosed`` at the end."""

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close normally (1000: end of stream) or with another code (4001: abort)."""

    def abort(self) -> None:
        """Drop the end at once, as a lost connection would."""


class ChannelService(Protocol):
    """The engine's channel relay as modules use it (docs/protocol.md#channels)."""

    def create(self, buffer_size: int | None, owner: str | None, max_bytes: int | None = None) -> dict[str, Any]:
        """A new channel: ``{"writer": ref, "reader": ref}`` (``owner``: the worker whose disconnect removes it)."""

    def open_local(self, channel_id: str, key: str, direction: str) -> LocalEnd:
        """Attach to one end in-process (no WebSocket); raises when the ref is unknown, wrong or taken."""

    def fill(self, channel_id: str, key: str, data: bytes | bytearray, chunk_size: int) -> None:
        """Attach the write end in-process and queue ``data`` as the channel's whole stream, ended normally (no
        task); raises when the ref is unknown, wrong or taken."""

    def discard(self, channel_id: str) -> None:
        """Drop a channel now, whatever its ends are doing."""


class NamedQueues(Protocol):
    """Serves ``action: {"type": "enqueue", "queue": …}`` calls (the queue module)."""

    async def enqueue(self, queue_name: str, function_id: str, data: Any) -> str:
        """Accept a job for ``queue_name``; the receipt id. Raises :class:`EngineError` (``enqueue_error``)."""


class ExternalFunctions(Protocol):
    """Serves functions a worker registers with an ``invocation`` object (the HTTP functions module)."""

    async def register_external(self, function_id: str, invocation_config: Any,
                                owner_worker_id: str | None) -> BuiltinFunction:
        """Check and remember the function; the built-in that runs its calls. Raises :class:`EngineError`."""

    def unregister_external(self, function_id: str, owner_worker_id: str | None) -> None:
        """Forget ``owner_worker_id``'s registration of the function."""


class FiredSlots(Protocol):
    """Slots of a :class:`FiredCallLimit` as its take returned them, with the bytes they hold
    (:class:`iii_engine.limits.FiredHold`): whoever holds them gives back exactly these, wherever it runs.

    Example (three slots: one handed to a call, which gives it back, and the other two given back by the holder):
        >>> from iii_engine.limits import FiredCalls
        >>> fired = FiredCalls(4)
        >>> slots = fired.try_take(3)
        >>> slots is not None and fired.in_flight
        3
        >>> slots.one().release(); slots.release(2); fired.in_flight
        0
    """

    def release(self, n: int | None = None) -> None:
        """Give back ``n`` of these slots (all of them by default) and their bytes."""

    def one(self) -> FiredSlots:
        """A hold of one of these slots, for the call it is handed to (which then gives it back)."""


class FiredCallLimit(Protocol):
    """The engine-wide bound on trigger-fired calls in flight (``max_fired_calls``,
    :class:`iii_engine.limits.FiredCalls`).

    A slot is held from dispatch until the fired handler's outcome is back. A producer that is itself a call
    awaits :meth:`take` (all its slots at once, or ``fire_limit`` when the wait runs out); one with nobody to wait
    uses :meth:`try_take` and, when that fails, :meth:`skip` (counted and logged, never silent). Either returns
    what it took (:class:`FiredSlots`); its holder gives exactly that back (:meth:`FiredSlots.release`), or hands
    a slot of it to the call it fires (``EngineServices.fire(..., taken=slots.one())``).
    """

    def try_take(self, n: int = 1, size: int = 0) -> FiredSlots | None:
        """Take ``n`` slots if free now; ``None`` (nothing taken) otherwise. ``size``: the bytes each one's payload
        keeps alive, when no call of a worker set them off (see :meth:`iii_engine.limits.FiredCalls.try_take`)."""

    async def take(self, n: int, what: str, targets: str = "calls") -> FiredSlots:
        """Take ``n`` slots, waiting in turn; raises :class:`EngineError` ``fire_limit`` naming ``what``."""

    def skip(self, what: str, n: int = 1) -> None:
        """Count ``n`` calls of ``what`` skipped for want of room (logged, rate-limited)."""

    def to_callee(self, slot: FiredSlots, worker_id: str, function_id: str, *,
                  tell_producer: bool = True) -> FiredSlots | None:
        """Hand ``slot`` to a call of ``function_id`` (worker ``worker_id``'s) with a place in that worker's
        ``max_fired_calls_per_worker``: what the call holds and releases when it ends; ``None`` when the worker has
        its share in flight (the slot given back, the call not to be made, counted and logged)."""

    def stats(self) -> dict[str, int]:
        """``in_flight``, ``max_fired_calls``, ``peak``, ``waiting``, ``skipped``, ``refused``."""

    def degraded(self) -> bool:
        """Whether a call was skipped or refused recently (``iii_engine.limits.DEGRADED_WINDOW_S``)."""


class EngineServices(Protocol):
    """The engine as a module sees it: everything a module may use of the engine or of another module is
    declared here (modules never look each other up by name).

    What a module adds through its ``services`` (functions, trigger types, listeners, the invocation observer, the
    queues or external functions it serves) is that module's, whenever and from whichever task it adds it: the
    engine takes it away at the module's stop (or when its start failed), and refuses anything more from it after
    that with :class:`ModuleStoppedError`; what it takes away after that (``unregister_function``, serving
    ``None``) is then a no-op."""

    @property
    def channels(self) -> ChannelService:
        """The channel relay."""

    def register_function(self, function: BuiltinFunction) -> None:
        """Add (or replace) a built-in function."""

    def unregister_function(self, function_id: str) -> None:
        """Remove a built-in function while the module runs (one the engine itself registered under that id comes
        back at the module's stop)."""

    def register_trigger_type(self, trigger_type: str, description: str, handler: TriggerTypeHandler) -> None:
        """Add a built-in trigger type; workers cannot replace it (docs/protocol.md#engine-improvements E4)."""

    def has_function(self, function_id: str) -> bool:
        """Whether ``function_id`` is currently registered (worker or built-in)."""

    def function_owner(self, function_id: str) -> str | None:
        """The id of the worker serving ``function_id`` (``None``: a built-in, or nobody serves it)."""

    def fired_callee(self, function_id: str) -> str | None:
        """The worker whose ``max_fired_calls_per_worker`` share a fan-out counts a call of ``function_id`` on: the
        worker serving it, or the worker that registered it for an HTTP-invoked function (``None``: a built-in, or
        nobody serves it)."""

    def service_functions(self, service_id: str) -> Collection[str]:
        """Ids (within the service) of the worker functions registered under ``service_id`` (e.g. ``"stream"``
        → ``get(todos)``); the collection is live, so its length tells whether it grew."""

    def add_functions_listener(self, listener: Callable[[], None]) -> None:
        """Be told, synchronously, whenever the set of registered functions may have changed."""

    async def invoke(self, function_id: str, data: Any, *, timeout_s: float | None = None) -> Any:
        """Call any function by id and await its result; raises :class:`EngineError` on an error result. ``data``
        may be :class:`~iii.protocol.codec.Encoded` (one payload for many calls: a worker's frame splices its text,
        an in-process function gets the value it was made from), here and wherever a call is made or fired."""

    async def start_invocation(self, function_id: str, data: Any) -> StartedCall:
        """Start a call and return once it is on its way, without a task for a worker's function: await
        ``started.future`` (``(result, error_body)``) alongside other things, and ``started.abandon()`` a call no
        longer waited for. Raises :class:`EngineError` (``function_not_found``)."""

    @property
    def fired_calls(self) -> FiredCallLimit:
        """The bound every trigger-fired call counts against."""

    def worker_calls_stats(self) -> dict[str, int]:
        """The ``max_calls_per_worker`` counters: ``max_calls_per_worker``, ``in_flight``, ``busiest_worker``,
        ``refused`` (answered with ``too_many_calls``), ``refused_void`` (void calls dropped)."""

    def worker_calls_degraded(self) -> bool:
        """Whether a worker's call was refused at ``max_calls_per_worker`` recently."""

    def fire(self, function_id: str, data: Any, *, taken: FiredSlots | None = None,
             busy_until: float | None = None) -> bool:
        """Call a function without waiting; its result or error is logged and dropped.

        The call holds a slot of :attr:`fired_calls` until its outcome is in, and then gives it back. ``taken``:
        the slot the caller took for it (one slot: ``hold.one()`` of a fan-out's take), now the call's; otherwise
        one is taken if free, and if none is the call is skipped and counted (``fired_calls.skip``) and ``False``
        is returned. ``busy_until``: while the worker refuses it busy, it is asked again (as :meth:`invoke_when_free`
        does) only up to this event-loop time (``loop.time()``)."""

    async def invoke_when_free(self, function_id: str, data: Any, *, until: float | None = None) -> Any:
        """:meth:`invoke` for a trigger: while the function's worker refuses the call for being busy (our SDK's
        ``worker_busy``: nothing ran), ask again for a few seconds (docs/protocol.md M11), never past ``until``
        (an event-loop time); the last refusal is counted, logged (rate-limited) and raised."""

    async def condition_passes(self, condition_function_id: str | None, payload: Any, *, wait_if_busy: bool = True,
                               busy_until: float | None = None, hold_place: bool = False) -> bool:
        """docs/protocol.md#built-in-functions: only a literal ``false`` result skips; an error skips (logged). A
        condition whose worker refuses it for being busy is asked again as :meth:`invoke_when_free` does (up to
        ``busy_until``), then skipped; with ``wait_if_busy=False`` that refusal is raised at once
        (an :class:`EngineError`), and so is a :class:`CallNotSent` (its worker left before the call reached it).
        ``hold_place``: the caller's slot is on no worker's share (a cron tick, a pub/sub delivery), so the condition
        holds a place in its own worker's ``max_fired_calls_per_worker`` while it runs (none free: skipped)."""

    def triggers_of_type(self, trigger_type: str) -> list[TriggerInfo]:
        """The active triggers of a type."""

    def module(self, name: str) -> EngineModule | None:
        """Another loaded module by :attr:`EngineModule.name`, e.g. ``"queue"`` (for reporting, e.g. its port)."""

    def loaded_modules(self) -> list[EngineModule]:
        """Every module loaded now, in start order (for reporting: ``engine::health::check`` asks each)."""

    def serve_named_queues(self, queues: NamedQueues | None) -> None:
        """Route enqueue actions to ``queues`` (``None``: none served, they fail with ``enqueue_error``)."""

    def serve_external_functions(self, host: ExternalFunctions | None) -> None:
        """Route HTTP-invoked function registrations to ``host`` (``None``: they are refused, logged)."""

    def add_telemetry_listener(self, listener: AnyTelemetryListener) -> None:
        """Receive every telemetry frame workers send, as ``listener(kind, body, worker_id)`` (``OTLP``/``MTRC``/
        ``LOGS``; ``worker_id``: the sending connection's, so a listener can share its room fairly; a listener of
        ``(kind, body)`` is called so; must not block)."""

    def set_invocation_observer(self, observer: InvocationObserver | None) -> None:
        """Watch every function execution (one observer at a time)."""


class EngineModule(ABC):
    """One engine module, configured by its production class name and settings."""

    name: ClassVar[str]
    class_names: ClassVar[tuple[str, ...]]
    enabled_by_default: ClassVar[bool] = True
    # Modules with a listener of their own (stream socket, REST API) take ``host`` and ``port`` settings; the engine
    # fills in its own host, and port 0 when the engine itself was asked for a free port.
    has_listener: ClassVar[bool] = False

    def __init__(self, services: EngineServices, config: Mapping[str, Any] | None = None) -> None:
        self.services = services
        self.config: Mapping[str, Any] = config or {}

    def listen_address(self) -> tuple[str, int] | None:
        """The ``(host, port)`` its settings have its listener bind (port 0: a free one), ``None`` without one: the
        engine checks before the start that no two of its listeners are given one port."""
        return None

    @abstractmethod
    async def start(self) -> None:
        """Register functions and trigger types, open listeners."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Close listeners and stores; called once on engine shutdown."""

    async def health(self) -> dict[str, dict[str, Any]]:
        """Components for ``engine::health::check``: ``{name: {status, details}}``, one per store, server or remote
        engine the module depends on, probed now (see :mod:`iii_engine.modules.health`); none by default.

        Example:
            >>> import asyncio
            >>> class Plain(EngineModule):
            ...     name, class_names = "plain", ()
            ...     async def start(self) -> None: ...
            >>> asyncio.run(Plain(None).health())
            {}
        """
        return {}

    def start_timeout_s(self) -> float:
        """How long the engine waits for this module's :meth:`start` before it cancels it and the start fails
        (a configuration entry's ``start_timeout_ms`` overrides it): :data:`~iii_engine.closing.MODULE_START_TIMEOUT_S`;
        a module whose start may legitimately take longer states more here.

        Example:
            >>> class Quick(EngineModule):
            ...     name, class_names = "quick", ()
            ...     async def start(self) -> None: ...
            >>> Quick(None).start_timeout_s() == closing.MODULE_START_TIMEOUT_S
            True
        """
        return closing.MODULE_START_TIMEOUT_S

    def stop_timeout_s(self) -> float:
        """How long the engine waits for this module's :meth:`stop` before it cancels it and goes on:
        :data:`~iii_engine.closing.MODULE_STOP_TIMEOUT_S` beyond what its own settings give its stop (each of its
        settings named ``*stop_timeout_ms``: the queue module's ``stop_timeout_ms``, the observability module's
        ``export_stop_timeout_ms``), so a stop that legitimately waits that long is never cut.

        Example:
            >>> class Slow(Settings):
            ...     stop_timeout_ms: int = 5000
            >>> class Queue(EngineModule):
            ...     name, class_names = "queue", ()
            ...     async def start(self) -> None: ...
            >>> module = Queue(None)
            >>> module.settings = Slow()
            >>> module.stop_timeout_s() - closing.MODULE_STOP_TIMEOUT_S
            5.0
        """
        settings = getattr(self, "settings", None)
        own = sum(value for key, value in settings if key.endswith("stop_timeout_ms") and type(value) is int) \
            if isinstance(settings, Settings) else 0
        return closing.MODULE_STOP_TIMEOUT_S + own / 1000


class ModuleSpec(Settings):
    """A module entry of the engine configuration: ``{class, config}`` (``config`` is checked by the module), and
    optionally ``start_timeout_ms``: how long the engine waits for the module's start (default: what the module
    states, :data:`~iii_engine.closing.MODULE_START_TIMEOUT_S` for most).

    Example:
        >>> ModuleSpec("modules::queue::QueueModule", {"queue_configs": {}}).class_name
        'modules::queue::QueueModule'
        >>> ModuleSpec.parse({"class": "modules::state::StateModule", "start_timeout_ms": 120000}).start_timeout_ms
        120000
        >>> ModuleSpec.parse({"class": "modules::state::StateModule", "start_timeout_ms": 0})
        Traceback (most recent call last):
        ...
        iii_engine.settings.ConfigError: start_timeout_ms: must be >= 1, got 0
        >>> ModuleSpec.parse({"config": {}})
        Traceback (most recent call last):
        ...
        iii_engine.settings.ConfigError: class: is required
    """

    class_name: str = Field(alias="class", min_length=1)
    config: dict[str, Any] = Field(default_factory=dict)
    #: how long the engine waits for the module's start (None: what the module states,
    #: :meth:`EngineModule.start_timeout_s`)
    start_timeout_ms: int | None = Field(None, ge=1, le=MAX_TIMEOUT_MS)

    def __init__(self, class_name: str | None = None, config: Mapping[str, Any] | None = None, /,
                 **data: Any) -> None:
        if class_name is not None:
            data["class_name"] = class_name
        if config is not None:
            data["config"] = dict(config)
        super().__init__(**data)

    @classmethod
    def _rename(cls, data: Mapping[str, Any]) -> Mapping[str, Any]:
        # ``config:`` with nothing under it reads as null in YAML: no settings.
        return {k: v for k, v in data.items() if k != "config"} if data.get("config", {}) is None else data
