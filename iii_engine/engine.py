"""The embedded engine: composition root, control-socket dispatch, and the services modules see.

Example:
    >>> import asyncio
    >>> async def demo() -> str:
    ...     async with Engine(port=0, config=EngineConfig(modules=[])) as engine:
    ...         return engine.url.split(":")[0]
    >>> asyncio.run(demo())
    'ws'
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import inspect
import logging
import os
import types
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Coroutine, Generator, Mapping
from types import TracebackType
from typing import Any, Literal

import iii.ws_imports  # noqa: F401  # isort: skip - websockets loads whole there, under one lock (see there)
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from iii import ws_fastpath
from iii.callback_set import callback_name
from iii.iii_types import TriggerInfo
from iii.loss_log import BurstLog, LossLog, counts_text, latest_tail
from iii.protocol.client import WORKER_BUSY
from iii.protocol.codec import MAX_LISTED_DEPTH, fits_within
from iii.protocol.worker_session import (
    Event,
    Invoke,
    PingReceived,
    RegisterFunction,
    RegisterService,
    RegisterTrigger,
    RegisterTriggerType,
    Rejected,
    Result,
    TelemetryReceived,
    TriggerRegistrationResult,
    UnregisterFunction,
    UnregisterTrigger,
    UnregisterTriggerType,
    clip_text,
    read_frame,
)
from iii.ws_fastpath import drain_or_close, has_unread, send_server_frame, write_frame_now
from iii.ws_fastpath import flush as flush_frames
from iii_streams.deadlines import finish_within, let_go
from iii_streams.messages import error_line

from . import closing, own_listener
from .allocator import MemoryReleaser
from .channels import ChannelRelay
from .closing import StoreCloses, close_within
from .config import EngineConfig, config_from_mapping
from .invocations import Invocations, Started
from .limits import (
    REGISTRATION_OVERHEAD,
    SKIP_LOG_INTERVAL_S,
    TRY_AGAIN_LATER,
    CountLimits,
    FiredCalls,
    WorkerCalls,
    retained_estimate,
)
from .modules.base import (
    UNDECIDED_CODES,
    AnyTelemetryListener,
    BuiltinFunction,
    CallNotSent,
    EngineError,
    EngineModule,
    EngineStartError,
    ExternalFunctions,
    FiredSlots,
    InvocationContext,
    InvocationObserver,
    ModuleSpec,
    ModuleStartError,
    ModuleStoppedError,
    NamedQueues,
    TelemetryListener,
    TriggerTypeHandler,
    registering,
    telemetry_listener,
)
from .modules.catalogue import WORKER_MODULE, ModuleUnavailable, default_specs, resolve
from .own_listener import PortOwners
from .registry import MAX_EARLIER_OWNERS, FunctionEntry, Registry, TriggerEntry, TriggerTypeEntry
from .server import Listener, url_host
from .settings import ConfigError
from .workers import OVERFLOW_CLOSE_CODE, Outbox, WorkerConnection, frame_bytes

log = logging.getLogger(__name__)


def port_taken(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is a bind refused because the address is in use."""
    seen: BaseException | None = exc
    for _ in range(8):  # a bounded walk: a cause chain may loop
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno == errno.EADDRINUSE:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _registrant(entry: TriggerEntry) -> str:
    """Who registered ``entry``, for log lines."""
    return f"worker {entry.registrant}" if entry.registrant else "the engine"

UNDECODABLE_LOG_BURST = 10
"""Workers' undecodable frames (and, apart, triggers left pending or rejected by their type) logged one line each per
10 s; past it they are counted and logged together."""

async def _close_unread(ws: ServerConnection, limit: int) -> None:
    """Close a peer that stopped reading (the close frame waits behind what it has not read): within
    :data:`~iii_engine.closing.CLOSE_TIMEOUT_S`, then reset."""
    await close_within(ws, OVERFLOW_CLOSE_CODE, f"outbound queue over {limit} bytes: peer not reading")


def _retained(frame: bytes | None, size: int) -> int:
    """What a registration read from ``frame`` (of ``size`` bytes; ``None`` when no text is at hand) holds of its
    worker's ``max_registration_bytes_per_worker``."""
    return retained_estimate(frame) if frame is not None else 2 * size + REGISTRATION_OVERHEAD


def _cancelling() -> int:
    """The current task's pending cancel requests (0 outside a task)."""
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0


def _module_failure(exc: BaseException) -> bool:
    """Whether ``exc``, out of a module's start or stop, is that module's failure: an ``Exception``, or a
    ``CancelledError`` nobody asked the current task for (the module awaited a task it had cancelled itself)."""
    return isinstance(exc, Exception) or (isinstance(exc, asyncio.CancelledError) and not _cancelling())


def _log_stop_failure(stopping: asyncio.Future[None]) -> None:
    """The outcome of a stop nobody waits for any more (its caller was cancelled): a failure is logged."""
    if not stopping.cancelled() and stopping.exception() is not None:
        log.error("the engine's stop failed", exc_info=stopping.exception())


class _Resumable:
    """A frame's handling (a coroutine) left for the worker's reading task (:meth:`rest`): unstarted, or started by
    the transport's read callback (:meth:`Engine._arrived`) and stopped on ``waits_on`` (a routed call waiting for room
    in its callee's queue, a socket's flow control), to go on from where it stopped.

    Example:
        >>> async def two_steps(seen: list[str]) -> None:
        ...     seen.append("started")
        ...     await asyncio.sleep(0)
        ...     seen.append("finished")
        >>> async def demo() -> list[str]:
        ...     seen: list[str] = []
        ...     handling = two_steps(seen)
        ...     left = _Resumable(handling, handling.send(None), started=True)  # as the callback does
        ...     await left.rest()
        ...     return seen
        >>> asyncio.run(demo())
        ['started', 'finished']
    """

    __slots__ = ("_coro", "_started", "_waits_on")

    def __init__(self, coro: Coroutine[Any, Any, Any], waits_on: Any = None, *, started: bool = False) -> None:
        self._coro = coro
        self._started = started
        self._waits_on = waits_on

    def rest(self) -> Awaitable[Any]:
        """What the reading task awaits to finish it: the coroutine itself when it was not started."""
        return _finish(self._coro, self._waits_on) if self._started else self._coro

    def close(self) -> None:
        """End it where it waits (its ``finally`` blocks run), when nobody will finish it."""
        self._coro.close()


@types.coroutine
def _finish(coro: Coroutine[Any, Any, Any], waits_on: Any) -> Generator[Any, Any, None]:
    """Finish ``coro``, which stopped on ``waits_on`` (what it yielded, a future) outside any task: the awaiting task
    waits on that future, then drives ``coro`` as if it had awaited it from the start (``yield from``: a task's stack
    and :func:`~iii_engine.closing.awaiting` see ``coro``)."""
    while True:
        try:
            yield waits_on
            break
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # a cancel of the reading task goes to the wait inside, as with an await
            try:
                waits_on = coro.throw(exc)
            except StopIteration:
                return
    yield from coro


class _Reading:
    """Who handles a worker's next frames: the transport's read callback (:meth:`Engine._arrived`) while the
    worker's reading task handles none (``busy``) and has nothing handed to it (``left``); else the task, in
    order, as the callback leaves them in the connection's inbox."""

    __slots__ = ("busy", "left", "stop")

    def __init__(self) -> None:
        self.busy = False
        self.left: _Resumable | None = None  # a frame's handling the callback started and the task finishes
        self.stop = False  # the connection was failed (1007): read no more


#: the kinds of :meth:`Engine._log_trigger_notes` besides pending and rejected
_TRIGGER_NOTES = {"refused": "refused by their type's owner (pending)",
                  "too_deep": "not registered: their config too deep for the trigger listing",
                  "unlisted": "functions registered without a field too deep for the function listings",
                  "ambiguous": "refusals by a type's owner left active (answers owed for more than one registration)",
                  "replaced": "replaced another worker's trigger of the same id (E12)"}


def _trigger_frame(worker: WorkerConnection, entry: TriggerEntry) -> str:
    return worker.session.register_trigger(entry.id, entry.trigger_type, entry.function_id, entry.config)


class _Unsent:
    """A registration waiting in a :class:`_TriggerFeed`'s queue: ``entry``, the one of its id to send when it is
    reached (a later registration of the id replaces it in place)."""

    __slots__ = ("entry",)

    def __init__(self, entry: TriggerEntry) -> None:
        self.entry = entry


class _Owed:
    """The owner's answers owed for one trigger id's registrations, and whether one of those answered so far in
    this stretch (since none was owed) accepted."""

    __slots__ = ("accepted", "count")

    def __init__(self) -> None:
        self.count = 0
        self.accepted = False


#: what the owner's answer to a registration of an id does: ``"decides"`` (the answer to the only registration of
#: it owed, which the owner is still meant to hold), ``"ambiguous"`` (a refusal whose stretch of owed answers held
#: an acceptance: the wire does not say which registration an answer is to, so it may be a stale one's) or
#: ``"stale"`` (more are owed, or the id is no longer the owner's, or another registration of it is queued)
Answer = Literal["decides", "ambiguous", "stale"]

#: stale items a feed's queue may hold before it is compacted (when they are also at least half of it)
FEED_COMPACT_AT = 32

#: ids no longer the owner's whose answers are still owed, kept to count them: at most this many (then the oldest
#: are forgotten). An owner that never answers (the reference SDK skips a type it no longer holds) would grow them
FEED_GONE_OWED = 1024


class _TriggerFeed:
    """The ``registertrigger`` / ``unregistertrigger`` frames one trigger type owner is sent, in order and under its
    outbox's flow control: each waits for room (a task drips them while the outbox is full). Posted at once, a
    replay of many or big triggers crossed ``max_outbox_bytes`` and closed the owner (1008) at every reconnect.

    Queued by trigger id: a registration of an id already queued replaces that one in its place (an unregister in
    between takes it out of the queue, so order holds), queued registrations are built when sent, and stale items
    are compacted once they outnumber the live ones: the queue holds at most one registration per trigger the
    registry keeps and one ``unregistertrigger`` per trigger the owner was sent. Before, every re-registration of an
    id (or of the owner's own type: a replay of all its triggers each) added an item while the owner read nothing:
    3,000,000 items for 10,000 triggers.
    """

    def __init__(self, worker: WorkerConnection) -> None:
        self._worker = worker
        # registrations (an _Unsent) and unregisters ((id, trigger type)), in order
        self._queue: deque[_Unsent | tuple[str, str]] = deque()
        self._unsent: dict[str, _Unsent] = {}  # queued registrations by trigger id
        self._stale = 0  # items in the queue no longer to send
        #: trigger ids the owner was sent a registration of, and no unregister since
        self.held: set[str] = set()
        # answers owed by trigger id; those of ids the owner no longer holds are counted apart in _gone (ordered)
        self._owed: dict[str, _Owed] = {}
        self._gone: dict[str, None] = {}
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def register(self, entry: TriggerEntry) -> None:
        """Send the owner ``entry`` (replacing a registration of its id still queued)."""
        unsent = self._unsent.get(entry.id)
        if unsent is not None:
            unsent.entry = entry
            return
        unsent = self._unsent[entry.id] = _Unsent(entry)
        self._push(unsent)

    def unregister(self, entry: TriggerEntry) -> None:
        """Tell the owner ``entry``'s id is no longer its; nothing goes when the owner was never sent it."""
        if self._unsent.pop(entry.id, None) is not None:
            self._stale += 1
            if self._stale > FEED_COMPACT_AT and 2 * self._stale > len(self._queue):
                self._queue = deque(item for item in self._queue if not self._dropped(item))
                self._stale = 0
        if entry.id in self.held:
            self.held.discard(entry.id)
            self._left(entry.id)
            self._push((entry.id, entry.trigger_type))

    def answered(self, trigger_id: str, accepted: bool) -> Answer:
        """Count one answer of the owner to a registration of ``trigger_id``: see :data:`Answer`."""
        owed = self._owed.get(trigger_id)
        if owed is None:
            return "stale"
        owed.count -= 1
        owed.accepted = owed.accepted or accepted
        if owed.count > 0:
            return "stale"
        del self._owed[trigger_id]
        self._gone.pop(trigger_id, None)
        if trigger_id not in self.held or trigger_id in self._unsent:
            return "stale"
        return "ambiguous" if owed.accepted and not accepted else "decides"

    def refused(self, trigger_id: str) -> None:
        """The owner refused ``trigger_id``: it does not hold it (no unregister is owed to it)."""
        self.held.discard(trigger_id)

    def close(self) -> None:
        """The owner is gone: send nothing more."""
        self._queue.clear()
        self._unsent.clear()
        self._owed.clear()
        self._gone.clear()
        if self._task is not None:
            self._task.cancel()

    def _left(self, trigger_id: str) -> None:
        """``trigger_id`` is no longer the owner's: its answers still owed are counted within FEED_GONE_OWED."""
        if trigger_id not in self._owed:
            return
        self._gone[trigger_id] = None
        while len(self._gone) > FEED_GONE_OWED:
            oldest = next(iter(self._gone))
            del self._gone[oldest]
            self._owed.pop(oldest, None)

    def _dropped(self, item: _Unsent | tuple[str, str]) -> bool:
        """Whether ``item`` is a registration no longer to send."""
        return isinstance(item, _Unsent) and self._unsent.get(item.entry.id) is not item

    def _push(self, item: _Unsent | tuple[str, str]) -> None:
        if not self._queue and self._task is None and self._try_send(item) is None:
            return
        self._queue.append(item)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drip())

    def _try_send(self, item: _Unsent | tuple[str, str]) -> int | None:
        """Post ``item`` (a registration no longer wanted is dropped): ``None``; or the size of its frame, for
        which the outbox has no room now."""
        if isinstance(item, _Unsent):
            if self._dropped(item):
                self._stale -= 1
                return None
            entry = item.entry
            frame = _trigger_frame(self._worker, entry)
        else:
            frame = self._worker.session.unregister_trigger(*item)
        size = frame_bytes(frame)
        if self._worker.outbox.must_wait(size):
            return size
        if isinstance(item, _Unsent):
            del self._unsent[entry.id]
            self.held.add(entry.id)
            self._gone.pop(entry.id, None)
            self._owed.setdefault(entry.id, _Owed()).count += 1
        self._worker.post(frame)
        return None

    async def _drip(self) -> None:
        try:
            while self._queue:
                size = self._try_send(self._queue[0])
                if size is None:
                    self._queue.popleft()
                    continue
                outbox = self._worker.outbox
                await outbox.wait_for_room(size)
                if outbox.closed:
                    return
        finally:
            self._task = None


Undo = Callable[[], None]


class _StoppedDuringStart(EngineStartError):
    """A start ended by a :meth:`Engine.stop` called during it: no failure of the start (``serve_forever`` returns)."""


class _ModuleServices:
    """The engine as one module sees it (that module's ``services``). What the module adds through it is the
    module's, whenever and from whichever task it adds it (its start, a task its start spawned, a start let go after
    :data:`~iii_engine.closing.MODULE_START_WAIT_S`, one of its built-ins): :meth:`release`, at the module's stop,
    takes it all away, and what the module adds after that is refused with :class:`ModuleStoppedError` (nothing would
    take it away again: a function of a stopped module was routed to it for good). Anything else is the engine's.

    Example:
        >>> async def demo() -> list[bool]:
        ...     engine = Engine(port=0, config=EngineConfig(modules=[]))
        ...     services = _ModuleServices(engine, "hello")
        ...     services.register_function(BuiltinFunction("hello::greet", greet))
        ...     seen = [engine.has_function("hello::greet")]
        ...     services.release()
        ...     return [*seen, engine.has_function("hello::greet")]
        >>> async def greet(data: object, ctx: object) -> object:
        ...     return data
        >>> asyncio.run(demo())
        [True, False]
    """

    def __init__(self, engine: Engine, module: str) -> None:
        self._engine = engine
        self._module = module
        self.channels: ChannelRelay = engine.channels  # the engine's for its whole life
        self._undos: list[Undo] | None = []  # None once released

    def __getattr__(self, name: str) -> Any:
        # the rest of the engine (the worker module's tables); looked up on each use, as is what follows: what is
        # patched on the engine (a test's spy) is what the module gets
        return getattr(self._engine, name)

    # What modules use per call or per event, spelled out: through __getattr__ each use cost about 1.5 us more.

    @property
    def fired_calls(self) -> FiredCalls:
        """The bound every trigger-fired call counts against."""
        return self._engine.fired_calls

    def has_function(self, function_id: str) -> bool:
        """Whether ``function_id`` is registered."""
        return self._engine.has_function(function_id)

    def function_owner(self, function_id: str) -> str | None:
        """The id of the worker serving ``function_id`` (``None``: a built-in, or nobody serves it)."""
        entry = self._engine.registry.functions.get(function_id)
        return entry.owner if entry is not None and entry.builtin is None and not entry.gone else None

    def fired_callee(self, function_id: str) -> str | None:
        """The worker whose ``max_fired_calls_per_worker`` share a fan-out counts a call of ``function_id`` on: the
        worker serving it, or, for an HTTP-invoked (external) function, the worker that registered it (``None``: a
        built-in run in the engine, or nobody serves it)."""
        entry = self._engine.registry.functions.get(function_id)
        if entry is None or entry.gone or (entry.builtin is not None and not entry.external):
            return None
        return entry.owner

    def service_functions(self, service_id: str) -> Collection[str]:
        """The worker functions registered under a service (live)."""
        return self._engine.service_functions(service_id)

    def invoke(self, function_id: str, data: Any, *, timeout_s: float | None = None) -> Coroutine[Any, Any, Any]:
        """Call any function and await its result."""
        return self._engine.invoke(function_id, data, timeout_s=timeout_s)

    def start_invocation(self, function_id: str, data: Any) -> Coroutine[Any, Any, Started]:
        """Start a call; await ``started.future`` for its outcome."""
        return self._engine.start_invocation(function_id, data)

    def fire(self, function_id: str, data: Any, *, taken: FiredSlots | None = None,
             busy_until: float | None = None) -> bool:
        """Call a function without waiting, counted against ``max_fired_calls``."""
        return self._engine.fire(function_id, data, taken=taken, busy_until=busy_until)

    def invoke_when_free(self, function_id: str, data: Any, *,
                         until: float | None = None) -> Coroutine[Any, Any, Any]:
        """Call a function for a trigger, asking again while its worker is busy."""
        return self._engine.invoke_when_free(function_id, data, until=until)

    def condition_passes(self, condition_function_id: str | None, payload: Any, *, wait_if_busy: bool = True,
                         busy_until: float | None = None, hold_place: bool = False) -> Coroutine[Any, Any, bool]:
        """Whether a trigger's condition lets its call go."""
        return self._engine.condition_passes(condition_function_id, payload, wait_if_busy=wait_if_busy,
                                             busy_until=busy_until, hold_place=hold_place)

    def triggers_of_type(self, trigger_type: str) -> list[TriggerInfo]:
        """The active triggers of a type."""
        return self._engine.triggers_of_type(trigger_type)

    def _admit(self, what: str) -> list[Undo]:
        if self._undos is None:
            error = ModuleStoppedError(self._module, what)
            log.warning("%s", error)  # also when its raiser is a task nobody awaits
            raise error
        return self._undos

    def release(self) -> None:
        """Take away everything the module added (latest first); refuse what it adds from now on."""
        undos, self._undos = self._undos or [], None
        for undo in reversed(undos):
            undo()

    def register_function(self, function: BuiltinFunction) -> None:
        """Add (or replace) a built-in function of this module."""
        self._admit(f"function {function.id}").append(self._engine._add_builtin(function, self._module)[1])

    def unregister_function(self, function_id: str) -> None:
        """Remove a built-in function; one registered on the engine itself under that id comes back at the module's
        stop (nothing once released: the id may be another module's by then)."""
        if self._undos is not None:
            undo = self._engine._withdraw(function_id)
            if undo is not None:
                self._undos.append(undo)

    def register_trigger_type(self, trigger_type: str, description: str, handler: TriggerTypeHandler) -> None:
        """Add a built-in trigger type of this module."""
        self._admit(f"trigger type {trigger_type}").append(
            self._engine._add_trigger_type(trigger_type, description, handler))

    def add_functions_listener(self, listener: Callable[[], None]) -> None:
        """Be told whenever the set of function ids may have changed (until the module's stop)."""
        self._admit("functions listener").append(self._engine._add_listener(self._engine._function_listeners,
                                                                           listener))

    def add_worker_listener(self, listener: Callable[[str, str], None]) -> None:
        """Be told about worker events (until the module's stop)."""
        self._admit("worker listener").append(self._engine._add_listener(self._engine._worker_listeners, listener))

    def add_telemetry_listener(self, listener: AnyTelemetryListener) -> None:
        """Receive the workers' telemetry frames (until the module's stop)."""
        self._admit("telemetry listener").append(self._engine._add_listener(self._engine._telemetry_listeners,
                                                                           telemetry_listener(listener)))

    def set_invocation_observer(self, observer: InvocationObserver | None) -> None:
        """Watch every function execution (until the module's stop)."""
        self._put("invocation observer", self._engine.invocations, "observer", observer)

    def serve_named_queues(self, queues: NamedQueues | None) -> None:
        """Route enqueue actions to ``queues`` (until the module's stop)."""
        self._put("named queues", self._engine.invocations, "named_queues", queues)

    def serve_external_functions(self, host: ExternalFunctions | None) -> None:
        """Route HTTP-invoked function registrations to ``host`` (until the module's stop)."""
        self._put("external functions", self._engine, "_external", host)

    def _put(self, what: str, holder: object, slot: str, value: object) -> None:
        """Put ``value`` in the engine's one ``slot`` of ``holder`` until the module's stop; ``None`` empties the
        slot (nothing once released: it may be another module's by then)."""
        if value is None:
            if self._undos is not None:
                setattr(holder, slot, None)
            return
        undos = self._admit(what)
        setattr(holder, slot, value)

        def remove() -> None:
            if getattr(holder, slot) is value:
                setattr(holder, slot, None)

        undos.append(remove)


def _engine_config(config: object) -> EngineConfig:
    """``Engine``'s ``config`` argument as an :class:`EngineConfig` (a mapping is parsed; anything else is refused
    naming its type: it failed later with ``AttributeError: 'dict' object has no attribute 'with_overrides'``).

    Example:
        >>> _engine_config({"port": 0}).port
        0
        >>> _engine_config("port: 0")
        Traceback (most recent call last):
        ...
        TypeError: Engine(config=...) takes an EngineConfig or a mapping of configuration keys, got str (for YAML \
text, use iii_engine.config.parse_config)
    """
    if config is None:
        return EngineConfig()
    if isinstance(config, EngineConfig):
        return config
    if isinstance(config, Mapping):
        return config_from_mapping(config)
    hint = " (for YAML text, use iii_engine.config.parse_config)" if isinstance(config, (str, bytes)) else ""
    raise TypeError(f"Engine(config=...) takes an EngineConfig or a mapping of configuration keys, got "
                    f"{type(config).__name__}{hint}")


class Engine:
    """An iii engine running in this process.

    ``config`` is an :class:`EngineConfig`, or a mapping of the configuration file's keys (``{"port": 0}``), read as
    :func:`~iii_engine.config.config_from_mapping` reads it; ``host``, ``port`` and ``allow_degraded`` override it.

    Example:
        >>> async def main() -> None:  # doctest: +SKIP
        ...     async with Engine(port=0) as engine:
        ...         print(engine.url)  # ws://127.0.0.1:<port>
    """

    def __init__(self, *, host: str | None = None, port: int | None = None,
                 config: EngineConfig | Mapping[str, Any] | None = None, allow_degraded: bool | None = None) -> None:
        self.config = _engine_config(config).with_overrides(host=host, port=port, allow_degraded=allow_degraded)
        self.log = log
        self.registry = Registry()
        self.workers: dict[str, WorkerConnection] = {}
        self.modules: dict[str, EngineModule] = {}
        self.unavailable_modules: dict[str, str] = {}
        #: the bound on trigger-fired calls in flight (``max_fired_calls``) and its counters
        self.fired_calls = FiredCalls(self.config.max_fired_calls, self.config.fire_wait_timeout_ms,
                                      self.config.max_fired_bytes, self.config.max_call_bytes_per_worker,
                                      max_fired_calls_per_worker=self.config.max_fired_calls_per_worker)
        #: the bound on the calls one worker has in flight (``max_calls_per_worker``) and its counters
        self.worker_calls = WorkerCalls(self.config.max_calls_per_worker, self.config.max_call_bytes_per_worker)
        self.invocations = Invocations(self.registry, self.workers, timeout_ms=self.config.invocation_timeout_ms,
                                       fired=self.fired_calls, worker_calls=self.worker_calls,
                                       void_grace_ms=self.config.void_grace_ms)
        self.limits = CountLimits(self.config)
        self._external: ExternalFunctions | None = None
        settings = self.config.channels
        self.channels = ChannelRelay(max_message_size=settings.max_message_size,
                                     attach_timeout_s=settings.attach_timeout_s,
                                     max_channel_bytes=settings.max_channel_bytes,
                                     max_queued_bytes=settings.max_queued_bytes,
                                     max_open=settings.max_open,
                                     max_open_per_worker=settings.max_open_per_worker,
                                     max_held_bytes=settings.max_held_bytes,
                                     max_held_bytes_per_worker=settings.max_held_bytes_per_worker,
                                     max_sockets=settings.max_sockets,
                                     max_sockets_per_worker=settings.max_sockets_per_worker,
                                     production_mode=settings.production_mode)
        self._listener = Listener(self.config.host, self.config.port,
                                  max_message_size=self.config.max_message_size,
                                  relay=self.channels, control=self._serve_worker,
                                  max_handshakes=self.config.max_handshakes)
        self._function_listeners: list[Callable[[], None]] = []
        self._telemetry_listeners: list[TelemetryListener] = []
        # One lane for parsing big control frames: a parse holds the interpreter for tens of milliseconds, so
        # big frames from every connection take turns and the lane rests as long as each parse took; whatever
        # peers send, the event loop keeps at least half of its time for everyone else's calls.
        self._big_frame_lane = asyncio.Lock()
        # Garbage frames, big frames and dropped connections free memory the C allocator keeps resident: give it
        # back once such a burst is over (never on the call path).
        self.memory = MemoryReleaser()
        self._worker_listeners: list[Callable[[str, str], None]] = []
        #: workers' frames that could not be decoded (dropped), since start
        self.undecodable_frames = 0
        # rate-limited: a worker sending garbage by the thousand wrote one warning line per frame. The first
        # UNDECODABLE_LOG_BURST of each interval still get a line of their own (with their reasons: what one
        # misbehaving worker does wrong), the rest are counted
        self._undecodable_log = BurstLog(UNDECODABLE_LOG_BURST, SKIP_LOG_INTERVAL_S, log.warning,
                                         LossLog(self._log_undecodable, SKIP_LOG_INTERVAL_S))
        # triggers left pending or rejected by their type: a line each, up to a burst per interval (a worker
        # registering 100,000 triggers of a type nobody provides logged 100,000 warnings)
        self._trigger_notes = BurstLog(UNDECODABLE_LOG_BURST, SKIP_LOG_INTERVAL_S, log.warning,
                                       LossLog(self._log_trigger_notes, SKIP_LOG_INTERVAL_S))
        # trigger conditions that failed (their triggers skipped): as many lines, at most (a condition failing on
        # every change of a busy state scope wrote 2,000 lines in 0.4 s)
        self._condition_failures = BurstLog(UNDECODABLE_LOG_BURST, SKIP_LOG_INTERVAL_S, log.warning,
                                            LossLog(self._log_condition_failures, SKIP_LOG_INTERVAL_S))
        # a type owner's answers (ignored ones) and pending triggers its registration activates: INFO lines, as
        # rate-limited (an owner refusing everything, re-registering its type, logged a line per trigger each time)
        self._trigger_info = BurstLog(UNDECODABLE_LOG_BURST, SKIP_LOG_INTERVAL_S, log.info,
                                      LossLog(self._log_trigger_info, SKIP_LOG_INTERVAL_S))
        # listeners (modules' code) that raised: with their tracebacks up to a burst per interval, then counted (one
        # failing on every telemetry frame would write a traceback per frame)
        self._listener_failures = BurstLog(UNDECODABLE_LOG_BURST, SKIP_LOG_INTERVAL_S, log.error,
                                           LossLog(self._log_listener_failures, SKIP_LOG_INTERVAL_S))
        self._seen_version = 0
        self._started = False
        self._stopping: asyncio.Event | None = None
        self._stop_ended: asyncio.Event | None = None  # set when the latest stop ended (done, failed or cancelled)
        self._start_ended: asyncio.Event | None = None  # set when the latest start ended (done or failed)
        self._stop_asked = False  # stop() was called during the start under way
        self._stop_task: asyncio.Future[None] | None = None  # the latest stop's task (see _stop_apart)
        # the modules the latest stop has yet to stop, None once a stop ended: a stop() after a cancelled one
        # finishes it (the modules it had not reached, the worker port, the calls in flight)
        self._not_stopped: list[EngineModule] | None = None
        # during a stop, from its first module's stop to the end of the calls in flight: the stopped modules'
        # functions by id, each answering that the engine is stopping (see _leave_gone); None outside a stop
        self._gone: dict[str, FunctionEntry] | None = None
        # the functions registered on the engine itself (register_function), by id: kept across stops, also when a
        # module registers the same id (the engine's comes back at that module's stop)
        self._engine_functions: dict[str, FunctionEntry] = {}
        # the module start the start under way awaits (the wait on it, its task) and its module
        self._module_starting: tuple[asyncio.Future[None], asyncio.Future[None], EngineModule] | None = None
        self.ready = asyncio.Event()  # set once the listener accepts workers
        self._worker_tasks: set[asyncio.Task[Any]] = set()  # the tasks serving worker connections (_close_listener)
        # whether the worker whose frame is being handled has more frames unread: its frames' writes (the calls it
        # routes, the results it answers) are then held for one write at the end of the turn (_serve_worker)
        self._reading_more = False
        # what each trigger type owner (by worker id) is sent about its triggers, under its flow control
        self._feeds: dict[str, _TriggerFeed] = {}
        # Workers whose disconnect cleanup has begun: a trigger of theirs bound after it withdrew their triggers
        # (another worker's cleanup restoring it, E12, or a type's register still awaited) is withdrawn at once.
        self._leaving: set[str] = set()
        # What each built-in trigger type was last handed of each trigger id, by (type, id): the registration its
        # register is under way for or done with. A type keeps one registration per id, the one whose register
        # started last (each acts on its tables before it waits), so only that one may be unregistered there: a
        # departing worker's unregister of the id, landing while another worker's register of it waited at the type
        # (a Redis SUBSCRIBE), took that one's subscription, still listed active (17-27 of 200 rounds on Redis).
        # Nothing here waits on another registration: an id held across a register held other workers' cleanup and
        # connections 10 s per queued registration while Redis stalled.
        self._handed: dict[tuple[str, str], TriggerEntry] = {}
        self._registering: dict[str, int] = {}  # registers under way, by trigger id

    # -- lifecycle -------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the control socket listens on."""
        return self._listener.port

    @property
    def url(self) -> str:
        """``ws://host:port`` to connect workers to (wildcard binds are reached through loopback)."""
        return f"ws://{url_host(self.config.host)}:{self.port}"

    async def start(self) -> None:
        """Bind the worker port, start the worker module and every configured module, then accept workers.

        Fails fast: a port that cannot be bound raises :class:`EngineStartError`, a configured module that cannot
        start raises :class:`ModuleStartError` (unless ``allow_degraded``: then it is logged and listed in
        :attr:`unavailable_modules`). Before either propagates, everything already started is stopped and every
        port released; the worker port refuses connections until start-up is complete. A :meth:`stop` called
        during the start ends it before the next module (:class:`EngineStartError`; a module start under way gets
        :data:`~iii_engine.closing.MODULE_START_WAIT_S`, then is cancelled), and returns once everything the start
        had started is stopped. A call while a start is under way returns when that start did (or raises
        :class:`EngineStartError` if it did not start the engine); a call during a stop, or after a stop that was
        cancelled, first lets that stop end (or finishes it). An engine stopped may be started again.

        Each module's start is bounded: its configuration entry's ``start_timeout_ms``, or what the module states
        (:meth:`~EngineModule.start_timeout_s`, :data:`~iii_engine.closing.MODULE_START_TIMEOUT_S` = 60 s by
        default). Past it the start is cancelled and fails as any failed start does, with one line naming the module,
        its class and the bound (a start waiting on a peer that never answers held the engine's start for good).
        """
        while True:
            if self._start_ended is not None and not self._start_ended.is_set():
                await self._start_ended.wait()
                if not self.ready.is_set():
                    failure = _StoppedDuringStart if self._stop_asked else EngineStartError
                    raise failure("the start under way when this start was called did not start the engine")
                return
            if self._started:
                return
            if self._not_stopped is None:
                break
            # a stop under way, or one cancelled half-way: it would close what this start opens (the worker port)
            # and forget what it had not stopped yet
            await self._stop(StoreCloses())
        self.modules.clear()  # the previous run's modules are all stopped: none is handed out any more
        self.unavailable_modules.clear()
        self._started = True
        self.invocations.engine_stopping = False
        self.invocations.modules_stopping = False
        self._stopping = asyncio.Event()
        self._stop_asked = False
        self._start_ended = start_ended = asyncio.Event()
        # A module that fails to start closes its store (in its start, or in the stop after it): that close shares
        # the deadline of the other modules' closes when the start fails, instead of a bound of its own before theirs
        closes = StoreCloses()
        try:
            with closes.collecting():
                await self._start_everything()
        except BaseException as exc:
            await self._stop(closes)
            self.modules.clear()  # none of them runs: engine.module(...) must not hand out a stopped one
            if isinstance(exc, asyncio.CancelledError) and self._stop_asked and not _cancelling():
                # the module start that stop() cancelled, not this start's caller
                raise self._stopped_during_start() from None
            raise
        finally:
            start_ended.set()
        try:
            await closes.wait()  # the stores of modules left out by allow_degraded
        except BaseException:
            # cancelled here, the start fails for its caller (an `async with` never reaches its exit): a ready engine
            # left behind would accept workers for good
            await self.stop()
            raise
        log.info("iii engine listening on %s", self.url)

    async def _start_everything(self) -> None:
        # The worker port is bound first (not yet accepting): when it is taken, no module port gets held.
        try:
            await self._listener.start(serving=False)
        except (OSError, UnicodeError) as exc:  # UnicodeError: a host name the idna codec refuses ('a..b')
            raise self._cannot_listen(exc) from exc
        # for the modules' starts only: a Bridge refuses a URL that reaches this engine itself (see own_listener)
        listening = own_listener.LISTENING.set((self.config.host, self.port))
        try:
            await self._start_modules()
        finally:
            own_listener.LISTENING.reset(listening)

    async def _start_modules(self) -> None:
        from .modules.worker.module import WorkerModule

        try:
            # built inside: a failure there is one line (ModuleStartError), not a traceback out of Engine.start()
            worker_module = WorkerModule(self._services_for(WorkerModule))
            await self._start_module(worker_module, in_config=False)
        except Exception as exc:
            raise ModuleStartError(WORKER_MODULE, exc) from exc
        specs = self.config.modules if self.config.modules is not None else default_specs()
        left_out = self.config.defaults_left_out()
        if left_out:
            # INFO, not WARNING: a short list is often meant (a queue-only engine, a Bridge front, tests), but a file
            # naming only the module it adds (the observability one) silently ran without streams, state, queues...
            log.info("the config's modules: list replaces the default modules; not loaded: %s; list them to keep "
                     "them", ", ".join(left_out))
        # who is given each port: two listeners on one failed as if a stranger held it ("address already in use",
        # exit 1 with a hint to start without the module), though the file gave both the port
        ports = PortOwners(self.config.host, self.port, "the engine's own worker port")
        for index, spec in enumerate(specs):
            self._raise_if_stop_asked()
            module: EngineModule | None = None
            try:
                cls = resolve(spec.class_name)
                module = cls(self._services_for(cls), self._listener_defaults(cls, spec.config))
                ports.claim(module.listen_address(), f"modules[{index}] ({spec.class_name})")
                await self._start_module(module, spec.start_timeout_ms)
            except Exception as exc:
                # a settings error names the path from the top of the configuration file
                cause: BaseException | str = (exc.under(f"modules[{index}].config") if isinstance(exc, ConfigError)
                                              else exc)
                address = module.listen_address() if module is not None else None
                if address is not None and port_taken(exc):
                    cause = f"{error_line(exc)} ({self._port_setting(index, spec, address[1])})"
                failure = ModuleStartError(spec.class_name, cause)
                if not self.config.allow_degraded:
                    raise failure from exc
                self.unavailable_modules[spec.class_name] = failure.reason
                log.warning("module %s not available: %s", spec.class_name, failure.reason)
                if not isinstance(exc, ModuleUnavailable):
                    log.debug("module %s failed to start", spec.class_name, exc_info=exc)
        self._raise_if_stop_asked()
        try:
            await self._listener.start_serving()
        except (OSError, UnicodeError) as exc:
            raise self._cannot_listen(exc) from exc
        self._seen_version = self.registry.version
        worker_module.ready()
        self.ready.set()

    def _raise_if_stop_asked(self) -> None:
        # a stop() during the start: the start ends at the next module and its failure stops what it started
        if self._stop_asked:
            raise self._stopped_during_start()

    @staticmethod
    def _stopped_during_start() -> EngineStartError:
        return _StoppedDuringStart("the engine was stopped during its start")

    def _cannot_listen(self, exc: OSError | UnicodeError) -> EngineStartError:
        # asyncio repeats the address inside its message; the address is already in ours
        errno = exc.errno if isinstance(exc, OSError) else None
        reason = os.strerror(errno) if errno and errno > 0 else error_line(exc)
        return EngineStartError(f"cannot listen on {self.config.host}:{self.config.port}: {reason}")

    def _port_setting(self, index: int, spec: ModuleSpec, port: int) -> str:
        """Which setting gave a module the port someone else holds, and how to move it (a second engine on the
        default host failed on the stream module's 3112 with no word of where that number came from)."""
        if "port" in spec.config:
            return f"port {port} is modules[{index}].config.port: set another there, 0 = any free one"
        if self.config.modules is not None:
            return f"port {port} is the module's default port: set port in modules[{index}].config, 0 = any free one"
        return (f"port {port} is the module's default port: set it in a modules: list entry {{class: {spec.class_name}"
                ", config: {port: …}} (0 = any free one), with the other modules you use: the list replaces the "
                "defaults")

    def _listener_defaults(self, cls: type[EngineModule], settings: dict[str, Any]) -> dict[str, Any]:
        """A listening module binds where the engine binds unless told otherwise, and on a free port when the
        engine was started on one (``Engine(port=0)``), so embedded engines never collide on 3111/3112."""
        if not cls.has_listener:
            return settings
        merged = dict(settings)
        merged.setdefault("host", self.config.host)
        if self.config.port == 0:
            merged.setdefault("port", 0)
        return merged

    def _services_for(self, cls: type[EngineModule]) -> _ModuleServices:
        """The services a module of class ``cls`` gets: what it adds to the engine through them is taken away at its
        stop (an engine started again called the previous run's stopped modules: the worker module's listener fired
        each workers-available trigger once per run, a module left out kept its functions, and what a module added
        outside its start's own task survived its stop)."""
        return _ModuleServices(self, cls.name)

    @staticmethod
    def _release(module: EngineModule) -> None:
        """Take away what ``module`` added to the engine, once it is stopped (see :class:`_ModuleServices`)."""
        if isinstance(module.services, _ModuleServices):
            module.services.release()

    async def _start_module(self, module: EngineModule, start_timeout_ms: int | None = None, *,
                            in_config: bool = True) -> None:
        """Start ``module`` within its bound (``start_timeout_ms``, the entry's, or the module's
        :meth:`~EngineModule.start_timeout_s`): a start waiting on a peer that never answers failed nothing and held
        the engine's start for good. Past the bound it is cancelled and fails with :class:`TimeoutError`; its message
        points at the entry's ``start_timeout_ms`` unless the module has no entry (``in_config=False``: the worker
        module). A cancel of the engine's start propagates, also one landing in the loop turn the bound runs out."""
        bound = start_timeout_ms / 1000 if start_timeout_ms is not None else module.start_timeout_s()
        # the configured bound as the entry gives it: messages name that, not what is left of it
        entry = "" if start_timeout_ms is None else f" (start_timeout_ms {start_timeout_ms})"
        bound_text = f"{bound:g} s{entry}"
        # in a task of its own (this context, so its store closes are collected too): a stop() during the start
        # cancels it, so a store that never answers its open does not hold the stop
        starting = closing.start_module_task(module.start(), bound, configured=start_timeout_ms is not None)
        waiting = asyncio.shield(starting)  # stop() cancels this wait: the start goes on at once, whatever the module
        self._module_starting = (waiting, starting, module)
        notice = asyncio.get_running_loop().call_later(
            closing.MODULE_START_NOTICE_S, self._log_start_wait, module, starting, bound_text)
        timer = asyncio.timeout(bound)
        try:
            async with timer:
                await waiting
        except BaseException as exc:
            notice.cancel()
            self._module_starting = None
            # Past the bound asyncio.timeout turns its own cancel into TimeoutError; a cancel of this start landing
            # in the same loop turn leaves the CancelledError (and the timer expired): that cancel wins, or the start
            # of a cancelled engine went on (with allow_degraded, to a ready engine).
            timed_out = timer.expired() and not isinstance(exc, asyncio.CancelledError)
            where = closing.awaiting(starting) if timed_out else ""
            if isinstance(exc, asyncio.CancelledError) or timed_out:
                # cancelled by stop() or with the start's caller, or past its bound: the module's start too, its
                # end awaited bounded (a library that swallows the cancel would hold the start, and the stop
                # waiting for it, for good)
                starting.cancel()
                with contextlib.suppress(Exception):
                    await finish_within(starting, closing.MODULE_START_WAIT_S, f"module {module.name}'s start", log)
            # A module that failed half-way may already hold a port or a connection: give it a chance to let go.
            await self._stop_module(module, after_failed_start=True)
            if timed_out:
                waited = f", waiting in {where}" if where else ""
                hint = "a longer bound: start_timeout_ms in its entry" if in_config else \
                    "the engine's own module, which has no entry: its bound is not configurable"
                raise TimeoutError(f"its start (module {module.name}) did not end within {bound_text}{waited}; "
                                   f"cancelled ({hint})") from exc
            if isinstance(exc, TimeoutError) and start_timeout_ms is not None:
                # a wait inside the start (a store's check) ended first, naming what is left of the bound: the
                # entry's own bound is the number the user set and can raise
                raise TimeoutError(f"did not start within {bound_text}: {error_line(exc)}") from exc
            if isinstance(exc, asyncio.CancelledError) and not self._stop_asked and not _cancelling():
                # not a cancel of this start: a failure of the module (a CancelledError out of start() would end
                # the CLI with a traceback instead of its one-line start error)
                raise RuntimeError("its start raised CancelledError without a cancel of the engine's start") from exc
            raise
        notice.cancel()
        self._module_starting = None
        self.modules[module.name] = module

    @staticmethod
    def _log_start_wait(module: EngineModule, starting: asyncio.Future[None], bound_text: str) -> None:
        """Say once that ``module``'s start is still waiting, for what and how long it may (``iii-engine`` shows it
        at once, :data:`~iii_engine.closing.START_NOTICE`)."""
        if starting.done():
            return
        what = closing.start_waits_for(module, starting)
        log.info("waiting for module %s's start%s: up to %s", module.name, f" ({what})" if what else "", bound_text,
                 extra={closing.START_NOTICE: True})

    async def _stop_module(self, module: EngineModule, *, after_failed_start: bool = False) -> None:
        """Stop ``module`` within its bound (:meth:`~EngineModule.stop_timeout_s`): past it the stop is cancelled,
        given :data:`~iii_engine.closing.CLOSE_TIMEOUT_S`, then let go with one warning naming the module and where it
        waited (a stop that hung held the engine's stop, and the other modules' stops and store closes, for good).
        Either way what the module added to the engine is taken away. A failure of the module is logged."""
        try:
            # the bound before the stop coroutine, and the default bound when it cannot be had: a bound that raised
            # (OverflowError of a 401-digit stop_timeout_ms) left module.stop() created and never run, and the queue
            # module's consumers ran on after Engine.stop()
            try:
                bound_s = module.stop_timeout_s()
            except Exception as exc:
                bound_s = closing.MODULE_STOP_TIMEOUT_S
                log.warning("module %s: no stop bound (%s); stopping it within %s s", module.name, error_line(exc),
                            bound_s)
            await closing.stop_within(module.stop(), bound_s, f"module {module.name}'s stop", log)
        except BaseException as exc:
            if not _module_failure(exc):
                raise
            if after_failed_start:
                log.debug("module %s: stop after a failed start raised", module.name, exc_info=True)
            else:
                log.exception("module %s failed to stop", module.name)
        finally:
            self._release(module)  # a module left out (allow_degraded) kept its functions for the whole run

    async def stop(self) -> None:
        """Stop modules (in reverse order), then close every connection and the channel relay.

        The modules' stores (stream, state, queue, and the queue module's bridge link) close side by side: each
        close starts once its module stopped taking work, and after the last module's stop they all share ONE
        deadline, :data:`iii_engine.closing.STORE_CLOSE_TIMEOUT_S` (10 s) from then; a close still running at it
        is cancelled and let go with a warning naming it. So silent stores (a Redis or PostgreSQL server that
        stopped answering) hold the stop about 10 s however many there are, instead of 10 s each, and a healthy
        store next to them still gets the whole 10 s to flush. The rest of the stop has bounds of its own (the
        queue module's ``stop_timeout_ms``, 5 s by default, before its store's close; then the workers' sockets, closed
        side by side within 2 s, a connection still handling a frame 4 s into the port's close cancelled; then the
        calls in flight, cancelled and given 2 s to end). A stop once begun goes on to its end whatever cancels its
        caller: that cancel (a call deadline, ``asyncio.wait_for``, the REST API module's stop or the stop's own cancel
        of the calls in flight when a built-in function stops the engine) only ends the caller's wait. A call while a
        stop is under way returns once that stop ended (its stores closed or let go); a call after a stop that was cut
        off all the same (the stop of what a start had started, cancelled with the start's caller) finishes it (the
        modules it had not reached, then the worker port and the rest). A call during the start ends it (see
        :meth:`start`). A start that fails stops what it started the same way, the failing module's store close
        sharing that one deadline.
        Each module's stop gets :data:`~iii_engine.closing.MODULE_STOP_TIMEOUT_S` (10 s) beyond what its settings give
        it (:meth:`~EngineModule.stop_timeout_s`: the queue module's ``stop_timeout_ms``); past it the stop is
        cancelled, given 2 s, then let go with one warning naming the module and where it waited, and the next
        module stops (what the module added to the engine is taken away all the same).
        """
        while True:
            if self._start_ended is not None and not self._start_ended.is_set():
                # a start under way: stopped now, its later modules would start after the stop and run on for good
                self._stop_asked = True
                await self._end_module_start()
                await self._start_ended.wait()
            elif self._stop_ended is not None and not self._stop_ended.is_set():
                # a stop under way; a start waiting for it may begin when it ends, and is then stopped as above
                await self._stop_ended.wait()
            else:
                break
        await self._stop_apart()

    async def _stop_apart(self) -> None:
        """:meth:`_stop` in a task of its own, which goes on to its end whatever cancels this caller: a cancel of the
        caller only ends the caller's wait (a later :meth:`stop` waits for this one). Run in the caller's task, or
        cancelled with it, the stop was cut off half-way by any cancel of a call that stops the engine (a built-in
        stopping it, whose call the REST API module's stop, a call deadline or the stop's own cancel of the calls in
        flight cancelled): serve_forever never returned and the rest of the stop was left to a later call."""
        stopping = asyncio.ensure_future(self._stop(StoreCloses()))
        self._stop_task = stopping  # referenced until it ends, whoever still waits for it
        try:
            await asyncio.shield(stopping)
        except asyncio.CancelledError:
            if not stopping.done():
                stopping.add_done_callback(_log_stop_failure)  # nobody waits for its outcome any more
            raise

    async def _end_module_start(self) -> None:
        """Give the module start under way (if any) :data:`~iii_engine.closing.MODULE_START_WAIT_S` to end, then
        cancel it: one waiting on a silent peer (a store's open) would hold the stop for good."""
        if self._module_starting is None:
            return
        waiting, _, module = self._module_starting
        await asyncio.wait((waiting,), timeout=closing.MODULE_START_WAIT_S)
        if not waiting.done():
            log.warning("module %s did not start within %g s of the engine's stop; its start is cancelled",
                        module.name, closing.MODULE_START_WAIT_S)
            waiting.cancel()

    async def _stop(self, closes: StoreCloses) -> None:
        while self._stop_ended is not None and not self._stop_ended.is_set():
            # a stop under way: its callers learn that the engine stopped with it (or take over if it is cancelled)
            await self._stop_ended.wait()
        if self._started:
            self._started = False
            self.ready.clear()
            self._not_stopped = list(reversed(self.modules.values()))
        elif self._not_stopped is None:
            return
        self._stop_ended = ended = asyncio.Event()
        try:
            await self._stop_all(closes)
            self._not_stopped = None
        finally:
            ended.set()

    async def _stop_all(self, closes: StoreCloses) -> None:
        # Modules stop first, while workers are still connected: a queue hands unfinished jobs back instead of
        # seeing them fail with invocation_stopped and spending a retry on the shutdown.
        modules = self._not_stopped or []
        self.invocations.modules_stopping = True
        if self._gone is None:  # a stop finishing one cut off keeps what that one left
            self._gone = {}
        try:
            with closes.collecting():
                while modules:
                    module = modules.pop(0)  # stopped once: a stop cancelled in it does not stop it again
                    await self._stop_module(module)
        except BaseException:
            closes.let_go()
            raise
        await closes.wait()
        # a channel's loop waiting on its other end (a full queue, no reader) would hold the listener's close
        self.channels.stopping()
        # before the connections close: the calls they end are cut by the stop, not by a worker leaving
        self.invocations.stopping()
        await self._close_listener()
        # a call's task that swallows its cancel (its library's doing) held the stop, and the stop's own cancel,
        # for good: the calls in flight get CLOSE_TIMEOUT_S after their cancel, then are let go
        await finish_within(self.invocations.close(), closing.CLOSE_TIMEOUT_S, "the calls in flight", log)
        self._forget_gone()
        self.fired_calls.close()
        self.worker_calls.close()
        await self.channels.close()
        self.memory.close()
        self._undecodable_log.losses.close()
        self._trigger_notes.losses.close()
        self._condition_failures.losses.close()
        self._trigger_info.losses.close()
        if self._stopping is not None:
            self._stopping.set()

    async def _close_listener(self) -> None:
        """Close the worker port, bounded. Its close waits for every connection's handler to return, and a handler
        still handling a frame (a stopped module's trigger type whose ``register`` never answers) held the engine's
        stop for good: 2 x :data:`~iii_engine.closing.CLOSE_TIMEOUT_S` into the close (the connections' closes take
        at most one), the handlers still running are cancelled (their cleanup runs, logged in one warning naming where
        the first waited), and the close gets CLOSE_TIMEOUT_S more before it is let go."""
        closing_port = asyncio.ensure_future(self._listener.close())
        try:
            done, _ = await asyncio.wait((closing_port,), timeout=2 * closing.CLOSE_TIMEOUT_S)
        except BaseException:
            let_go(closing_port)
            raise
        if not done:
            stuck = [task for task in self._worker_tasks if not task.done()]
            if stuck:
                log.warning("%d worker connection(s) still handling a frame %g s into the worker port's close "
                            "(waiting in %s); cancelled", len(stuck), 2 * closing.CLOSE_TIMEOUT_S,
                            closing.awaiting(stuck[0]) or "?")
                for task in stuck:
                    task.cancel()
        await finish_within(closing_port, closing.CLOSE_TIMEOUT_S, "the worker port's close", log)

    def _undecodable(self, worker: WorkerConnection, reason: str, answered: bool = False) -> None:
        self.undecodable_frames += 1
        # the reason may quote the sender's input: capped. One answered with an error (a call whose id could be
        # read) is said so: "dropped" read as if its sender had been left waiting.
        what = "undecodable frame, answered with an error" if answered else "dropped undecodable frame"
        self._undecodable_log.note("undecodable", f"worker {worker.id}: {what}: {clip_text(reason)}")

    @staticmethod
    def _log_trigger_notes(counts: Mapping[str, int], latest: str | None) -> None:
        latest_text = latest_tail(latest)
        more = "".join(f", {counts[kind]} {text}" for kind, text in _TRIGGER_NOTES.items() if counts.get(kind))
        log.warning("triggers: %d left pending for an unknown trigger type, %d rejected by their type%s (since the "
                    "last such warning)%s", counts.get("pending", 0), counts.get("rejected", 0), more, latest_text)

    @staticmethod
    def _log_trigger_info(counts: Mapping[str, int], latest: str | None) -> None:
        latest_text = latest_tail(latest)
        log.info("triggers: %d pending ones activated by their type's registration, %d answers of a type's owner "
                 "ignored (since the last such line)%s", counts.get("activated", 0), counts.get("ignored", 0),
                 latest_text)

    @staticmethod
    def _log_listener_failures(counts: Mapping[str, int], latest: str | None) -> None:
        log.error("listener failures past the %d logged per %g s: %s (each frame or event still went to the other "
                  "listeners)%s", UNDECODABLE_LOG_BURST, SKIP_LOG_INTERVAL_S, counts_text(counts), latest_tail(latest))

    @staticmethod
    def _log_condition_failures(counts: Mapping[str, int], latest: str | None) -> None:
        log.warning("%d more trigger condition(s) failed, their triggers skipped (past %d logged per %g s)%s",
                    counts.get("failed", 0), UNDECODABLE_LOG_BURST, SKIP_LOG_INTERVAL_S, latest_tail(latest))

    def _log_undecodable(self, counts: Mapping[str, int], latest: str | None) -> None:
        latest_text = latest_tail(latest)
        log.warning("%d more undecodable worker frame(s) dropped or answered with an error (past %d logged per %g s), "
                    "%d in all%s",
                    counts["undecodable"], UNDECODABLE_LOG_BURST, SKIP_LOG_INTERVAL_S, self.undecodable_frames,
                    latest_text)

    async def serve_forever(self) -> None:
        """Start (if needed) and run until :meth:`stop` is called or the task is cancelled.

        A :meth:`stop` during the start ends it and this returns (it raised :class:`EngineStartError`, as a start
        that failed does); a start that fails raises :class:`EngineStartError`.
        """
        try:
            await self.start()
        except _StoppedDuringStart:
            return
        assert self._stopping is not None
        try:
            await self._stopping.wait()
        finally:
            await self.stop()

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    # -- EngineServices --------------------------------------------------------------------------------------

    def register_function(self, function: BuiltinFunction) -> None:
        """Add (or replace) a built-in function, kept across stops (a module's own, added through its ``services``,
        goes at the module's stop). A module's function of the same id replaces it while that module runs, and it
        comes back at the module's stop.

        Example:
            >>> from iii_engine import ModuleSpec
            >>> async def demo() -> list[object]:
            ...     async def mine(data: object, ctx: object) -> object:
            ...         return "mine"
            ...     engine = Engine(port=0, config=EngineConfig(modules=[ModuleSpec("modules::state::StateModule")]))
            ...     engine.register_function(BuiltinFunction("state::get", mine))
            ...     async with engine:  # the state module's state::get in its place while it runs
            ...         running = await engine.invoke("state::get", {"scope": "s", "key": "k"})
            ...     return [running, await engine.invoke("state::get", {})]
            >>> asyncio.run(demo())
            [None, 'mine']
        """
        self._engine_functions[function.id] = self._add_builtin(function)[0]

    def _add_builtin(self, function: BuiltinFunction, module: str | None = None) -> tuple[FunctionEntry, Undo]:
        """Register ``function`` (``module``'s, or the engine's own); the undo takes it away."""
        entry = FunctionEntry(function.id, None, function.description, function.request_format,
                              function.response_format, function.metadata, builtin=function)
        self.registry.add_function(entry)
        self._functions_maybe_changed()
        self.invocations.registered(entry.id)

        def remove() -> None:
            if self._drop_builtin(entry) and module is not None:
                self._put_back(entry, module)

        return entry, remove

    def _put_back(self, entry: FunctionEntry, module: str) -> None:
        """What serves ``entry``'s id after ``module``'s stop took ``entry`` away: the function registered on the
        engine itself under that id (kept across stops), in its place or, a worker's registration current, restored
        at that worker's disconnect; else, during the engine's stop, the answer that the engine is stopping."""
        if not self._bring_back(entry.id):
            self._leave_gone(entry, module)

    def _bring_back(self, function_id: str) -> bool:
        """Put the function registered on the engine itself under ``function_id`` back in its place or, another's
        registration current, keep it to be restored when that goes (E5); ``False``: none is registered."""
        kept = self._engine_functions.get(function_id)
        if kept is None:
            return False
        current = self.registry.functions.get(function_id)
        if current is None:
            self.registry.add_function(kept)
            self._functions_maybe_changed()
            self.invocations.registered(function_id)
        elif current is not kept:
            self.registry.restore_later(kept)
        return True

    def _drop_builtin(self, entry: FunctionEntry) -> bool:
        """Take ``entry`` away, current or overwritten by a worker and kept to be restored (its disconnect brought back
        a stopped module's function); an earlier worker registration it overwrote comes back. ``False``: it was
        gone already (replaced)."""
        if self.registry.functions.get(entry.id) is not entry and \
                not any(kept is entry for kept in self.registry.shadowed_entries(owner=None, function_id=entry.id)):
            return False
        restored = self.registry.drop_owned_function(entry.id, None)
        if restored is not None:
            self._adopt(restored, "the engine's own function that overwrote it went with its module")
        return True

    def _leave_gone(self, entry: FunctionEntry, module: str) -> None:
        """During the engine's stop, a stopped module's function left with nothing in its place answers the calls that
        still reach it (the rest of the stop, before the calls in flight end) with ``engine_stopping``, which a caller
        may retry once the engine runs again: ``function_not_found`` looked permanent. It is not listed, and
        :meth:`has_function` denies it; it goes at the end of the stop."""
        if self._gone is None or entry.id in self.registry.functions:
            return
        message = f"the engine is stopping: {entry.id} is gone with its module ({module})"

        async def stopping(data: Any, ctx: InvocationContext) -> Any:
            raise EngineError("engine_stopping", message)

        gone = FunctionEntry(entry.id, None, entry.description, entry.request_format, entry.response_format,
                             entry.metadata, builtin=BuiltinFunction(entry.id, stopping, entry.description),
                             gone=True)
        self.registry.add_function(gone)
        self._gone[entry.id] = gone

    def _forget_gone(self) -> None:
        """The end of the stop: the stopped modules' functions go for good (function_not_found from now on)."""
        gone, self._gone = self._gone or {}, None
        for entry in gone.values():
            self._drop_builtin(entry)
        self._functions_maybe_changed()

    def unregister_function(self, function_id: str) -> None:
        """Remove a built-in function (one registered on the engine itself is no longer kept across stops)."""
        self._engine_functions.pop(function_id, None)
        self._withdraw(function_id)

    def _withdraw(self, function_id: str) -> Undo | None:
        """Remove ``function_id`` whoever registered it (a module's withdrawal: what the engine itself registered
        under it stays kept); the undo (``None``: the engine registered nothing under it) brings that back."""
        self.registry.remove_function(function_id)
        self._functions_maybe_changed()
        if function_id not in self._engine_functions:
            return None  # nothing of the engine's to bring back: the module's undos do not grow with its withdrawals

        def bring_back() -> None:
            self._bring_back(function_id)

        return bring_back

    def register_trigger_type(self, trigger_type: str, description: str, handler: TriggerTypeHandler) -> None:
        """Add a built-in trigger type; workers cannot replace it (E4)."""
        self._add_trigger_type(trigger_type, description, handler)

    def _add_trigger_type(self, trigger_type: str, description: str, handler: TriggerTypeHandler) -> Undo:
        entry = TriggerTypeEntry(trigger_type, description, None, handler)
        self.registry.put_trigger_type(entry)

        def remove() -> None:
            self.registry.drop_trigger_type(trigger_type, entry)
            for key in [key for key in self._handed if key[0] == trigger_type]:
                del self._handed[key]

        return remove

    def has_function(self, function_id: str) -> bool:
        """Whether ``function_id`` is registered (a stopped module's, during the rest of the engine's stop, is not)."""
        entry = self.registry.functions.get(function_id)
        return entry is not None and not entry.gone

    async def invoke(self, function_id: str, data: Any, *, timeout_s: float | None = None) -> Any:
        """Call any function and await its result."""
        return await self.invocations.call(function_id, data, timeout_s=timeout_s)

    async def start_invocation(self, function_id: str, data: Any) -> Started:
        """Start a call; await ``started.future`` for its outcome (no task for a worker's function)."""
        return await self.invocations.start(function_id, data)

    def fire(self, function_id: str, data: Any, *, taken: FiredSlots | None = None,
             busy_until: float | None = None) -> bool:
        """Call a function without waiting, counted against ``max_fired_calls`` (see
        :meth:`~iii_engine.modules.base.EngineServices.fire`)."""
        return self.invocations.fire(function_id, data, taken=taken, busy_until=busy_until)

    def worker_calls_stats(self) -> dict[str, int]:
        """The ``max_calls_per_worker`` counters (see :meth:`iii_engine.limits.WorkerCalls.stats`)."""
        return self.worker_calls.stats(self.workers.values())

    def worker_calls_degraded(self) -> bool:
        """Whether a worker's call was refused at ``max_calls_per_worker`` recently."""
        return self.worker_calls.degraded()

    async def invoke_when_free(self, function_id: str, data: Any, *, until: float | None = None) -> Any:
        """Call a function for a trigger, asking again while its worker is busy (see
        :meth:`~iii_engine.invocations.Invocations.call_while_busy`)."""
        return await self.invocations.call_while_busy(function_id, data, until=until)

    async def condition_passes(self, condition_function_id: str | None, payload: Any, *, wait_if_busy: bool = True,
                               busy_until: float | None = None, hold_place: bool = False) -> bool:
        """docs/protocol.md#built-in-functions: only a literal ``false`` skips; an error skips too (logged). A
        condition its worker refused for being busy (``worker_busy``: it did not decide) is asked again as a
        trigger-fired call is, then skipped, counted with those calls; with ``wait_if_busy=False`` the refusal is
        raised at once instead (the queue puts its job off, the REST API answers 503), as is any call stopped
        unanswered (``invocation_stopped``: the condition's worker left, before the call reached it,
        :class:`CallNotSent`, or after, or the engine is stopping), timed out (``invocation_timeout``), made to a
        function nobody serves (``function_not_found``) or never made, its data too deep for a frame
        (``serialization_error``): the condition did not decide, and a queue job skipped for
        it was done without its subscriber ever running (the queue fails the attempt instead, so the job is tried
        again or kept as a dead letter; the REST API answers as for its handler: 500, or 504 for a timeout).
        ``busy_until``: no try past this event-loop time (a cron tick's next tick).

        ``hold_place``: the caller holds a bare ``max_fired_calls`` slot, on no worker's share (a cron tick, a
        pub/sub delivery): a condition of a worker's function then holds a place in that worker's
        ``max_fired_calls_per_worker`` while it runs (:meth:`FiredCalls.condition_place`); with none free it is not
        asked and the trigger is skipped, counted with the calls not made for their callee's share. A trigger that
        already holds its handler worker's place (state and stream triggers) asks without one: a second place on the
        same worker lost half of a burst's events (all at a share of 1), and a ``stream:leave`` must not be
        skipped."""
        if not condition_function_id:
            return True
        place = None
        try:
            if wait_if_busy:
                owner = self._condition_owner(condition_function_id) if hold_place else None
                if owner is not None:
                    place = self.fired_calls.condition_place(owner, condition_function_id)
                    if place is None:
                        return False
                result = await self.invoke_when_free(condition_function_id, payload, until=busy_until)
            else:
                result = await self.invoke(condition_function_id, payload)
        except EngineError as exc:
            if exc.code in UNDECIDED_CODES or isinstance(exc, CallNotSent):
                if not wait_if_busy:
                    raise  # the queue puts its job off or fails its attempt: the condition did not decide (a skip
                    # lost the job)
                if exc.code == WORKER_BUSY:
                    return False  # counted and told by call_while_busy
            self._condition_failures.note("failed", f"condition {clip_text(condition_function_id)} failed "
                                                    f"({exc.code}: {clip_text(exc.message)}); skipping")
            return False
        finally:
            if place is not None:
                place.release()  # before the trigger's call is fired: it may be to the same worker
        return result is not False

    def _condition_owner(self, function_id: str) -> str | None:
        """The worker serving ``function_id`` now, ``None`` for a built-in or a function nobody serves."""
        entry = self.registry.functions.get(function_id)
        return entry.owner if entry is not None and entry.builtin is None and not entry.gone else None

    def triggers_of_type(self, trigger_type: str) -> list[TriggerInfo]:
        """The active triggers of a type."""
        return [TriggerInfo(**t.info()) for t in self.registry.triggers_of_type(trigger_type)]

    def module(self, name: str) -> EngineModule | None:
        """A loaded module by name."""
        return self.modules.get(name)

    def loaded_modules(self) -> list[EngineModule]:
        """Every module loaded now, in start order."""
        return list(self.modules.values())

    def service_functions(self, service_id: str) -> Collection[str]:
        """The worker functions registered under a service (live; empty when there is none)."""
        service = self.registry.services.get(service_id)
        return service.functions if service is not None else frozenset()

    def serve_named_queues(self, queues: NamedQueues | None) -> None:
        """Route enqueue actions to ``queues`` (the queue module)."""
        self.invocations.named_queues = queues

    def serve_external_functions(self, host: ExternalFunctions | None) -> None:
        """Route HTTP-invoked function registrations to ``host`` (the HTTP functions module)."""
        self._external = host


    def add_telemetry_listener(self, listener: AnyTelemetryListener) -> None:
        """Hand every telemetry frame to ``listener(kind, body, worker_id)`` (or ``listener(kind, body)``)."""
        self._add_listener(self._telemetry_listeners, telemetry_listener(listener))

    def set_invocation_observer(self, observer: InvocationObserver | None) -> None:
        """Watch every function execution (the observability module)."""
        self.invocations.observer = observer


    # -- hooks for the worker module -------------------------------------------------------------------------

    def add_functions_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` whenever the set of function ids may have changed."""
        self._add_listener(self._function_listeners, listener)

    def add_worker_listener(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener(event, worker_id)`` on connect, disconnect and metadata updates."""
        self._add_listener(self._worker_listeners, listener)

    def _add_listener(self, listeners: list[Any], listener: Any) -> Undo:
        listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                listeners.remove(listener)

        return remove

    def emit_worker_event(self, event: str, worker_id: str) -> None:
        """Tell listeners about a worker event (``worker_connected`` …)."""
        self._tell("worker", self._worker_listeners, event, worker_id)

    def _functions_maybe_changed(self) -> None:
        if self.registry.version != self._seen_version:
            self._seen_version = self.registry.version
            self._tell("functions", self._function_listeners)

    def _tell(self, kind: str, listeners: list[Any], *args: Any) -> None:
        """Call each of ``listeners`` (the ``kind`` ones) with ``args``; one that raises is logged (rate-limited)
        and the rest are still told. Before, the first to raise ended the loop: a functions listener failing in a
        worker's cleanup left the rest of that cleanup undone, and one failing on telemetry frames wrote a
        traceback per frame and kept the frames from the listeners after it."""
        for listener in tuple(listeners):  # (one may remove itself)
            try:
                returned = listener(*args)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:
                task = asyncio.current_task()
                if isinstance(exc, asyncio.CancelledError) and task is not None and task.cancelling():
                    raise  # this task is being cancelled: not the listener's failure
                # (a CancelledError of the listener's own, from a cancelled future it read, cut a leaving worker's
                # cleanup short as any other exception did)
                what = f"a {kind} listener ({callback_name(listener)}) failed"
                if self._listener_failures.take(kind, what):
                    log.exception("%s", what)
                continue
            if inspect.isawaitable(returned):
                # an async function behind a sync wrapper: what it returned would never run (dropped silently)
                if inspect.iscoroutine(returned):
                    returned.close()
                what = f"a {kind} listener ({callback_name(listener)}) returned an awaitable, which is not awaited"
                if self._listener_failures.take(kind, what):
                    log.error("%s: a listener must do its work before it returns (start a task of its own)", what)

    # -- control socket --------------------------------------------------------------------------------------

    async def _serve_worker(self, ws: ServerConnection) -> None:
        remote = ws.remote_address
        refusal = self.limits.connection_refusal(len(self.workers))
        if refusal is not None:
            log.warning("refused a worker from %s: %s; closed with %d", remote, refusal, TRY_AGAIN_LATER)
            # refused connections are not counted: each must go quickly, or a flood of peers that never answer
            # the close would pile up past max_workers for the close timeout
            await close_within(ws, TRY_AGAIN_LATER, refusal)
            return
        limit = self.config.max_outbox_bytes
        closing: list[asyncio.Task[None]] = []
        # The callbacks below name the worker by id, not through ``worker``: the outbox holds them, and a cycle
        # through the worker would keep each closed connection (and its buffers) until a full garbage collection.
        worker_id = str(uuid.uuid4())

        def overflow(size: int) -> None:
            log.warning("worker %s does not read what it is sent: %d bytes would be queued (max_outbox_bytes %d); "
                        "closing with %d", worker_id, size, limit, OVERFLOW_CLOSE_CODE)
            closing.append(asyncio.get_running_loop().create_task(_close_unread(ws, limit)))

        async def send(text: str) -> None:
            # one complete text frame, written without websockets' per-message machinery and corked with the
            # other frames of this event-loop turn (one socket write for a burst of results)
            await send_server_frame(ws, True, text.encode())

        def write_now(text: str, hold: bool) -> int:
            # Held for the end of the turn while the worker whose frame is being handled has more unread (a burst
            # of results or calls then leaves in one write per socket), else written at once: the lone frame of a
            # call one at a time costs no loop turn of its own.
            return write_frame_now(ws, text.encode(), hold or self._reading_more)

        async def drained() -> None:
            await drain_or_close(ws)

        worker = WorkerConnection(outbox=Outbox(send, max_bytes=limit, on_overflow=overflow,
                                                flush=lambda: flush_frames(ws), write_now=write_now,
                                                drained=drained),
                                  ip_address=str(remote[0]) if remote else None, id=worker_id,
                                  wait_closed=ws.wait_closed)
        self.workers[worker.id] = worker
        serving = asyncio.current_task()
        if serving is not None:
            self._worker_tasks.add(serving)
        worker.post(worker.session.registered())
        log.info("worker %s connected from %s", worker.id, worker.ip_address)
        self.emit_worker_event("worker_connected", worker.id)
        reading = _Reading()
        # Whole unfragmented frames come straight from iii.ws_fastpath's splitter (websockets' per-frame parser, frame
        # objects and assembler cost more than the small frames of the call path); ping/pong, Close, fragments and
        # oversize frames still go through websockets (iii.ws_fastpath falls back to ``recv``). Frames are handled
        # in the socket's read callback as they arrive (_arrived), in this task's context; this task takes over
        # what had to wait there, and every frame after it until it is done (issue 10: the reader's wake-up was
        # two of the four loop turns per routed call).
        context = contextvars.copy_context()
        on_arrival = ws_fastpath.take_on_arrival(
            ws, lambda unread: context.run(self._arrived, worker, ws, reading, unread))
        try:
            receive = ws_fastpath.receiver(ws)
            while True:
                self._reading_more = False
                left = reading.left
                if left is not None:
                    reading.left = None
                    reading.busy = True
                    try:
                        await left.rest()
                    except Exception:  # a bug in handling one frame must not take the connection down
                        log.exception("worker %s: failed to handle a frame", worker.id)
                    finally:
                        reading.busy = False
                    continue
                if reading.stop:
                    break
                if on_arrival and (not await ws_fastpath.next_arrival(ws) or reading.left is not None or reading.stop):
                    continue  # the callback took what arrived, or left this task a frame to finish first (above)
                is_text, payload = await receive()
                reading.busy = True
                try:
                    handling = self._handle_frame(worker, ws, reading, is_text, payload)
                    if handling is not None:
                        await handling[0]
                except Exception:  # a bug in handling one frame must not take the connection down
                    log.exception("worker %s: failed to handle a frame", worker.id)
                finally:
                    reading.busy = False
        except ConnectionClosed as exc:
            received = exc.rcvd.code if exc.rcvd else None
            sent = exc.sent.code if exc.sent else None
            if sent == 1009 and not exc.rcvd_then_sent:
                log.warning("worker %s sent a message over max_message_size (%d bytes); closed with 1009",
                            worker.id, self._listener.max_message_size)
            elif received == 1009:  # the worker's limit, not ours (websockets echoes the code it received)
                log.warning("worker %s closed its connection with 1009: a message the engine sent it was over its own "
                            "limit on incoming messages (a function listing or functions-available push larger than "
                            "it reads, perhaps: the reference SDK reads at most 1 MiB)", worker.id)
            else:
                log.info("worker %s connection closed (received %s, sent %s)", worker.id, received, sent)
        finally:
            ws_fastpath.take_on_arrival(ws, None)
            if reading.left is not None:  # the connection ended first: nobody finishes it (its finally blocks run)
                reading.left.close()
            try:
                await worker.outbox.close(flush=False)
                await self._cleanup(worker)
                for task in closing:
                    await task
                self.memory.note()
            finally:
                if serving is not None:
                    self._worker_tasks.discard(serving)

    def _arrived(self, worker: WorkerConnection, ws: ServerConnection, reading: _Reading,
                 unread: deque[tuple[bool, bytes]]) -> bool:
        """Handle ``worker``'s frames in the socket's read callback as they arrive, in order, while its reading
        task handles none; the first whose handling has to wait (or must run in a task) is left to the task
        (``reading.left``) with every frame after it. Returns whether the task has nothing to do (``False`` wakes
        it). Nothing may escape: an exception here would fail the transport and drop the connection without a
        Close frame."""
        if reading.busy or reading.left is not None or reading.stop:
            return False
        try:
            while unread:
                taken = ws_fastpath.take_ready(ws, 1, 1)
                if not taken:
                    break
                is_text, payload = taken[0]
                try:
                    handling = self._handle_frame(worker, ws, reading, is_text, payload)
                    if handling is not None:
                        coro, in_task = handling
                        if in_task:
                            reading.left = _Resumable(coro)
                        else:
                            try:
                                waits_on = coro.send(None)
                            except StopIteration:
                                pass
                            else:
                                reading.left = _Resumable(coro, waits_on, started=True)
                except Exception:  # as in the task: one frame's failure does not take the connection down
                    log.exception("worker %s: failed to handle a frame", worker.id)
                if reading.left is not None or reading.stop:
                    return False
        finally:
            self._reading_more = False
        return True

    def _handle_frame(self, worker: WorkerConnection, ws: ServerConnection, reading: _Reading, is_text: bool,
                      payload: bytes) -> tuple[Coroutine[Any, Any, None], bool] | None:
        """What handling one of ``worker``'s frames takes (``None``: nothing, a frame that means nothing): a
        coroutine to run to its end before the next frame, and whether it must run in the worker's task (code that
        may need one: a module's handler, asyncio.timeout; a thread's parse; the 1007 close)."""
        raw: str | bytes = payload
        if is_text:
            try:
                raw = payload.decode()
            except UnicodeDecodeError as exc:  # as websockets itself fails such a connection
                log.info("worker %s sent a text frame that is not UTF-8; closed with 1007", worker.id)
                reading.stop = True
                return ws_fastpath.fail(ws, 1007, str(exc)), True
        session = worker.session
        # Parsed once, under the one JSON policy. Big frames are parsed in a thread so the depth walk can yield the
        # GIL; awaiting it keeps this connection's frames in order.
        if session.parse_off_loop(raw):
            return self._on_big_frame(worker, ws, raw, payload), True
        event = session.receive(raw)
        if event is None:
            return None
        self._reading_more = has_unread(ws)
        # Started in the read callback, calls, results and registrations alike: a registration is then in force for
        # the frames of other workers read after it in the same loop turn, as when each reader took its frames in
        # turn. Those that run a module's code (a trigger type's handler, the HTTP functions module) run in the task.
        in_task = isinstance(event, (RegisterTrigger, UnregisterTrigger)) or (
            isinstance(event, RegisterFunction) and event.invocation is not None)
        return self._on_event(worker, event, len(payload), payload), in_task

    async def _on_big_frame(self, worker: WorkerConnection, ws: ServerConnection, raw: str | bytes,
                            payload: bytes) -> None:
        event = worker.session.accept(await self._parse_big_frame(raw))
        if event is not None:
            self._reading_more = has_unread(ws)
            await self._on_event(worker, event, len(payload), payload)

    async def _parse_big_frame(self, raw: str | bytes) -> Event | None:
        async with self._big_frame_lane:
            loop = asyncio.get_running_loop()
            started = loop.time()
            event = await asyncio.to_thread(read_frame, raw)
            await asyncio.sleep(loop.time() - started)
        self.memory.note()
        return event

    async def _on_event(self, worker: WorkerConnection, event: Event, size: int = 0,
                        frame: bytes | None = None) -> None:
        """Run what one event of ``worker``'s session asks for (the session already decided what it means);
        ``size``: its frame's, which a call holds of ``max_call_bytes_per_worker``; ``frame``: its text, whose
        :func:`retained_estimate` a registration holds of ``max_registration_bytes_per_worker``."""
        if type(event) is Invoke:  # the call path first; a built-in call starts without a coroutine of its own
            routed = self.invocations.start_invoke(worker, event.message, size)
            if routed is not None:
                await routed
        elif isinstance(event, Result):
            self.invocations.handle_result(worker, event.message, event.verbatim)
        elif isinstance(event, PingReceived):
            worker.post(worker.session.pong())
        elif isinstance(event, TelemetryReceived):
            self._tell("telemetry", self._telemetry_listeners, event.kind, event.body, worker.id)
        elif isinstance(event, Rejected):
            # The reason may quote the sender's input: capped, and the warnings rate-limited
            self._undecodable(worker, event.reason, event.reply is not None)
            self.memory.note()
            if event.reply is not None:
                worker.post(event.reply)
            if event.result_id is not None:
                self.invocations.reject_result(worker, event.result_id, event.reason)
        elif isinstance(event, RegisterFunction):
            await self._register_function(worker, event, _retained(frame, size))
        elif isinstance(event, UnregisterFunction):
            self._unregister_function(worker, event.id)
        elif isinstance(event, RegisterService):
            weight = _retained(frame, size)
            if not self.limits.admit_service(worker, self.registry, event.name or event.id, weight):
                return
            replaced = self.registry.register_service(event.id, event.name, event.parent_service_id, weight)
            if replaced is not None:
                log.warning("worker %s replaced service %r", worker.id, replaced.name)
        elif isinstance(event, RegisterTriggerType):
            self._register_trigger_type(worker, event.id, event.description, _retained(frame, size))
        elif isinstance(event, RegisterTrigger):
            entry = TriggerEntry(event.id, event.trigger_type, event.function_id, event.config, worker.id,
                                 size=_retained(frame, size))
            await self._register_trigger(worker, entry)
        elif isinstance(event, UnregisterTrigger):
            await self._unregister_trigger(worker, event.id)
        elif isinstance(event, UnregisterTriggerType):
            self._unregister_trigger_type(worker, event.id)
        elif isinstance(event, TriggerRegistrationResult):
            self._registration_answered(worker, event)

    # -- registrations ---------------------------------------------------------------------------------------

    async def _register_function(self, worker: WorkerConnection, msg: RegisterFunction, size: int = 0) -> None:
        held = msg.id in worker.functions or msg.id in worker.external_functions or \
            self.registry.shadows(worker.id, msg.id)
        if not self.limits.admit_registration(worker, self.registry, "function", msg.id, held, size):
            return
        builtin: BuiltinFunction | None = None
        if msg.invocation is not None:
            builtin = await self._register_external(worker, msg)
            if builtin is None:
                return
        else:  # this worker's HTTP-invoked registration of the id (current, or kept to be restored) goes for good
            current = self.registry.functions.get(msg.id)
            own = [current] if current is not None and current.owner == worker.id else []
            for replaced in (*own, *self.registry.shadowed_entries(owner=worker.id, function_id=msg.id)):
                self._drop_endpoint(replaced)
        fields = {"request_format": msg.request_format, "response_format": msg.response_format,
                  "metadata": msg.metadata}
        unlisted = [name for name, value in fields.items() if not fits_within(value, MAX_LISTED_DEPTH)]
        if unlisted:
            # kept, it made every function listing deeper than JSON is read with: engine::functions::list failed
            # for every SDK worker and the functions-available push for every listener, as long as it stayed
            self._trigger_notes.note("unlisted", f"worker {worker.id}: function {clip_text(msg.id)} registered "
                                                 f"without its {' and '.join(unlisted)}: nested too deep for the "
                                                 f"function listings (at most {MAX_LISTED_DEPTH} "
                                                 "levels)")
            fields.update(dict.fromkeys(unlisted))
        entry = FunctionEntry(msg.id, worker.id, msg.description, fields["request_format"], fields["response_format"],
                              fields["metadata"], builtin=builtin, external=builtin is not None, size=size)
        previous = self.registry.add_function(entry)
        self.invocations.registered(msg.id)
        if previous is not None and previous.owner != worker.id:
            log.warning("worker %s overwrote function %s (was %s)", worker.id, msg.id,
                        f"worker {previous.owner}" if previous.owner else "an engine built-in")
            self._disown(previous)
        # in exactly one of the sets: in both, the id counted twice against the limit, and the disconnect
        # dropped it through the first set without unregistering its endpoint through the second
        (worker.functions if entry.external else worker.external_functions).discard(msg.id)
        (worker.external_functions if entry.external else worker.functions).add(msg.id)
        self._functions_maybe_changed()

    async def _register_external(self, worker: WorkerConnection, msg: RegisterFunction) -> BuiltinFunction | None:
        if self._external is None:
            log.warning("worker %s: HTTP-invoked function %s not registered: HttpFunctionsModule not loaded",
                        worker.id, msg.id)
            return None
        try:
            return await self._external.register_external(msg.id, msg.invocation, worker.id)
        except EngineError as exc:
            log.warning("worker %s: HTTP-invoked function %s not registered: %s: %s", worker.id, msg.id,
                        exc.code, exc.message)
            return None

    def _disown(self, entry: FunctionEntry) -> None:
        owner = self.workers.get(entry.owner or "")
        if owner is not None:
            owner.functions.discard(entry.id)
            owner.external_functions.discard(entry.id)

    def _drop_endpoint(self, entry: FunctionEntry) -> None:
        """An HTTP-invoked registration goes for good: the HTTP functions module forgets its endpoint."""
        if entry.external and self._external is not None:
            try:
                self._external.unregister_external(entry.id, entry.owner)
            except Exception:
                log.exception("HttpFunctionsModule failed to unregister %s", entry.id)

    def _unregister_function(self, worker: WorkerConnection, function_id: str) -> None:
        entry = self.registry.functions.get(function_id)
        if entry is None:
            log.info("worker %s unregistered unknown function %s", worker.id, function_id)
            return
        mine = entry if entry.owner == worker.id else next(
            iter(self.registry.shadowed_entries(owner=worker.id, function_id=function_id)), None)
        if mine is not None:
            # The worker takes back its own registration, as its disconnect would (E5): the one it overwrote comes
            # back (another replica's, or an engine built-in a test overrode), and one overwritten by another
            # worker's goes alone. Dropping every registration of the id left a replica still serving it
            # unreachable, and a built-in gone until the engine's restart.
            self._drop_endpoint(mine)
            restored = self.registry.drop_owned_function(function_id, worker.id)
            if restored is not None:
                self._adopt(restored, f"worker {worker.id}, which overwrote it, unregistered it")
            self._disown(mine)
            self._functions_maybe_changed()
            return
        log.warning("worker %s unregistered function %s owned by %s (honoured for compatibility)",
                    worker.id, function_id, entry.owner or "the engine")
        for gone in (entry, *self.registry.shadowed_entries(function_id=function_id)):  # all go, kept ones too
            self._drop_endpoint(gone)
        self.registry.remove_function(function_id)
        self._disown(entry)
        self._functions_maybe_changed()

    def _register_trigger_type(self, worker: WorkerConnection, type_id: str, description: str, size: int = 0,
                               earlier: tuple[str, ...] | None = None) -> None:
        """``earlier``: given when the type is given back to ``worker`` (see :meth:`_give_back_trigger_type`), the
        owners to give it back to in turn. A type given back is held to ``worker``'s limits as a registration is
        (its count and bytes are ``worker``'s again), and a refusal says it was given back: ``worker`` sent
        nothing."""
        existing = self.registry.trigger_types.get(type_id)
        if existing is not None and existing.owner is None:
            log.warning("worker %s may not replace built-in trigger type %s; refused", worker.id, type_id)
            return
        kind = "trigger type" if earlier is None else "trigger type given back as its taker let it go,"
        replaces = existing.size if existing is not None and existing.owner != worker.id else 0
        if not self.limits.admit_registration(worker, self.registry, kind, type_id, type_id in worker.trigger_types,
                                              size, replaces):
            return
        earlier = earlier or ()
        taken_from = None
        if existing is not None and existing.owner == worker.id:
            earlier, taken_from = existing.earlier, existing.taken_from  # registered again: still given back
        if existing is not None and existing.owner != worker.id:
            taken_from = existing.owner
            # kept to give the type back when the new owner leaves (the old one's SDK still serves it)
            earlier = tuple(owner for owner in (existing.owner or "", *existing.earlier)
                            if owner != worker.id and owner in self.workers)[:MAX_EARLIER_OWNERS]
            moving = self.registry.triggers_of_type(type_id)
            log.warning("worker %s took over trigger type %s from worker %s; its %d triggers move to the new owner "
                        "(the old one is sent unregistertrigger for each)", worker.id, type_id, taken_from,
                        len(moving))
            previous = self.workers.get(taken_from or "")
            if previous is not None:
                previous.trigger_types.discard(type_id)
            old_feed = self._feeds.get(taken_from or "")
            if old_feed is not None:  # told first: no trigger fires at both owners, or stays at the old one
                for entry in moving:
                    old_feed.unregister(entry)
        feed = self._feed(worker)
        for entry in self.registry.triggers_of_type(type_id):
            feed.register(entry)
        for entry in self.registry.take_pending(type_id):
            feed.register(entry)
            self.registry.store_trigger(entry)
            self._trigger_info.note("activated", f"pending trigger {entry.id} activated by trigger type {type_id}")
        self.registry.put_trigger_type(TriggerTypeEntry(type_id, description, worker.id, taken_from=taken_from,
                                                        size=size, earlier=earlier))
        worker.trigger_types.add(type_id)

    async def _register_trigger(self, worker: WorkerConnection, entry: TriggerEntry) -> None:
        if not fits_within(entry.config, MAX_LISTED_DEPTH):
            # listed 4 levels deeper, past 128: engine::triggers::list was unreadable for every SDK worker
            self._trigger_notes.note("too_deep", f"worker {worker.id}: trigger {clip_text(entry.id)} not registered: "
                                                 f"its config nests deeper than {MAX_LISTED_DEPTH} "
                                                 "levels, too deep for engine::triggers::list")
            return
        trigger_type = self.registry.trigger_types.get(entry.trigger_type)
        if trigger_type is not None and trigger_type.handler is not None:
            entry.size += getattr(trigger_type.handler, "retained_bytes_per_trigger", 0)
        if not self.limits.admit_registration(worker, self.registry, "trigger", entry.id,
                                              self.registry.has_trigger_of(worker.id, entry.id), entry.size):
            return
        previous = self.registry.find_trigger(entry.id)
        if previous is not None and previous.registrant != worker.id:
            self._trigger_notes.note("replaced", f"worker {worker.id} replaced trigger {clip_text(entry.id)} of "
                                                 f"{_registrant(previous)}; that one comes back when this one goes "
                                                 "(E12)")
        await self._bind_trigger(entry)

    async def _bind_trigger(self, entry: TriggerEntry) -> None:
        """Make ``entry`` its id's trigger: bound at its type, or pending while the type is unknown (E2); withdrawn
        again at once when its registrant left meanwhile.

        Why: a type's ``register`` may wait (a Redis SUBSCRIBE), and a worker's cleanup may restore another's
        replaced trigger (E12) while that other worker is leaving too. Its own cleanup had then already withdrawn
        its triggers: the one stored after stayed active for good, its registrant gone (17 of 90 rounds of two
        workers leaving together, with pub/sub on Redis), and a publish reached whichever worker registered its
        function next."""
        await self._bind_trigger_once(entry)
        registrant = entry.registrant
        if registrant is not None and (registrant in self._leaving or registrant not in self.workers) \
                and self.registry.find_trigger(entry.id) is entry:
            await self._withdraw_trigger(entry)

    async def _bind_trigger_once(self, entry: TriggerEntry) -> None:
        trigger_type = self.registry.trigger_types.get(entry.trigger_type)
        if trigger_type is None:
            moved = self._moved_from(entry)
            self.registry.park_trigger(entry)
            self._trigger_notes.note("pending", f"{_registrant(entry)}: trigger {clip_text(entry.id)} waits for "
                                                f"unknown trigger type {clip_text(entry.trigger_type)} (pending)")
            if moved is not None:
                await self._unregister_from_type(moved)
            return
        handler = trigger_type.handler
        if handler is not None:
            key = (entry.trigger_type, entry.id)
            self._handed[key] = entry
            self._registering[entry.id] = self._registering.get(entry.id, 0) + 1
            try:
                with registering(entry.registrant):
                    await handler.register(TriggerInfo(**entry.info()))
            except Exception as exc:
                self._registered(entry.id)
                if isinstance(exc, EngineError):
                    self._trigger_notes.note("rejected", f"{_registrant(entry)}: trigger {clip_text(entry.id)} "
                                                         f"({clip_text(entry.trigger_type)}) rejected: {exc.code}: "
                                                         f"{clip_text(exc.message, 200)}")
                else:
                    log.exception("%s: trigger %s (%s) failed to register", _registrant(entry), clip_text(entry.id),
                                  clip_text(entry.trigger_type))
                if self._handed.get(key) is entry:  # nothing of the id went to the type since
                    del self._handed[key]
                    await self._after_refusal(entry, handler)
                return
            except BaseException:
                self._registered(entry.id)
                if self._handed.get(key) is entry:
                    del self._handed[key]
                raise
            self._registered(entry.id)
            handed = self._handed.get(key)
            if handed is not entry:
                # Another registration of the id went to the type while this one's register ran, and replaced it
                # there: this one is kept as the registration that one replaced (E12), or, when that one is gone
                # again already, handed to the type once more.
                if handed is None:
                    await self._bind_trigger_once(entry)
                else:
                    self._keep_to_come_back(entry)
                return
        else:
            owner = self.workers.get(trigger_type.owner or "")
            if owner is not None:
                self._feed(owner).register(entry)
        moved = self._moved_from(entry)
        self.registry.store_trigger(entry)
        if moved is not None:
            await self._unregister_from_type(moved)

    def _registered(self, trigger_id: str) -> None:
        """One register of ``trigger_id`` is no longer under way."""
        left = self._registering[trigger_id] - 1
        if left:
            self._registering[trigger_id] = left
        else:
            del self._registering[trigger_id]

    def _keep_to_come_back(self, entry: TriggerEntry) -> None:
        """Keep ``entry`` to come back when the registration of its id that replaced it goes (E12), unless its
        registrant is gone or made that one itself."""
        registrant = entry.registrant
        if registrant is None or (registrant in self.workers and registrant not in self._leaving):
            self.registry.keep_replaced_trigger(entry)

    async def _after_refusal(self, entry: TriggerEntry, handler: TriggerTypeHandler) -> None:
        """The type refused ``entry`` and was handed nothing of its id since. A type may have let the id's previous
        registration go before refusing (pub/sub forgets the old subscription first: that trigger stayed listed with
        no subscription, for good) or kept it (a refused config): the id's current trigger of this type is handed to
        it again, or, with none, whatever it kept of the id goes, and a registration this one was to replace comes
        back (E12)."""
        current = self.registry.triggers.get(entry.id)
        if current is not None and current.trigger_type == entry.trigger_type:
            key = (entry.trigger_type, entry.id)
            self._handed[key] = current
            try:
                with registering(current.registrant):
                    await handler.register(TriggerInfo(**current.info()))
            except Exception as exc:
                if self._handed.get(key) is current:
                    del self._handed[key]
                    if self.registry.triggers.get(entry.id) is current:
                        self.registry.discard_trigger(entry.id)
                        log.warning("trigger %s of %s is no longer registered: its type %s let it go refusing another "
                                    "registration of its id and refused it again (%s)", clip_text(entry.id),
                                    _registrant(current), clip_text(entry.trigger_type), clip_text(repr(exc), 200))
                        restored = self.registry.restore_trigger(entry.id)  # the one it had replaced comes back (E12)
                        if restored is not None:
                            await self._bind_restored(restored, current)
            return
        try:
            await handler.unregister(TriggerInfo(**entry.info()))  # by id: what the type kept of it
        except Exception:
            log.exception("trigger type %s failed to unregister trigger %s", clip_text(entry.trigger_type),
                          clip_text(entry.id))
        if current is None and not self._registering.get(entry.id) and self.registry.find_trigger(entry.id) is None:
            restored = self.registry.restore_trigger(entry.id)
            if restored is not None:
                await self._bind_restored(restored, entry)

    def _registration_answered(self, worker: WorkerConnection, event: TriggerRegistrationResult) -> None:
        """A trigger type owner's answer to a ``registertrigger``: a refusal of the trigger it was last sent parks
        the trigger (pending, not listed) until the type is registered again (E11). The wire does not say which
        registration an answer is to: a refusal decides only as the one answer owed of its id, and one that ends a
        stretch of answers owed at once among which one accepted leaves the trigger active (parking it could
        leave a trigger the owner holds unlisted, and its registrant's unregister would never reach the owner)."""
        feed = self._feeds.get(worker.id)
        answer = feed.answered(event.id, not event.error) if feed is not None else "stale"
        if not event.error:
            log.debug("worker %s registered trigger %s", worker.id, clip_text(event.id))
            return
        entry = self.registry.triggers.get(event.id)
        trigger_type = self.registry.trigger_types.get(event.trigger_type)
        # every field may be the owner's garbage: capped, and the lines rate-limited
        what = f"worker {worker.id} could not register trigger {clip_text(event.id)} ({clip_text(event.trigger_type)})"
        why = clip_text(str(event.error), 200)
        if (feed is None or answer == "stale" or entry is None or entry.trigger_type != event.trigger_type
                or trigger_type is None or trigger_type.owner != worker.id):
            self._trigger_info.note("ignored", f"{what}: {why}; it is no longer asked to (since sent again, "
                                               "unregistered or moved), ignored")
            return
        if answer == "ambiguous":
            self._trigger_notes.note("ambiguous", f"{what}: {why}; another answer owed for it at the same time "
                                                  "accepted, and answers do not say which registration they are to: "
                                                  "the trigger stays active")
            return
        feed.refused(entry.id)
        self.registry.park_trigger(entry)
        self._trigger_notes.note(
            "refused", f"worker {worker.id}, owner of trigger type {clip_text(entry.trigger_type)}, refused trigger "
                       f"{clip_text(entry.id)} of {f'worker {entry.registrant}' if entry.registrant else 'the engine'} "
                       f"(function {clip_text(entry.function_id)}): {why}; the trigger is pending (not listed) until "
                       "the type is registered again")

    def _park_type_triggers(self, type_id: str, feed: _TriggerFeed | None) -> None:
        """The owner of ``type_id`` let it go: its triggers wait (pending) for the type's next owner (E11); ``feed``,
        that owner's while it is connected, is told to unregister each."""
        parked = self.registry.triggers_of_type(type_id)
        for entry in parked:
            if feed is not None:
                feed.unregister(entry)
            self.registry.park_trigger(entry)
        if parked:
            log.info("trigger type %s is gone: its %d triggers are pending until it is registered again", type_id,
                     len(parked))

    def _moved_from(self, entry: TriggerEntry) -> TriggerEntry | None:
        """The active trigger of ``entry``'s id under another type, which ``entry`` replaces: that type still runs
        it until told (its own type replaces a trigger of the same id itself)."""
        active = self.registry.triggers.get(entry.id)
        return active if active is not None and active.trigger_type != entry.trigger_type else None

    async def _unregister_trigger(self, worker: WorkerConnection, trigger_id: str) -> None:
        entry = self.registry.find_trigger(trigger_id)
        if entry is None:
            log.info("worker %s unregistered unknown trigger %s", worker.id, clip_text(trigger_id))
            return
        if entry.registrant == worker.id:
            await self._withdraw_trigger(entry)
        elif self.registry.drop_replaced_trigger(trigger_id, worker.id):
            log.info("worker %s unregistered its trigger %s, which %s had replaced: the replacement stays (E12)",
                     worker.id, clip_text(trigger_id), _registrant(entry))
        else:
            log.warning("worker %s unregistered trigger %s registered by %s (honoured for compatibility)",
                        worker.id, clip_text(trigger_id), entry.registrant or "the engine")
            self.registry.forget_replaced_triggers(trigger_id=trigger_id)
            await self._deactivate(entry)

    async def _withdraw_trigger(self, entry: TriggerEntry) -> None:
        """``entry``'s registrant takes it back (or is gone): the registration of its id it replaced, if any, comes
        back (E12). An ``entry`` another registration replaced meanwhile (a departing worker's list of its triggers
        is taken before it withdraws them one by one) is only forgotten, its type untouched."""
        if self.registry.find_trigger(entry.id) is not entry:
            self.registry.drop_replaced_trigger(entry.id, entry.registrant)
            return
        await self._deactivate(entry)
        restored = self.registry.restore_trigger(entry.id)
        if restored is not None:
            await self._bind_restored(restored, entry)

    async def _bind_restored(self, restored: TriggerEntry, gone: TriggerEntry) -> None:
        if self._registering.get(restored.id) or self.registry.find_trigger(restored.id) is not None:
            # a registration of the id is on its way to its type (or here already): it replaces this one, which
            # comes back when that one goes
            self._keep_to_come_back(restored)
            return
        log.info("trigger %s of %s is back: the one of %s that replaced it is gone", clip_text(gone.id),
                 _registrant(restored), _registrant(gone))
        await self._bind_trigger(restored)

    async def _deactivate(self, entry: TriggerEntry) -> None:
        was_active = self.registry.triggers.get(entry.id) is entry
        self.registry.discard_trigger(entry.id)
        if was_active:  # a pending trigger never reached its type
            await self._unregister_from_type(entry)

    async def _unregister_from_type(self, entry: TriggerEntry) -> None:
        trigger_type = self.registry.trigger_types.get(entry.trigger_type)
        if trigger_type is None:
            return
        if trigger_type.handler is not None:
            key = (entry.trigger_type, entry.id)
            if self._handed.get(key) is not entry:
                return  # a later registration of the id went to the type: it replaced this one there
            del self._handed[key]
            try:
                await trigger_type.handler.unregister(TriggerInfo(**entry.info()))
            except Exception:
                log.exception("trigger type %s failed to unregister trigger %s", clip_text(entry.trigger_type),
                              clip_text(entry.id))
        else:
            feed = self._feeds.get(trigger_type.owner or "")
            if feed is not None:
                feed.unregister(entry)

    def _feed(self, owner: WorkerConnection) -> _TriggerFeed:
        feed = self._feeds.get(owner.id)
        if feed is None:
            feed = self._feeds[owner.id] = _TriggerFeed(owner)
        return feed

    def _unregister_trigger_type(self, worker: WorkerConnection, type_id: str) -> None:
        existing = self.registry.trigger_types.get(type_id)
        if existing is not None and existing.owner != worker.id and existing.taken_from == worker.id:
            log.warning("worker %s unregistered trigger type %s, which worker %s took over from it (its triggers "
                        "were unregistered at %s then); ignored", worker.id, type_id, existing.owner, worker.id)
        if existing is not None and existing.owner != worker.id:
            # it no longer wants the type back when its owner leaves
            existing.earlier = tuple(owner for owner in existing.earlier if owner != worker.id)
            if existing.taken_from == worker.id:
                return
        if existing is None or existing.owner != worker.id:
            log.warning("worker %s unregistered trigger type %s it does not own; ignored", worker.id, type_id)
            return
        self.registry.drop_trigger_type(type_id)
        worker.trigger_types.discard(type_id)
        feed = self._feeds.get(worker.id)
        if existing.earlier and feed is not None:  # told first, so no trigger is bound at both owners
            for entry in self.registry.triggers_of_type(type_id):
                feed.unregister(entry)
            feed = None
        # to the worker it was taken over from, as when its owner leaves (its triggers waited, pending, before)
        if not self._give_back_trigger_type(existing):
            self._park_type_triggers(type_id, feed)

    # -- disconnect ------------------------------------------------------------------------------------------

    async def _cleanup(self, worker: WorkerConnection) -> None:
        """docs/protocol.md#connection-lifecycle step 3, owner-aware (E5)."""
        self._leaving.add(worker.id)
        try:
            await self._forget_worker(worker)
        finally:
            self._leaving.discard(worker.id)

    async def _forget_worker(self, worker: WorkerConnection) -> None:
        for function_id in sorted(worker.functions):
            restored = self.registry.drop_owned_function(function_id, worker.id)
            if restored is not None:
                self._adopt(restored, f"worker {worker.id}, which overwrote it, left")
        for function_id in sorted(worker.external_functions):
            current = self.registry.functions.get(function_id)
            if current is not None and current.owner == worker.id:
                self._drop_endpoint(current)
            restored = self.registry.drop_owned_function(function_id, worker.id)
            if restored is not None:
                self._adopt(restored, f"worker {worker.id}, which overwrote it, left")
        for kept in self.registry.shadowed_entries(owner=worker.id):  # overwritten ones are never restored now
            self._drop_endpoint(kept)
        self.registry.forget_owner(worker.id)
        self._functions_maybe_changed()
        self.invocations.halt_worker(worker)
        self.registry.forget_replaced_triggers(registrant=worker.id)
        for entry in self.registry.triggers_of_registrant(worker.id):
            await self._withdraw_trigger(entry)
        feed = self._feeds.pop(worker.id, None)
        if feed is not None:
            feed.close()
        for type_id in worker.trigger_types:
            existing = self.registry.trigger_types.get(type_id)
            if existing is not None and existing.owner == worker.id:
                self.registry.drop_trigger_type(type_id)
                if not self._give_back_trigger_type(existing):
                    self._park_type_triggers(type_id, None)
        CountLimits.report(worker)
        self.channels.drop_owner(worker.id)
        self.workers.pop(worker.id, None)
        log.info("worker %s disconnected", worker.id)
        self.emit_worker_event("worker_disconnected", worker.id)

    def _give_back_trigger_type(self, gone: TriggerTypeEntry) -> bool:
        """The type ``gone``'s owner (leaving, or letting it go) took over from another worker: it goes back to the
        first of its earlier owners still connected, with its triggers, as an overwritten function does (E5);
        whether one took it. Before, its triggers waited for a new registration of the type while the earlier
        owner, still connected, believed it served them."""
        for at, owner_id in enumerate(gone.earlier):
            earlier = self.workers.get(owner_id)
            if earlier is None or owner_id in self._leaving:
                continue
            self._register_trigger_type(earlier, gone.id, gone.description, gone.size, gone.earlier[at + 1:])
            given = self.registry.trigger_types.get(gone.id)
            if given is not None and given.owner == owner_id:
                log.info("trigger type %s goes back to worker %s: worker %s, which took it over, %s", gone.id,
                         owner_id, gone.owner, "left" if gone.owner not in self.workers or gone.owner in self._leaving
                         else "let it go")
                return True
        return False

    def _adopt(self, entry: FunctionEntry, after: str | None = None) -> None:
        """``entry`` is current again, an overwritten registration brought back (E5); ``after``: how the one that
        overwrote it went, for the log (a caller of the id is served by its earlier owner again, with that owner's
        data: it was said at the overwrite only)."""
        if after is not None:
            log.info("function %s goes back to %s: %s", clip_text(entry.id),
                     f"worker {entry.owner}" if entry.owner else "the engine", after)
        owner = self.workers.get(entry.owner or "")
        if owner is not None:
            (owner.external_functions if entry.external else owner.functions).add(entry.id)
        self.invocations.registered(entry.id)  # (a restored built-in too: it needs no owner)
