"""The worker client: ``register_worker`` and :class:`III`.

``III`` is a thin driver. The protocol state (registrations and their replay, pending calls, generation, what
an incoming frame means) is :class:`iii.protocol.client.ClientSession`, which does no I/O; the socket is
:class:`iii.connection.Connection`. The rest is one small object per job: :class:`~iii.loop_bridge.LoopBridge`
(the private loop in a daemon thread: sync methods block on it, ``*_async`` methods may be awaited from any
loop, docs/protocol.md#sdk-improvements S4), :class:`~iii.pending_calls.PendingCalls` (futures and timeouts),
:class:`~iii.handler_runner.HandlerRunner` (function handlers), :class:`~iii.trigger_host.TriggerTypeHost`
(custom trigger types) and :class:`~iii.telemetry_wiring.TelemetryWiring`.

Example:
    >>> # with register_worker("ws://localhost:49134") as iii:
    >>> #     iii.register_function("greet", lambda data: {"hello": data["name"]})
    >>> #     iii.trigger({"function_id": "greet", "payload": {"name": "Ada"}})
    >>> # {'hello': 'Ada'}
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import numbers
import threading
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from types import TracebackType
from typing import Any, Final, TypeVar

from pydantic import BaseModel

from .callback_set import CallbackSet
from .channels import ChannelReader, ChannelWriter
from .connection import Connection, Frame, MessageTooLargeError, Write, check_reconnection, check_url, shown_url
from .errors import ConnectionLostError, InvocationError, ShuttingDownError
from .handler_runner import HandlerRunner
from .handler_threads import ExitWait
from .handler_threads import blocked as handler_blocked
from .iii_constants import DEFAULT_RECONNECTION_CONFIG as DEFAULT_RECONNECTION_CONFIG  # reference re-export
from .iii_constants import MAX_QUEUE_SIZE as MAX_QUEUE_SIZE  # reference re-export
from .iii_constants import FunctionRef, IIIConnectionState, InitOptions
from .iii_types import (
    FunctionInfo,
    HttpInvocationConfig,
    RegisterFunctionFormat,
    RegisterFunctionInput,
    RegisterFunctionMessage,
    RegisterServiceInput,
    RegisterServiceMessage,
    RegisterTriggerInput,
    RegisterTriggerTypeInput,
    StreamChannelRef,
    TriggerActionEnqueue,
    TriggerActionVoid,
    TriggerInfo,
    TriggerRequest,
    WorkerInfo,
)
from .loop_bridge import CANCEL_WAIT_S, LoopBridge, LoopStoppedError
from .loss_log import BurstLog, LossLog, counts_said, latest_tail
from .payloads import action_to_wire, format_dict, resolve_channels
from .pending_calls import LoopWaiter, PendingCalls, Settle, ThreadWaiter
from .protocol.client import (
    WORKER_BUSY,
    CallFailed,
    CallSucceeded,
    ClientSession,
    Event,
    FrameSkipped,
    InvocationRequested,
    Send,
    TriggerDropped,
    TriggerRequested,
    WorkerRegistered,
    describe_registration,
    message_too_large,
    registration_too_large,
    result_too_large,
    worker_busy,
)
from .protocol.codec import MAX_JSON_DEPTH, MAX_LISTED_DEPTH, fits_within
from .reconnect_retry import NotFoundRetry, settling_window
from .stream import IStream
from .stream_glue import stream_functions
from .telemetry_wiring import TelemetryWiring, checked_otel_config
from .trigger_host import TriggerTypeHost
from .triggers import Trigger, TriggerHandler
from .types import Channel, RemoteFunctionHandler
from .worker_metadata import worker_metadata

# Older private names, still imported by tests.
_action_to_wire = action_to_wire
_resolve_channels = resolve_channels

__all__ = ["III", "TriggerAction", "register_worker"]

_VOID: Final = TriggerActionVoid()

log = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

# The bound on waiting for the FIRST connection (register_worker, connect_async): the reference SDK's 30 s.
# ReconnectionConfig.max_retries can end it sooner; once connected, a lost engine is retried as configured
# (forever by default). Read at call time so tests can shorten it.
_REFERENCE_CONNECT_WAIT_S = 30.0
# After a reconnect, how long to wait for the engine to forget the old worker before checking registrations.
_RECOVERY_WINDOW_S = 30.0
_OWN_CALLS_TIMEOUT_MS: Final = 30_000.0  # the client's own calls when its invocation_timeout_ms is 0
_RECOVERY_POLL_S = 0.25
_WORKER_ID_WAIT_S = 2.0
UNNAMED_WARN_S: Final = 5.0
"""Seconds after a connection is up by which the engine must have named it (``workerregistered``), or one warning
says it may not be an iii engine's worker port. A server that accepts the upgrade and never names the connection (the
engine's stream socket, 3112 by default, or any other WebSocket server) let register_worker return "connected" and
every call then wait its whole timeout with no word of why. ``iii-channel`` waits this long for the name too. Read at
call time, so tests can shorten it."""
# The most old connections' worker ids a registration check after a reconnect waits for (the newest).
_UNCHECKED_WORKERS_KEPT = 64
# A worker id no engine gives (they are random UUIDs): a worker list filtered on it is empty, whatever the engine holds.
_NO_WORKER: Final = "00000000-0000-0000-0000-000000000000"
# At most one warning per this many seconds about invocations refused past max_invocations (with their counts).
_BUSY_LOG_INTERVAL_S: Final = 10.0
_SKIP_LOG_BURST: Final = 10
"""Lines per :data:`_BUSY_LOG_INTERVAL_S` for the engine's frames skipped with a warning; the rest are counted."""
TRIGGERS_WAITING_MAX: Final = 100_000
"""Trigger registrations of the engine's that wait for one of the ``max_invocations`` places (each a small record, no
task); past them one is refused ``worker_busy`` (see ``III._refuse_trigger``)."""


def _refuse_unlisted(value: Any, what: str, kind: str) -> None:
    """``ValueError`` for a registration's field the engine's listings could not carry: our engine drops such a
    function's field and refuses such a trigger, which the protocol never answers (the call seemed to work)."""
    if not fits_within(value, MAX_LISTED_DEPTH):
        raise ValueError(f"{what} nests deeper than {MAX_LISTED_DEPTH} levels: the engine's {kind} listings add 4, and "
                         f"JSON is read {MAX_JSON_DEPTH} deep at most")


class III:
    """A worker connected to an iii engine; usable as ``with`` / ``async with`` (shut down on exit).

    Example:
        >>> # iii = III("ws://localhost:49134", InitOptions(worker_name="billing"))
        >>> # iii.get_connection_state()
        >>> # 'connected'
    """

    def __init__(self, address: str, options: InitOptions | None = None) -> None:
        # A URL that can never work fails here, before a thread starts (ValueError naming the bad part).
        self._address = check_url(address)
        self._options = options or InitOptions()
        check_reconnection(self._options.reconnection_config)
        # OpenTelemetry numbers that cannot work fail here, naming the field (before: OpenTelemetry's ValueError ended
        # the start on the client's loop, and register_worker waited 30 s to say it could not reach the engine); one
        # of a part of telemetry that is off (telemetry, by enabled=False or OTEL_ENABLED=false; logs; metrics) is
        # never used: taken with a warning, as the reference connects with it.
        checked_otel_config(self._options.otel)
        # The timeout of calls that give none, checked like theirs (a NaN or negative default broke every call).
        self._timeout_ms = _checked_timeout_ms(self._options.invocation_timeout_ms, "invocation_timeout_ms")
        send_timeout_ms = _checked_timeout_ms(self._options.send_timeout_ms, "send_timeout_ms")
        if not send_timeout_ms:
            raise ValueError("send_timeout_ms must be a number of milliseconds > 0, got 0")
        self._max_invocations = _checked_count(self._options.max_invocations, "max_invocations")
        self._session = ClientSession()
        self._shutdown_cause: str | None = None  # why it shut down, when not by a call of the user's (a note)
        # Told as the interpreter's exit starts: a worker whose main thread ended (or was ended by Ctrl-C) without a
        # shutdown stayed connected while the interpreter waited for its sync handlers, each invocation meanwhile
        # refused with an error line of its own.
        self._runner = HandlerRunner(self._address, on_exit=self._interpreter_exiting)
        # (a trigger a reconnect's sweep finds gone gets no unregistertrigger: the session forgets it then)
        # (each bind or unbind hook waited for at most the invocation timeout: a hung one held its trigger's turn and a
        # max_invocations slot for good)
        self._trigger_host = TriggerTypeHost(on_gone=self._session.forget_owned_trigger,
                                             hook_deadline=self._timeout_ms / 1000 or None)
        self._telemetry = TelemetryWiring()
        # Run on a daemon thread of their own (not the handler threads, which the exit waits for: one callback
        # blocked for good kept the process up after shutdown), only the newest list waiting: see iii.callback_set.
        # An async one runs on the loop (as async handlers do), the callbacks' thread waiting for its end.
        self._functions_available: CallbackSet[[list[FunctionInfo]]] = CallbackSet(
            None, "functions-available", self._run_callback_coroutine)
        self._functions_available_callbacks = self._functions_available.callbacks
        self._functions_available_queue = self._functions_available.waiting
        self._functions_available_trigger: Trigger | None = None
        self._functions_available_function_id: str | None = None
        # The ids of the last list handed to the callbacks, and how many lists the engine pushed: after a reconnect
        # the list is read once, and handed on only if it differs and no push came meanwhile (see
        # _refresh_functions_available)
        self._functions_available_ids: frozenset[str] | None = None
        self._functions_available_pushes = 0
        # Subscribing and unsubscribing from several threads at once registered one trigger each (every callback
        # then ran once per trigger on each change, and the extra triggers outlived the last unsubscribe).
        self._functions_available_lock = threading.Lock()
        self._registrations_ready: CallbackSet[[]] = CallbackSet(None, "registrations-ready",
                                                                 self._run_callback_coroutine)
        # The worker ids of old connections whose late cleanup (T7) no registration check has seen the end of yet,
        # oldest first. The session names only the last one lost: a connection lost while the check for an older one
        # still waited made the next check wait for its own worker only, and the older cleanup then deleted what
        # had been re-sent (after "ready" was said).
        self._unchecked_workers: dict[str, None] = {}
        # Which register_function call owns each id now: a FunctionRef of an earlier registration of that id must not
        # unregister the later one.
        self._function_owners: dict[str, object] = {}
        # Two threads registering one function id at once both passed the id check: both registrations went to the
        # engine, or the refused one took the winner's handler away with it.
        self._registering = threading.Lock()
        self._connection_state: IIIConnectionState = "disconnected"
        self._closed = False
        # The shutdown's own task on the client's loop, done once it has run to its end: a task, so a caller cancelled
        # half-way (a handler's deadline, a caller's loop at its end) does not leave it half done.
        self._shut: asyncio.Task[None] | None = None
        # The thread of the first shutdown from outside the loop: a sync handler shutting its client down returns as
        # the shutdown does, and is not named among the handlers the process waits for.
        self._shutdown_thread: int | None = None
        self._outside_shutdowns: set[asyncio.Future[None]] = set()  # shutdown_async() tasks on callers' loops
        self._invoking = 0  # handler runs started and not yet answered
        # Trigger registrations the engine asks of this worker (TriggerRequested): at most max_invocations run at
        # once, the rest wait their turn here, each with its binding (noted by the host as its frame came)
        self._owning = 0
        self._owning_waiting: collections.deque[tuple[TriggerRequested, Coroutine[Any, Any, Any]]] = \
            collections.deque()
        self._busy = LossLog(self._log_busy, _BUSY_LOG_INTERVAL_S)  # invocations refused past max_invocations
        # answers to an engine's requests that went nowhere: the connection they came on was gone
        self._stale = LossLog(self._log_stale, _BUSY_LOG_INTERVAL_S)
        # frames of the engine's skipped with a warning (a call of a function not here, a malformed frame): one line
        # each up to a burst, the rest counted (an engine's flood of calls to a missing function wrote 200,000 lines)
        self._skipped = BurstLog(_SKIP_LOG_BURST, _BUSY_LOG_INTERVAL_S, log.warning,
                                 LossLog(self._log_skipped, _BUSY_LOG_INTERVAL_S))
        # Woken (on the client's loop) whenever the connection state or the worker id changes; one per waiting
        # caller, each removed when its wait ends.
        self._state_waiters: list[asyncio.Future[None]] = []

        self._bridge = LoopBridge()
        self._loop = self._bridge.loop
        self._calls = PendingCalls(self._loop)
        reconnection = self._options.reconnection_config or DEFAULT_RECONNECTION_CONFIG
        self._retry = NotFoundRetry(self._loop, settling_window(reconnection.max_delay_ms, reconnection.jitter_factor),
                                    resend=self._resend)
        self._conn = Connection(
            address,
            on_frame=self._on_frame,
            on_open=self._on_open,
            on_ready=self._on_ready,
            on_lost=self._on_lost,
            on_state=self._set_connection_state,
            reconnection=self._options.reconnection_config,
            keep=self._session.is_pending,
            on_dropped=self._on_call_dropped,
            on_oversized=self._on_call_oversized,
            send_timeout=send_timeout_ms / 1000,
        )
        # The telemetry exporters read the engine's limit from it, to split their frames under it.
        self._telemetry_sink = _TelemetrySink(self.send_telemetry, self._conn)
        self._bridge.submit(self._start_async())

    # ---------------------------------------------------------------- context manager (issue #11)

    def __enter__(self) -> III:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.shutdown()

    async def __aenter__(self) -> III:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.shutdown_async()

    # ---------------------------------------------------------------- small helpers

    def _run_on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._bridge.run(coro)

    def _run_callback_coroutine(self, coro: Coroutine[Any, Any, None]) -> None:
        """An async callback's run (on_functions_available, on_registrations_ready), on the client's loop; from the
        callbacks' thread, which waits for its end. A loop already stopped (a shutdown cut the wait short) says so
        in the callback's error line."""
        self._bridge.run(coro)

    def _send_registration(self, frame: str) -> None:
        """Send a registration change now if a socket is up; otherwise the replay on connect covers it."""
        if self._conn.state == "connected" and self._fits(frame):
            self._conn.send_soon(_RegistrationFrame(frame))

    def _fits(self, registration: str) -> bool:
        """Whether ``registration`` is within the current socket's size limit; if not, an error names it: it is not
        sent (the engine would close the connection with 1009, and again at every connect as it is replayed)."""
        if len(registration) <= self._conn.check_above:
            return True
        size, limit = self._conn.oversize(registration), self._conn.max_message_size
        if size is None or limit is None:
            return True
        log.error("%s", registration_too_large(describe_registration(registration), size, limit))
        return False

    def _registration_check(self, what: str) -> Callable[[str], None]:
        """The check of a new registration (``what``: ``function 'f'``, ...) against the engine's known size limit:
        ``ValueError`` (:func:`~iii.protocol.client.registration_too_large`) for one over it."""

        def check(frame: str) -> None:
            if len(frame) > self._conn.check_above:
                size, limit = self._conn.oversize(frame), self._conn.max_message_size
                if size is not None and limit is not None:
                    raise registration_too_large(what, size, limit)

        return check

    def _register(self, frame: str) -> None:
        if self._closed:
            # Shut down: no connection to tell and no replay to come. An unregister here is the usual clean-up after
            # a `with` block; handing it to the closed loop raised "Event loop is closed".
            return
        try:
            self._bridge.soon(self._send_registration, frame)
        except RuntimeError:  # the loop closed after the check above: shut down meanwhile
            if not self._closed:
                raise

    def _refuse_if_closed(self) -> None:
        """``ShuttingDownError`` for a registration on a client that was shut down (it would never reach an
        engine); it raised "Event loop is closed" once the private loop was gone, and nothing after shutdown_async."""
        if self._closed:
            raise ShuttingDownError(self._shutdown_cause)

    # ---------------------------------------------------------------- connection lifecycle

    async def wait_until_connected_async(self, within: float | None = None) -> None:
        """Return once the client is connected, waiting at most ``within`` seconds (``None``: 30 s, the bound of
        :meth:`connect_async`); usable from any loop, a handler's too. Ours: the reference SDK has no such call.

        Raises ``ConnectionError`` ("cannot reach the engine at … within 2 s (3 attempts; last error: …)") when no
        connection came in time (the client keeps trying in the background), or at once when
        ``ReconnectionConfig.max_retries`` ran out; :class:`~iii.errors.ShuttingDownError` when the client is (or
        gets) shut down.
        ``ValueError`` for a ``within`` that is not a finite number of seconds >= 0. Connected, it also waits
        (briefly, without an error, and within ``within``) for the engine to name the worker (:attr:`worker_id`). It
        wakes on every change of the connection state: no polling.

        Example:
            >>> # try:
            >>> #     await iii.wait_until_connected_async(2)
            >>> # except ConnectionError:
            >>> #     ...  # the engine is down: answer "unavailable" now rather than queue the request
        """
        await self._connected_within(self._connect_wait(within))

    def wait_until_connected(self, within: float | None = None) -> None:
        """Block until the client is connected, at most ``within`` seconds (``None``: 30 s, :func:`register_worker`'s
        bound): the sync form of :meth:`wait_until_connected_async`, with its errors and its checks of ``within``.
        Ours: the reference SDK has no such call (its ``register_worker`` waits, privately). For a thread with no
        loop of its own, as a command line's; from an async handler of this client, while not connected, it raises
        ``RuntimeError`` (it would block the loop it waits on; connected, it returns at once): await
        :meth:`wait_until_connected_async` there.

        Example:
            >>> # iii = III("ws://localhost:49134")
            >>> # iii.wait_until_connected(2)  # ConnectionError after 2 s when the engine is down
        """
        self._wait_until_connected(self._connect_wait(within))

    def _connect_wait(self, within: float | None) -> float:
        """The seconds a ``wait_until_connected[_async]`` waits (``within`` checked; ``None``: the 30 s bound);
        :class:`ShuttingDownError` once the client is shut down."""
        within = _REFERENCE_CONNECT_WAIT_S if within is None else _checked_seconds(within, "within")
        if self._closed:
            raise ShuttingDownError(self._shutdown_cause)
        return within

    def _wait_until_connected(self, timeout: float | None = None) -> None:
        """Block until connected; ``ConnectionError`` when that did not happen within ``timeout`` seconds
        (default: the 30 s bound) or reconnection gave up (``max_retries``)."""
        if self._connection_state == "connected" and self._session.worker_id is not None:
            return
        self._run_on_loop(self._connected_within(_REFERENCE_CONNECT_WAIT_S if timeout is None else timeout))

    async def _connected_within(self, seconds: float) -> None:
        """Return once connected; ``ConnectionError`` after ``seconds`` or when retries ran out (any loop)."""
        if asyncio.get_running_loop() is not self._loop:
            await self._bridge.run_async(self._connected_within(seconds))
            return
        loop = self._loop
        deadline = loop.time() + seconds
        while self._connection_state != "connected":
            if self._closed:
                raise ShuttingDownError(self._shutdown_cause)
            if self._connection_state == "failed":
                if self._conn.not_an_engine is not None:
                    raise ConnectionError(self._conn.not_an_engine)
                retries = (self._options.reconnection_config or DEFAULT_RECONNECTION_CONFIG).max_retries
                # "failed after max retries": the reference's wording, for code that matched on it.
                raise ConnectionError(self._unreachable(": failed after max retries", f"max_retries={retries}"))
            if not await self._state_change(deadline - loop.time()):
                raise ConnectionError(self._unreachable(f" within {seconds:g} s"))
        # The engine sends workerregistered right after the upgrade (T1); a moment's wait means worker_id is
        # usually set when the caller gets the client. Nothing depends on it, so no error if it is late; nor a wait
        # past the caller's bound: against a server that never names the worker, wait_until_connected_async(0.5)
        # took 2 s.
        named_by = min(loop.time() + _WORKER_ID_WAIT_S, deadline)
        while self._session.worker_id is None and self._connection_state == "connected":
            if not await self._state_change(named_by - loop.time()):
                break

    def _unreachable(self, why: str, config: str = "") -> str:
        attempts = self._conn.failed_attempts
        detail = f"{attempts} attempt{'s' if attempts != 1 else ''}" + (f", {config}" if config else "")
        if self._conn.last_error:
            detail += f"; last error: {self._conn.last_error}"
        opened = self._session.generation
        if opened and self._conn.last_lost and self._connection_state != "connected":
            # (reached, but no connection lasted: "0 attempts" alone read as an engine never reached)
            detail += (f"; connected {opened} time{'s' if opened != 1 else ''}, the last connection lost: "
                       f"{self._conn.last_lost}")
        return f"cannot reach the engine at {shown_url(self._address)}{why} ({detail})"

    async def _state_change(self, seconds: float) -> bool:
        """Wait (on the client's loop) for the next state or worker-id change; False after ``seconds``."""
        if seconds <= 0:
            return False
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._state_waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, seconds)
            return True
        except TimeoutError:
            return False
        finally:
            if waiter in self._state_waiters:
                self._state_waiters.remove(waiter)

    def _notify_state(self) -> None:
        waiters, self._state_waiters = self._state_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def connect_async(self) -> None:
        """Connect and wait for the first connection (the constructor already started it); safe to call again.

        Returns once connected. Raises ``ConnectionError`` ("cannot reach the engine at …") when no connection
        came within 30 s or ``ReconnectionConfig.max_retries`` ran out; the client then keeps trying in the
        background until :meth:`shutdown_async`. A connection lost later is retried as configured.

        Example:
            >>> # await iii.connect_async()
        """
        await self._start_async()
        await self._connected_within(_REFERENCE_CONNECT_WAIT_S)

    async def _start_async(self) -> None:
        """Start connecting in the background (telemetry set up once); returns at once."""
        if self._closed:
            raise ShuttingDownError(self._shutdown_cause)
        if asyncio.get_running_loop() is not self._loop:
            await self._bridge.run_async(self._start_async())
            return
        self._telemetry.start(self, self._options.otel, self._loop, self._telemetry_sink)
        await self._conn.start()

    def shutdown(self, *, close_timeout: float | None = None) -> None:
        """Disconnect, fail pending calls, stop the private loop and join its thread (5 s).

        ``close_timeout`` (ours: the reference SDK has none) bounds the writing of frames still queued (answers,
        fire-and-forget calls, telemetry) and the wait for the engine's answer to the WebSocket close, together, in
        seconds (default 2): past it the socket is dropped. A short-lived client with nothing left to say
        (a CLI under a deadline) need not give a server that stopped answering 2 s. A second call waits for the first
        and its bound.

        Example:
            >>> # iii.shutdown()
            >>> # iii.shutdown(close_timeout=0.25)
        """
        close_timeout = _checked_close_timeout(close_timeout)
        if not self._bridge.alive:
            return
        if self._shutdown_thread is None:
            self._shutdown_thread = threading.get_ident()
        try:
            self._run_on_loop(self._shutdown_on_loop(close_timeout))
        except LoopStoppedError:
            pass  # another thread's shutdown() stopped the loop once the shutdown was done: nothing left to do
        except RuntimeError:
            if not self._bridge.loop.is_closed():  # (a call from the loop's own thread, say)
                raise
        self._bridge.stop()

    async def shutdown_async(self, *, close_timeout: float | None = None) -> None:
        """Disconnect, fail pending calls with ``iii is shutting down``, stop the private loop and join its thread.

        From any loop but the client's own, it returns once the loop thread has ended (5 s at most), never blocking
        the caller's loop on the join; cancelling the caller does not cut the shutdown short. From the client's own
        loop (an async handler of this client), it returns once disconnected, and the loop thread ends as soon as
        the calling task (the handler's run) has ended: its answer, if it has one, goes nowhere (the connection is
        closed). Safe to call again, from anywhere: a second call waits for the first.

        ``close_timeout`` (ours: the reference SDK has none) is :meth:`shutdown`'s: it bounds the wait for the
        engine's answer to the WebSocket close, in seconds (default 2), and ``ValueError`` is raised for one that is
        not a finite number of seconds >= 0.

        Example:
            >>> # await iii.shutdown_async()
            >>> # await iii.shutdown_async(close_timeout=0.25)
        """
        close_timeout = _checked_close_timeout(close_timeout)
        if asyncio.get_running_loop() is self._loop:
            await self._shutdown_then_end(close_timeout)
            return
        if not self._bridge.alive:
            return
        if self._shutdown_thread is None:
            self._shutdown_thread = threading.get_ident()
        # A task of its own, shielded: a caller cancelled half-way (a deadline) left a client shut down and its
        # loop thread running for good. Kept referenced until it ends (the loop holds tasks only weakly).
        task = asyncio.ensure_future(self._shutdown_from_outside(close_timeout))
        self._outside_shutdowns.add(task)
        task.add_done_callback(self._outside_shutdowns.discard)
        await asyncio.shield(task)

    def _interpreter_exiting(self) -> ExitWait | None:
        """The interpreter's exit has started (called once, by the handler threads: see
        :class:`~iii.handler_threads.HandlerThreads`): from then on it refuses new sync handler runs and waits for
        those going on. Refuse them here first, each with an error for its caller and no line of its own, and shut
        down, so the engine routes nothing more here; the shutdown names the runs the process waits for, in one line.
        The shutdown runs on as a task, the loop ending after it; off the loop thread (the exit hook) the wait for it
        is returned, so every client's shutdown is under way before the hook waits for any (see
        :data:`~iii.handler_threads.EXIT_WAIT_S`)."""
        self._runner.refuse("the interpreter is exiting")
        # Threads of the user's still running after the main thread ended get ShuttingDownError from here on: say why
        self._shutdown_cause = ("shut down by the interpreter's exit (the main thread ended without shutdown()): join "
                                "threads that use the client in the main thread, or use `with register_worker(...)`")
        log.info("The interpreter is exiting: the client of %s shuts down (it was not shut down)",
                 shown_url(self._address))
        bridge: LoopBridge | None = getattr(self, "_bridge", None)  # (None: the exit started before __init__ ended)
        if bridge is None or not bridge.alive:
            return None
        if bridge.on_loop_thread():
            bridge.spawn(self._shutdown_then_end())
            return None
        if self._shutdown_thread is None:
            self._shutdown_thread = threading.get_ident()
        shutdown = self._shutdown_then_end()
        try:
            bridge.submit(shutdown)
        except RuntimeError:  # the loop closed meanwhile (another thread's shutdown ended it): nothing to wait for
            shutdown.close()
            return None
        return self._exit_wait

    def _exit_wait(self, seconds: float) -> None:
        """The exit hook's wait for the shutdown :meth:`_interpreter_exiting` started: the loop thread's end, at most
        ``seconds``. A loop held past it (an async handler blocking it) is left: its thread is a daemon, the exit goes
        on (waiting on, the exit lasted as long as the handler blocked, for ever for one that never returns)."""
        bridge = self._bridge
        bridge.thread.join(seconds)
        if bridge.alive:
            # (Its steps wait CANCEL_WAIT_S each at most, and a few in a row outlast the exit's wait: a hung unbind
            # after a handler swallowing its cancel was blamed on a loop held, the loop turning all along.)
            log.warning("The shutdown of the client of %s at the interpreter's exit did not end within %g s (%s); the "
                        "exit goes on without it", shown_url(self._address), round(seconds, 1),
                        f"it was waiting for trigger-type hooks still running ({CANCEL_WAIT_S:g} s at most), or its "
                        f"event loop was held: an async handler that blocks it, say" if self._trigger_host.finishing
                        else f"its event loop held, an async handler that blocks it, say, or a cancelled handler or a "
                             f"callback not ending within {CANCEL_WAIT_S:g} s")

    async def _shutdown_from_outside(self, close_timeout: float | None = None) -> None:
        """:meth:`shutdown_async` from another loop: the shutdown on the client's loop, then the loop's end."""
        try:
            await self._bridge.run_async(self._shutdown_then_end(close_timeout), to_its_end=True)
        except LoopStoppedError:
            pass  # another thread's shutdown() stopped the loop once the shutdown was done (or closed it)
        await self._bridge.stop_async()

    async def _shutdown_then_end(self, close_timeout: float | None = None) -> None:
        """On the client's loop: :meth:`_shutdown_on_loop`, then the loop's end once the shutdown has run to its end
        and every task that called this has ended (a handler goes on after its shutdown_async returns), even when a
        caller is cancelled half-way (a handler's deadline, the end of an ``asyncio.run`` on another loop, whose
        cancel reaches this task): nobody may be left to stop the loop."""
        shut = self._start_shutdown(close_timeout)
        task = asyncio.current_task()
        # (Not when the loop's thread has already ended and someone else runs the loop to close the socket.)
        if task is not None and self._bridge.on_loop_thread():
            self._bridge.stop_after(task, shut)
        await asyncio.shield(shut)

    async def _shutdown_on_loop(self, close_timeout: float | None = None) -> None:
        """Disconnect and fail pending calls (on the client's loop); the loop and its thread are left running."""
        await asyncio.shield(self._start_shutdown(close_timeout))

    def _start_shutdown(self, close_timeout: float | None = None) -> asyncio.Task[None]:
        """The shutdown's task, started by the first call: a task of its own, run to its end whoever stops waiting
        for it; a second call waits for the first (run again alongside it, it closed the connection under it, and
        shutdown() callers raced to stop the loop)."""
        if self._shut is None:
            self._closed = True
            self._shut = self._loop.create_task(self._shut_down(asyncio.current_task(), close_timeout))
        return self._shut

    async def _shut_down(self, caller: asyncio.Task[Any] | None, close_timeout: float | None = None) -> None:
        """:meth:`_shutdown_on_loop`'s work; ``caller`` (an async handler calling it, say) is not cancelled."""
        # From here on no callback is called (a function list still waiting is dropped: the connection it describes
        # is being closed); one running is waited for at the end.
        self._functions_available.close()
        self._registrations_ready.close()
        try:
            await self._telemetry.release(self)
            await self._conn.close(close_timeout)
            self._busy.close()  # refusals counted since the last warning are told now
            for invocation_id in self._retry.close():  # answered, so the session no longer knows them
                self._calls.fail(invocation_id, ShuttingDownError(self._shutdown_cause))
            for failure in self._session.close(self._shutdown_cause):  # a call under way says why, as later ones
                self._calls.fail(failure.invocation_id, failure.error)
            while self._owning_waiting:  # never started: nobody is owed their answers any more
                self._owning_waiting.popleft()[1].close()
            await self._bridge.cancel_tasks(spare=caller)
            self._stale.close()  # results dropped since the last warning (the handlers' last ones among them)
            self._skipped.losses.close()
            # The unbinds owed by the trigger types let go (unregister_trigger_type) run to their end, CANCEL_WAIT_S at
            # most (each hook its deadline): cancelled with the tasks above, 0 of 5 ran. Those of types still owned are
            # left (as the reference SDK does): the engine drops the types with the connection. A hook shutting its
            # client down (the caller) is neither waited for (it waits for this: it held it 3 s, then was cancelled) nor
            # cancelled.
            await self._trigger_host.finish_releases(CANCEL_WAIT_S, spare=caller)
            self._trigger_host.cancel_hooks(spare=caller)
            self._trigger_host.close_logs()
            self._set_connection_state("disconnected")
        finally:
            # (also when a step above failed: the handler threads never outlive the client)
            self._runner.close(spare_thread=self._shutdown_thread)
            # A callback still running gets CANCEL_WAIT_S to return (as a cancelled handler task does), the loop
            # still turning (an async one runs there); past it, it is named in a warning and its daemon thread left.
            # Left at once, a slow but finite one was cut off by the process's exit. (The shutdown's caller is spared:
            # a callback shutting its client down waits for the shutdown.)
            await asyncio.gather(
                self._functions_available.finish(CANCEL_WAIT_S, self._shutdown_thread, caller),
                self._registrations_ready.finish(CANCEL_WAIT_S, self._shutdown_thread, caller))

    def get_connection_state(self) -> IIIConnectionState:
        """``disconnected``, ``connecting``, ``connected``, ``reconnecting`` or ``failed``.

        Example:
            >>> # iii.get_connection_state()
        """
        return self._connection_state

    @property
    def worker_id(self) -> str | None:
        """The id the engine gave this connection (``None`` before ``workerregistered``)."""
        return self._session.worker_id

    @property
    def last_connection_error(self) -> str | None:
        """Why the last connection attempt failed (``None`` before any failure), as the ``ConnectionError`` of a
        wait names it. Ours: the reference SDK has no such property.

        Example:
            >>> # iii.last_connection_error  # 'Connection refused', say
        """
        return self._conn.last_error

    @property
    def last_connection_loss(self) -> str | None:
        """Why the last connection that was up (WebSocket handshake done) ended, as websockets tells it (``None``
        while none has ended): what a wait that saw no connection can say about a server that completes the
        handshake and then closes, or sends what is not a WebSocket frame. Ours: the reference SDK has no such
        property.

        Example:
            >>> # iii.last_connection_loss  # 'received 1011 (internal error) going away', say
        """
        return self._conn.last_lost

    def send_telemetry(self, frame: bytes) -> None:
        """Send one binary telemetry frame (``OTLP``/``MTRC``/``LOGS`` + body) on the worker socket.

        Telemetry is best effort: while the engine is unreachable it waits in the outbound queue like any frame,
        and goes out on the next connection; past its share of that queue, or once reconnection gave up, it is
        dropped, counted in ``Connection.dropped`` and logged (rate-limited). The SDK's own frames, registrations
        and results, never are. Callable from any thread.

        Example:
            >>> # iii.send_telemetry(b"OTLP" + otlp_json)
        """
        if frame[:4] not in (b"OTLP", b"MTRC", b"LOGS"):
            raise ValueError("a telemetry frame must start with OTLP, MTRC or LOGS")

        def send() -> None:
            # Not only while ready: during an outage the frame waits in the queue (the reference SDK's telemetry
            # socket queued it too); dropped here unqueued, 199 of 200 log records of an outage were lost unseen.
            self._conn.send_soon(frame, droppable=True)

        if self._bridge.alive:
            self._bridge.soon(send)

    def _set_connection_state(self, state: IIIConnectionState) -> None:
        self._connection_state = state
        # "failed" wakes register_worker too, so it raises at once instead of after 30 s.
        self._notify_state()

    async def _on_open(self, write: Write) -> None:
        # Registration frames still queued from before (never written to the socket that died) are out of date: the
        # replay below is the book as it is now. Sent after it, a stale one undid a change made during the outage
        # (an unregistered trigger came back, and a cron one fired on with nobody to unregister it).
        stale = self._conn.discard_queued(_is_registration)
        if stale:
            log.debug("Dropped %d queued registration frames; the replay covers them", stale)
        # Answers to the old connection's requests, still queued, are out of date too: the engine ended those
        # requests when that connection went. Sent on this one, they went to an engine that never asked for them on
        # it (10,809 results and 26,935 trigger answers after a hostile engine's flood), ahead of this one's frames.
        answers = self._conn.discard_queued(_is_answer)
        if answers:
            self._stale.lost("queued", f"{answers} answer(s) queued when the connection was lost", answers)
        for frame in self._session.connection_opened():
            # One made before this socket's limit was known (while disconnected, or on a socket with a larger one)
            # is left out: replayed, it closed the connection with 1009 at every connect, for ever.
            if self._fits(frame):
                await write(frame)

    def _on_ready(self) -> None:
        if self._retry.until:  # a reconnect (the connection was lost before): its settling window starts
            self._retry.ready()
        self._loop.call_later(UNNAMED_WARN_S, self._check_named, self._session.generation)
        tp, bg = self._telemetry.trace.headers()
        frame, lost_worker_id = self._session.connection_ready(worker_metadata(self._options), tp or None,
                                                               bg or None)
        self._conn.send_soon(frame)
        if lost_worker_id is not None:
            self._unchecked_workers[lost_worker_id] = None
            while len(self._unchecked_workers) > _UNCHECKED_WORKERS_KEPT:  # (a connection that flaps for ever)
                del self._unchecked_workers[next(iter(self._unchecked_workers))]
        if self._unchecked_workers or self._registrations_ready.callbacks:
            # (With no old connection to check and nobody to tell, there is nothing to do: no round trip.)
            self._bridge.spawn(self._recover_then_ready(tuple(self._unchecked_workers), self._session.generation))
        if self._trigger_host.holds:
            self._bridge.spawn(self._unbind_gone_triggers(self._session.generation))
        if lost_worker_id is not None and self._functions_available_trigger is not None:
            self._bridge.spawn(self._refresh_functions_available(self._session.generation))

    def _check_named(self, generation: int) -> None:
        """Warn when the connection of ``generation``, still up, was never named by a ``workerregistered``."""
        if (self._session.worker_id is None and self._session.generation == generation and self._conn.is_ready
                and not self._closed):
            log.warning("%s accepted the WebSocket upgrade but has not named this connection (no workerregistered "
                        "within %g s): is it an iii engine's worker port? The engine's stream socket (3112 by default) "
                        "accepts the upgrade too, and answers no call", shown_url(self._address), UNNAMED_WARN_S)

    async def _recover_then_ready(self, lost_worker_ids: tuple[str, ...], generation: int) -> None:
        """:meth:`_recover_registrations` (none lost: one round trip, so the replay written before is handled, not
        only written), then the :meth:`on_registrations_ready` callbacks if the connection it checked is still the one
        up (a newer one runs them after its own check). Also after the check failed in an unforeseen way (logged
        here, not left in the task): a callback that never came would leave a bridge's stream clients unaware of the
        outage."""
        try:
            if lost_worker_ids:
                await self._recover_registrations(lost_worker_ids)
            else:
                await self._round_trip()
        except Exception:
            log.exception("The registration check of a new connection failed unexpectedly; the registrations-ready "
                          "callbacks run all the same")
        if self._conn.is_ready and self._session.generation == generation and not self._closed:
            self._registrations_ready.push()

    async def _unbind_gone_triggers(self, generation: int) -> None:
        """After a reconnect, the triggers of our types that the engine no longer has are unbound (docs/protocol.md
        S6): those unregistered while the engine was away or restarting, whose unregistertrigger went to the dead
        socket. The engine sends an owner every trigger of its type again after the type's registration in the
        replay; a trigger listing asked after it (so answered once that registration is handled) names the rest, whose
        registertrigger is still on its way. A trigger neither sent again nor listed is unbound; those listed are
        waited for, listed again every quarter second for at most 30 s: one dropped before it was sent is unbound
        then. Before, each stayed bound (a cron or interval trigger fired its function on) until the worker shut down.
        """
        deadline = self._loop.time() + _RECOVERY_WINDOW_S
        while True:
            try:
                listed = await self._call("engine::triggers::list", {"include_internal": True}, None,
                                          self._own_timeout_ms)
            except (InvocationError, TimeoutError, ShuttingDownError) as exc:
                # (the connection went: the next one checks again; an engine that lists none: nothing is unbound)
                log.debug("The check of owned triggers after a reconnect stopped: %s", exc)
                return
            if self._session.generation != generation or self._closed:
                return
            held = {(str(t.get("trigger_type")), str(t.get("id"))) for t in listed.get("triggers", [])
                    if isinstance(t, dict)}
            on_the_way = await self._trigger_host.sweep(generation, held)
            if not on_the_way or self._loop.time() >= deadline or self._session.generation != generation:
                return
            await asyncio.sleep(_RECOVERY_POLL_S)

    @property
    def _own_timeout_ms(self) -> float:
        """The timeout of the client's own calls (its recovery checks after a reconnect): the client's
        ``invocation_timeout_ms``, or :data:`_OWN_CALLS_TIMEOUT_MS` where that is 0, which times a call out at once
        (the checks then stopped at once and a trigger gone from the engine stayed bound at its handler)."""
        return self._timeout_ms or _OWN_CALLS_TIMEOUT_MS

    async def _round_trip(self) -> None:
        """:meth:`_handled_so_far`, a failure logged, not raised (the connection may be gone: a newer one runs its
        own; an error answer is an answer all the same)."""
        try:
            await self._handled_so_far()
        except (InvocationError, TimeoutError, ShuttingDownError) as exc:
            log.debug("Round trip after the registration replay stopped: %s", exc)

    async def _handled_so_far(self) -> None:
        """Return once the engine has handled every frame this connection sent before (it handles a connection's
        frames in order, docs/protocol.md#framing): the cheapest call it answers, a worker list filtered on an id
        no worker has. Unfiltered, the answer listed every worker with its functions (tens of KB on a busy
        engine), once per connection of every worker with a registrations-ready callback."""
        await self._call("engine::workers::list", {"worker_id": _NO_WORKER}, None, self._own_timeout_ms)

    def _on_call_dropped(self, invocation_id: str) -> None:
        code = "connection_lost"
        if self._conn.not_an_engine is not None:
            why = f"{self._conn.not_an_engine}; reconnection gave up"
        elif self._conn.gave_up:
            retries = (self._options.reconnection_config or DEFAULT_RECONNECTION_CONFIG).max_retries
            why = self._unreachable(f": reconnection gave up (max_retries={retries})")
        else:
            why = self._conn.refused_for_bytes or (f"the outbound queue was full ({MAX_QUEUE_SIZE} frames waiting for "
                                                   "the engine)")
            code = self._conn.queue_full_code  # (with a socket up, the connection is not what failed it)
        self._retry.forget(invocation_id)
        failure = self._session.call_dropped(invocation_id, why)
        if failure is not None:
            error = failure.error
            if code != "connection_lost" and isinstance(error, InvocationError):
                error = ConnectionLostError(code, error.message)
            self._calls.fail(failure.invocation_id, error)

    def _on_call_oversized(self, invocation_id: str, size: int, limit: int) -> None:
        self._retry.forget(invocation_id)
        failure = self._session.call_too_big(invocation_id, size, limit)
        if failure is not None:
            self._calls.fail(failure.invocation_id, failure.error)

    def _on_lost(self) -> None:
        self._retry.lost()
        queued = self._conn.queued_calls()
        for failure in self._session.connection_lost({key for key, _ in queued}, too_big=self._conn.closed_too_big,
                                                     refused_over=self._conn.refused_too_big):
            self._retry.forget(failure.invocation_id)
            self._calls.fail(failure.invocation_id, failure.error)
        # Calls made before the loss and still queued go out after the reconnect like those made during the outage:
        # answered function_not_found then, they failed at once (25 of 40 held back by a stalled engine's flow control).
        for invocation_id, frame in queued:
            function_id = self._session.pending_function(invocation_id)
            if function_id is not None:
                self._retry.remember(invocation_id, function_id, frame)

    def _resend(self, calls: list[tuple[str, str, str | bytes]]) -> None:
        """Send again calls answered ``function_not_found`` just after a reconnect (:mod:`iii.reconnect_retry`)."""
        self._bridge.spawn(self._resend_in_turn(calls))

    async def _resend_in_turn(self, calls: list[tuple[str, str, str | bytes]]) -> None:
        """Each of ``calls`` whose caller still waits, tracked again and sent as a new call is: waiting for room in
        the outbound queue, so a burst of them cannot overfill it (sent all in one turn, 3,000 such calls failed
        2,000 "never sent" at the queue's bound of 1,000)."""
        for invocation_id, function_id, frame in calls:
            if invocation_id not in self._calls or self._closed:
                self._retry.forget(invocation_id)
                continue
            self._session.track_call(invocation_id, function_id)
            try:
                # (refused, the connection's on_dropped / on_oversized fails the call and forgets it)
                await self._conn.send(frame, invocation_id, batch=True)
            except Exception as exc:  # an unforeseen failure fails this call, not the rest of the batch unsent
                self._retry.forget(invocation_id)
                self._session.forget(invocation_id)
                self._calls.fail(invocation_id, exc)

    async def _recover_registrations(self, old_worker_ids: tuple[str, ...]) -> None:
        """Re-send registrations the cleanup of old connections (``old_worker_ids``) deleted, once the engine knows
        none of them (docs/protocol.md#production-behaviour-our-sdk-copes-with T7)."""
        loop = self._loop
        deadline = loop.time() + _RECOVERY_WINDOW_S
        waiting = list(old_worker_ids)
        try:
            while loop.time() < deadline:
                # Asked one id at a time, filtered: an unfiltered list grows with every worker on the engine, and
                # this polls every _RECOVERY_POLL_S after each reconnect.
                for worker_id in list(waiting):
                    workers = await self._call("engine::workers::list", {"worker_id": worker_id}, None,
                                               self._own_timeout_ms)
                    if not any(w.get("id") == worker_id for w in workers.get("workers", [])):
                        waiting.remove(worker_id)
                if not waiting:
                    break
                await asyncio.sleep(_RECOVERY_POLL_S)
            else:
                self._checked(old_worker_ids)  # given up on: later checks do not wait for them again
                return
            # Each send may wait (a socket backed up): a frame is re-checked against the book just before it goes,
            # or one unregistered meanwhile came back (its unregister had already left).
            listed = await self._call("engine::functions::list", {"include_internal": True}, None, self._own_timeout_ms)
            for frame in self._session.missing_functions(f.get("function_id") for f in listed.get("functions", [])):
                if self._session.holds(frame) and self._fits(frame):
                    # (what it registers, not the frame: an HTTP function's frame holds its URL and headers)
                    log.info("Re-registering a function lost in the old connection's cleanup: %s",
                             describe_registration(frame))
                    await self._conn.send(_RegistrationFrame(frame), own=True)
            listed = await self._call("engine::triggers::list", {"include_internal": True}, None, self._own_timeout_ms)
            resent = False
            for frame in self._session.missing_triggers(t.get("id") for t in listed.get("triggers", [])):
                if self._session.holds(frame) and self._fits(frame):
                    log.info("Re-registering a trigger lost in the old connection's cleanup: %s",
                             describe_registration(frame))
                    await self._conn.send(_RegistrationFrame(frame), own=True)
                    resent = True
            if resent:
                # A round trip: the engine handles a connection's frames in order, so once it answers, the triggers
                # re-sent above are in place (on_registrations_ready promises that). The functions' were already,
                # before the trigger list was answered.
                await self._handled_so_far()
            self._checked(old_worker_ids)
        except ConnectionLostError as exc:
            # The connection dropped under the check: the next connection's check waits for these workers too.
            log.debug("Registration check after reconnect stopped: %s", exc)
        except (InvocationError, TimeoutError, ShuttingDownError, AttributeError) as exc:
            log.debug("Registration check after reconnect stopped: %s", exc)
            self._checked(old_worker_ids)

    def _checked(self, old_worker_ids: tuple[str, ...]) -> None:
        """Registration checks no longer wait for the cleanup of ``old_worker_ids``."""
        for worker_id in old_worker_ids:
            self._unchecked_workers.pop(worker_id, None)

    # ---------------------------------------------------------------- incoming frames

    def _on_frame(self, raw: Frame) -> None:
        for event in self._session.receive(raw):
            self._dispatch(event)

    def _dispatch(self, event: Event) -> None:
        """Act on one event of the protocol core (loop thread)."""
        if isinstance(event, CallSucceeded):
            if self._retry.active:
                self._retry.forget(event.invocation_id)
            self._calls.succeed(event.invocation_id, event.result)
        elif isinstance(event, InvocationRequested):
            # (the client's own functions-available callback function is not refused: the engine sends at most one
            # push at a time, and a refused push left the callbacks without the change until the next one)
            if (self._invoking >= self._max_invocations
                    and event.function_id != self._functions_available_function_id):
                self._refuse_invocation(event)
            else:
                self._invoking += 1
                self._bridge.spawn(self._invoke(event))
        elif isinstance(event, CallFailed):
            error = event.error
            if self._retry.active and isinstance(error, InvocationError) \
                    and self._retry.retry(event.invocation_id, error):
                return  # sent again once its function may be back: the caller keeps waiting
            self._calls.fail(event.invocation_id, error)
        elif isinstance(event, Send):
            self._conn.send_soon(event.frame, droppable=event.droppable)
        elif isinstance(event, WorkerRegistered):
            self._notify_state()
        elif isinstance(event, TriggerRequested):
            if self._owning >= self._max_invocations and len(self._owning_waiting) >= TRIGGERS_WAITING_MAX:
                self._refuse_trigger(event)
                return
            # (noted by the host now, in the order the frames came: a reconnect's check must see what was re-sent)
            binding = self._trigger_host.register(event.trigger_type, event.trigger_id, event.function_id,
                                                  event.config, event.generation)
            if self._owning >= self._max_invocations:
                self._owning_waiting.append((event, binding))
            else:
                self._owning += 1
                self._bridge.spawn(self._register_owned_trigger(event, binding))
        elif isinstance(event, TriggerDropped):
            self._bridge.spawn(self._trigger_host.unregister(event.trigger_type, event.trigger_id,
                                                            event.function_id, event.config))
        elif isinstance(event, FrameSkipped):
            if event.level < logging.WARNING or self._skipped.take("skipped", event.reason[:300]):
                log.log(event.level, "%s", event.reason)

    async def _invoke(self, event: InvocationRequested) -> None:
        end_span = None
        try:
            (result, error, traceparent), end_span = await self._runner.start(
                event.function_id, event.data, event.traceparent, event.baggage, self._telemetry.trace,
                event.no_channel_refs,
            )
            if event.invocation_id is None:
                return  # fire-and-forget: nobody waits for an answer
            frame = self._session.answer(event.invocation_id, event.function_id, result=result, error=error,
                                         traceparent=traceparent or None, generation=event.generation)
            if frame is not None and len(frame) > self._conn.check_above:
                frame = self._answer_within_limit(event, frame, traceparent or None, error)
            if frame is None or not self._conn.is_ready:
                # The engine halted this invocation when the old connection dropped (its caller got
                # invocation_stopped), so nobody wants the answer; but the work was done, and whoever runs the worker
                # should hear that its outcome went nowhere (a retried call may do it again). Counted, rate-limited:
                # one line per result was 7,000 lines in 0.2 s at a shutdown under load.
                self._stale.lost("finished", f"'{event.function_id:.200}' (invocation {event.invocation_id:.80})")
                return
            # With other invocations running, answers finished in the same turn leave in one write.
            await self._conn.send(frame, batch=self._invoking > 1, own=True)
        finally:
            self._invoking -= 1
            if end_span is not None:
                end_span()  # after the answer left: the caller never waits for the span's end and export

    def _refuse_invocation(self, event: InvocationRequested) -> None:
        """``event`` came with :attr:`InitOptions.max_invocations` runs going: answered ``worker_busy`` at once
        (one without an id, which nobody waits for, only counted), its payload let go with it.

        The answer is queued only while the outbound queue has room, else counted as not sent: kept past its bounds
        behind a socket the engine did not read, refusals of an engine's flood grew it without bound (~300 bytes
        each, 41 MB in 30 s)."""
        what = f"a call of '{event.function_id:.200}'"
        if event.invocation_id is None:
            self._busy.lost("no_id", what)
            return
        frame = self._session.answer(event.invocation_id, event.function_id,
                                     error=worker_busy(event.function_id, self._max_invocations),
                                     generation=event.generation)
        self._busy.lost("refused" if frame is not None and self._conn.send_if_room(frame) else "unsent", what)

    def _log_skipped(self, counts: Mapping[str, int], latest: str | None) -> None:
        """The :class:`LossLog` warning of the engine's frames skipped, or answers to them not sent, past the burst of
        lines (each is also told to the engine where it waits for an answer)."""
        said = counts_said(counts, (("skipped", "frame(s) from the engine skipped"),
                                    ("answer", "answer(s) to it over its size limit not sent")))
        log.warning("%s since the last warning, past %d lines per %g s%s", said, _SKIP_LOG_BURST,
                    _BUSY_LOG_INTERVAL_S, latest_tail(latest))

    def _log_stale(self, counts: Mapping[str, int], latest: str | None) -> None:
        """The :class:`LossLog` warning of answers dropped because the connection their request came on is gone."""
        said = counts_said(counts, (("finished", "result(s) of handlers that finished after it was lost"),
                                    ("queued", "answer(s) still queued when it was lost")))
        log.warning("Dropped since the last warning: %s. The engine connection they came on is gone, so their callers "
                    "were told the invocations stopped (or, the engine itself gone, lost the calls); the work was "
                    "done and a retried call may do it again%s", said, latest_tail(latest))

    def _log_busy(self, counts: Mapping[str, int], latest: str | None) -> None:
        """The :class:`LossLog` warning of invocations refused past ``max_invocations``."""
        kinds = (("refused", "call(s) answered worker_busy"),
                 ("unsent", "call(s) refused whose answer could not be queued (the engine takes this worker's "
                            "frames slower than it sends its own; their callers wait for their timeout)"),
                 ("no_id", "call(s) without an invocation id dropped"),
                 ("trigger_refused", "trigger registration(s) answered worker_busy"),
                 ("trigger_unsent", "trigger registration(s) refused whose answer could not be queued"))
        log.warning("Worker busy (max_invocations=%d running at once): %s since the last warning, not run%s",
                    self._max_invocations, counts_said(counts, kinds), latest_tail(latest))

    def _answer_within_limit(self, event: InvocationRequested, frame: str, traceparent: str | None,
                             error: Any = None) -> str | None:
        """``frame`` (the answer to ``event``), or an error answer in its place when it is over the engine's message
        size limit: sent, the engine would close the connection with 1009 and every call on it would fail."""
        size = self._conn.oversize(frame)
        limit = self._conn.max_message_size
        if size is None or limit is None or event.invocation_id is None:
            return frame
        if error is not None:
            # the handler failed: its error, cut to fit, still says so (a queue counts result_not_sent as done)
            log.warning("The error of '%s' (invocation %s) is %d bytes as a message, over the engine's limit of %d "
                        "bytes: its caller gets it cut", event.function_id, event.invocation_id, size, limit)
            code = error.get("code") if isinstance(error, dict) else None
            message = str(error.get("message") if isinstance(error, dict) else error)
            keep = min(10_000, limit // 8)  # (JSON may write a character as 6 bytes, its escape)
            cut = {"code": code if isinstance(code, str) and len(code) <= 200 else "invocation_failed",
                   "message": f"{message[:keep]}… (cut: its message was over the engine's limit)"}
            answer = self._session.answer(event.invocation_id, event.function_id, error=cut, traceparent=traceparent,
                                          generation=event.generation)
            if answer is not None and self._conn.oversize(answer) is not None:
                answer = self._session.answer(event.invocation_id, event.function_id,
                                              error={"code": cut["code"], "message": "(cut: over the engine's limit)"},
                                              traceparent=traceparent, generation=event.generation)
            return answer
        log.warning("The result of '%s' (invocation %s) is %d bytes as a message, over the engine's limit of %d "
                    "bytes: its caller gets a result_not_sent error instead", event.function_id,
                    event.invocation_id, size, limit)
        return self._session.answer(event.invocation_id, event.function_id,
                                    error=result_too_large(event.function_id, size, limit), traceparent=traceparent,
                                    generation=event.generation)

    def _refuse_oversized(self, function_id: str, frame: str) -> None:
        """Raise :func:`~iii.protocol.client.message_too_large` when ``frame`` is over the engine's message size
        limit (callers check ``len(frame) > check_above`` first, so most frames cost one comparison)."""
        size = self._conn.oversize(frame)
        limit = self._conn.max_message_size
        if size is not None and limit is not None:
            raise message_too_large(function_id, size, limit)

    async def _register_owned_trigger(self, event: TriggerRequested,
                                      binding: Coroutine[Any, Any, dict[str, str] | None]) -> None:
        try:
            error = await binding
            frame = self._session.trigger_registered(event, error)
            if frame is not None and len(frame) > self._conn.check_above:
                frame = self._trigger_answer_within_limit(event, frame, error)
            if frame is not None and self._conn.is_ready:
                await self._conn.send(frame, own=True)
        finally:
            if self._owning_waiting and not self._closed:  # the next one waiting takes this one's place
                self._bridge.spawn(self._register_owned_trigger(*self._owning_waiting.popleft()))
            else:
                self._owning -= 1

    def _refuse_trigger(self, event: TriggerRequested) -> None:
        """``event`` came with :attr:`InitOptions.max_invocations` trigger registrations under way (their hooks
        running or their answers waiting for the engine to read) and :data:`TRIGGERS_WAITING_MAX` more waiting their
        turn: refused ``worker_busy`` at once, the answer queued only while the outbound queue has room.

        Why a turn and a bound: each started a task of its own, and an engine's flood for a slow hook held 100,000
        tasks (+490 MB) and made the shutdown wait for them; refused past ``max_invocations`` alone, a trigger is
        parked by the engine until its type is registered again, which a reconnect's replay of a type with many
        triggers and a slow hook could reach."""
        what = f"trigger {event.trigger_id:.200} of type '{event.trigger_type:.200}'"
        error = {"code": WORKER_BUSY,
                 "message": f"{what} was not registered: this worker has {self._max_invocations:,} trigger "
                            f"registrations under way (max_invocations) and {TRIGGERS_WAITING_MAX:,} waiting; try "
                            "again later"}
        frame = self._session.trigger_registered(event, error)
        self._busy.lost("trigger_refused" if frame is not None and self._conn.send_if_room(frame)
                        else "trigger_unsent", what)

    def _trigger_answer_within_limit(self, event: TriggerRequested, frame: str, error: Any) -> str | None:
        """``frame`` (the answer to ``event``), or, over the engine's size limit, an answer with a short error in its
        place (a refusal's message may be any size); ``None`` (logged) when even that is over it."""
        size, limit = self._conn.oversize(frame), self._conn.max_message_size
        if size is None or limit is None:
            return frame
        answer = None
        if error is not None:  # (an accepted one's answer holds only the engine's own ids: nothing to shorten)
            code = error.get("code") if isinstance(error, dict) else None
            answer = self._session.trigger_registered(event, {
                "code": code if isinstance(code, str) and len(code) <= 100 else "trigger_registration_failed",
                "message": f"the trigger type owner's refusal was {size:,} bytes as a message, over the engine's "
                           f"limit of {limit:,} bytes (max_message_size)"})
        if answer is not None and self._conn.oversize(answer) is None:
            log.warning("The answer to the registration of trigger %s (type %s) is %d bytes, over the engine's limit "
                        "of %d bytes: a short error was sent in its place", event.trigger_id, event.trigger_type,
                        size, limit)
            return answer
        if self._skipped.take("answer", f"the answer to the registration of trigger {event.trigger_id:.200}"):
            # (an ERROR each up to a burst: an engine sending thousands of ids over its own limit wrote one each)
            log.error("The answer to the registration of trigger %.200r (type %.100r) is %d bytes, over the engine's "
                      "limit of %d bytes: not sent", event.trigger_id, event.trigger_type, size, limit)
        return None

    # ---------------------------------------------------------------- registrations

    def register_function(
        self,
        func_or_id: RegisterFunctionInput | dict[str, Any] | str,
        handler_or_invocation: RemoteFunctionHandler | Callable[[Any], Any] | HttpInvocationConfig,
        *,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        request_format: RegisterFunctionFormat | dict[str, Any] | None = None,
        response_format: RegisterFunctionFormat | dict[str, Any] | None = None,
    ) -> FunctionRef:
        """Register a function; the handler (sync or async) gets the raw JSON payload.

        With the string-id form, missing ``request_format`` / ``response_format`` come from type hints.

        Example:
            >>> # ref = iii.register_function("greet", lambda data: f"hi {data['name']}")
            >>> # ref.unregister()
        """
        self._refuse_if_closed()
        if isinstance(func_or_id, str):
            if callable(handler_or_invocation):
                from .format_utils import extract_request_format, extract_response_format

                if request_format is None:
                    request_format = extract_request_format(handler_or_invocation)
                if response_format is None:
                    response_format = extract_response_format(handler_or_invocation)
            func = RegisterFunctionInput(
                id=func_or_id,
                description=description,
                metadata=metadata,
                request_format=request_format,
                response_format=response_format,
            )
        else:
            func = _as_model(func_or_id, RegisterFunctionInput, "register_function's first argument", "an id, ")

        if not func.id or not func.id.strip():
            raise ValueError("id is required")

        invocation: HttpInvocationConfig | None = None
        handler: Callable[[Any], Any] | None = None
        if isinstance(handler_or_invocation, HttpInvocationConfig):
            invocation = handler_or_invocation
        elif callable(handler_or_invocation):
            handler = handler_or_invocation
        else:
            actual = type(handler_or_invocation).__name__
            raise TypeError(f"handler_or_invocation must be callable or HttpInvocationConfig, got {actual}")

        message = RegisterFunctionMessage(
            id=func.id,
            description=func.description,
            request_format=format_dict(func.request_format),
            response_format=format_dict(func.response_format),
            metadata=func.metadata,
            invocation=invocation,
        )
        function_id = func.id
        for name in ("metadata", "request_format", "response_format"):
            _refuse_unlisted(getattr(message, name), f"register_function({function_id!r}): {name}", "function")
        owner = object()
        with self._registering:
            if self._session.has_function(function_id):
                raise ValueError(f"function id '{function_id}' already registered")
            if handler is not None:
                self._runner.add(function_id, handler)
            try:
                frame = self._session.register_function(message, invokable=handler is not None,
                                                        check=self._registration_check(f"function {function_id!r}"))
            except ValueError:
                self._runner.remove(function_id)
                raise
            self._function_owners[function_id] = owner
            # Handed to the loop under the lock: an unregister on another thread cannot overtake this frame.
            self._register(frame)

        def unregister() -> None:
            with self._registering:
                current = self._function_owners.get(function_id)
                if current is not owner and self._session.has_function(function_id):
                    # Ours: the reference SDK removed the newer registration of the id here.
                    log.debug("FunctionRef(%r).unregister(): the id was registered again since; the newer "
                              "registration stays", function_id)
                    return
                self._function_owners.pop(function_id, None)
                self._runner.remove(function_id)
                self._register(self._session.unregister_function(function_id))

        return FunctionRef(id=function_id, unregister=unregister)

    def register_trigger(self, trigger: RegisterTriggerInput | dict[str, Any]) -> Trigger:
        """Bind a trigger to a function; returns a handle whose ``unregister()`` removes it.

        Example:
            >>> # t = iii.register_trigger({"type": "cron", "function_id": "tick", "config": {"expression": "* * *"}})
        """
        self._refuse_if_closed()
        trigger = _as_model(trigger, RegisterTriggerInput, "register_trigger's trigger")
        trigger_type = trigger.type
        _refuse_unlisted(trigger.config, f"register_trigger({trigger_type!r} on {trigger.function_id!r}): config",
                         "trigger")
        trigger_id, frame = self._session.register_trigger(
            trigger_type, trigger.function_id, trigger.config,
            self._registration_check(f"the trigger of type {trigger_type!r} on function {trigger.function_id!r}"))
        self._register(frame)

        def unregister() -> None:
            self._register(self._session.unregister_trigger(trigger_id, trigger_type))

        return Trigger(unregister)

    def register_trigger_type(
        self, trigger_type: RegisterTriggerTypeInput | dict[str, Any], handler: TriggerHandler[Any]
    ) -> None:
        """Own a custom trigger type: ``handler`` hears about every trigger bound to it.

        Example:
            >>> # iii.register_trigger_type({"id": "webhook", "description": "Webhooks"}, WebhookHandler())
        """
        self._refuse_if_closed()
        trigger_type = _as_model(trigger_type, RegisterTriggerTypeInput, "register_trigger_type's trigger_type")
        missing = [hook for hook in ("register_trigger", "unregister_trigger")
                   if not callable(getattr(handler, hook, None))]
        if missing:  # (else refused only when the engine binds a trigger, with an AttributeError in a log line)
            raise TypeError(f"register_trigger_type({trigger_type.id!r}): {type(handler).__name__} is not a "
                            f"TriggerHandler: no callable {', '.join(missing)}")
        # In place before its frame can go out (the engine may bind a trigger at once); a refused update puts the
        # one in place back: the type stays as it was, description and handler.
        previous = self._trigger_host.get(trigger_type.id)
        self._trigger_host.add(trigger_type.id, handler)
        try:
            frame = self._session.register_trigger_type(trigger_type.id, trigger_type.description,
                                                        self._registration_check(f"trigger type {trigger_type.id!r}"))
        except ValueError:
            if previous is None:
                self._trigger_host.remove(trigger_type.id)
            else:
                self._trigger_host.add(trigger_type.id, previous)
            raise
        self._register(frame)

    def unregister_trigger_type(self, trigger_type: RegisterTriggerTypeInput | dict[str, Any]) -> None:
        """Stop owning a trigger type (the production engine ignores the message; ours removes the type).

        Example:
            >>> # iii.unregister_trigger_type({"id": "webhook"})
        """
        if isinstance(trigger_type, dict):  # only its id is read: {"id": ...} without a description is enough
            type_id = trigger_type["id"]
        else:
            type_id = _as_model(trigger_type, RegisterTriggerTypeInput, "unregister_trigger_type's trigger_type").id
        released = self._trigger_host.release(type_id)
        self._register(self._session.unregister_trigger_type(type_id))
        if released is not None:
            if self._closed:
                released.close()
            else:  # the handler unbinds what it holds: the engine's unregistertrigger frames come too late for it
                self._bridge.soon(self._bridge.spawn, released)

    def register_service(self, service: RegisterServiceInput | dict[str, Any]) -> None:
        """Register a service grouping (``name`` defaults to ``id``).

        Example:
            >>> # iii.register_service({"id": "payments", "description": "Payment processing"})
        """
        self._refuse_if_closed()
        service = _as_model(service, RegisterServiceInput, "register_service's service")
        self._register(self._session.register_service(RegisterServiceMessage(
            id=service.id,
            name=service.name or service.id,
            description=service.description,
            parent_service_id=service.parent_service_id,
        ), self._registration_check(f"service {service.id!r}")))

    # ---------------------------------------------------------------- calls

    def trigger(self, request: dict[str, Any] | TriggerRequest) -> Any:
        """Call a function and wait for its result (``None`` for void, the receipt dict for enqueue).

        The trace context and baggage current in the calling thread travel with the call. A void call returns once
        its frame is written or queued; while the engine is unreachable and the outbound queue is full it waits for
        room, at most its ``timeout_ms`` (30 s without one), then raises
        :class:`~iii.errors.OutboundQueueFullError` (never sent).

        Example:
            >>> # iii.trigger({"function_id": "greet", "payload": {"name": "Ada"}})
        """
        function_id, invocation_id, frame, timeout = self._prepare_call(request)
        if invocation_id is None:  # void: nothing to wait for but the write
            self._run_on_loop(self._send_void(frame, function_id, timeout_ms=timeout))
            return None
        waiter = ThreadWaiter()
        bridge = self._bridge
        bridge.hold(waiter)  # a loop thread dying mid-call fails the wait at once (LoopStoppedError)
        try:
            self._start_from_outside(bridge.post_blocking, invocation_id, function_id, frame, timeout, waiter)
            with handler_blocked():  # a sync handler waiting here frees its slot (its answer may need one)
                return waiter.wait(timeout / 1000.0 + 1.0, lambda: bridge.alive)
        finally:
            bridge.release(waiter)

    def _call_expired(self, invocation_id: str) -> str | BaseException | None:
        """A call timed out: the session forgets it (its frame, still queued, is then dropped unsent); what its
        ``TimeoutError`` adds when it was never sent. Plain, the message could not tell such a call from one that may
        have run (the reference's type and message prefix are kept). One waiting to be sent again after a reconnect
        (:mod:`iii.reconnect_retry`) fails with the ``function_not_found`` it was answered: it did not run."""
        self._session.forget(invocation_id)
        if self._retry.active:
            not_found = self._retry.expired(invocation_id)
            if not_found is not None:
                return not_found
        if self._conn.is_queued(invocation_id):
            return ("it was never sent (still in the outbound queue, waiting for the engine), so it did not run: "
                    "trying again is safe")
        return None

    def _prepare_call(self, request: dict[str, Any] | TriggerRequest) -> tuple[str, str | None, str, float]:
        """``(function_id, invocation_id, frame, timeout_ms)`` of a call made from outside the client's loop;
        ``timeout_ms`` is the call's own or the client's default, but for a void call only its own (0: none).

        The frame is built on the caller's thread, in the caller's trace context (read here and written into the
        frame, so what travels never depends on how a hop between threads treats context variables); the loop
        then gets one callback, :meth:`_start_call`, and settles the caller's waiter with no hop back.
        """
        function_id, payload, action, timeout_ms = _unpack_request(request)
        tp, bg = self._telemetry.trace.headers()
        if self._closed:  # the private loop may be gone: say why before handing it anything
            raise ShuttingDownError(self._shutdown_cause)
        invocation_id, frame = self._session.new_call(
            function_id, payload, action=action_to_wire(action), traceparent=tp or None, baggage=bg or None
        )
        if len(frame) > self._conn.check_above:
            self._refuse_oversized(function_id, frame)
        if invocation_id is None:
            return function_id, None, frame, timeout_ms or 0.0
        return function_id, invocation_id, frame, timeout_ms or self._timeout_ms

    def _start_call(self, invocation_id: str, function_id: str, frame: str, timeout_ms: float,
                    waiter: Settle) -> None:
        """The loop's half of a call from another thread or loop: track it (with its timeout), write its frame."""
        if self._closed:
            waiter.set_exception(ShuttingDownError(self._shutdown_cause))
            return
        self._session.track_call(invocation_id, function_id)
        self._calls.track(invocation_id, function_id, waiter, timeout_ms=timeout_ms, on_expire=self._call_expired)
        if self._retry.until:
            self._retry.remember(invocation_id, function_id, frame)
        self._conn.send_now(frame, invocation_id)

    def _start_call_parked(self, invocation_id: str, function_id: str, frame: str, timeout_ms: float,
                           waiter: Settle) -> None:
        """:meth:`_start_call` from a thread holding the loop parked (:meth:`LoopBridge.park`): what cannot be done
        without the loop running (a queued write) is handed to it, and a timer it does not know of wakes it."""
        if self._closed:
            waiter.set_exception(ShuttingDownError(self._shutdown_cause))
            return
        self._session.track_call(invocation_id, function_id)
        if self._calls.track(invocation_id, function_id, waiter, timeout_ms=timeout_ms,
                             on_expire=self._call_expired):
            self._bridge.post_parked()  # the loop sleeps until its earliest timer as it knew it
        if self._retry.until:
            self._retry.remember(invocation_id, function_id, frame)
        if not self._conn.write_now(frame):
            self._bridge.post_parked(self._conn.send_soon, frame, invocation_id)

    def _start_from_outside(self, hop: Callable[..., Any], invocation_id: str, function_id: str, frame: str,
                            timeout: float, waiter: Settle) -> None:
        """Start a call made outside the client's loop: from this thread while the loop waits for I/O (parked: no
        hop onto it), else handed to the loop by ``hop``. A closed loop raises here unless :meth:`LoopBridge.hold`
        has already failed ``waiter`` (then the wait reports it)."""
        bridge = self._bridge
        if bridge.park():
            try:
                self._start_call_parked(invocation_id, function_id, frame, timeout, waiter)
            finally:
                bridge.unpark()
            return
        try:
            hop(self._start_call, invocation_id, function_id, frame, timeout, waiter)
        except RuntimeError:
            if not waiter.done():
                raise

    async def _send_void(self, frame: str, function_id: str, once: bool = False, timeout_ms: float = 0.0) -> bool:
        """Send a fire-and-forget call's frame, written or queued (``once``: written on the socket up now, or False:
        :meth:`trigger_once_async`); ``ShuttingDownError`` when shutdown discarded it (a send waiting for room in a
        full queue is ended by the shutdown, and would otherwise look sent); ``OutboundQueueFullError`` when the
        queue stayed full for the call's ``timeout_ms`` (0: none), or the connection's own bound if shorter;
        :func:`~iii.protocol.client.message_too_large` when it is over the limit of the socket it was to be written
        to (checked when it was built against the socket up then, which may since have been replaced)."""
        try:
            written = await (self._conn.send_on_this_connection(frame) if once
                             else self._conn.send(frame, wait=timeout_ms / 1000 if timeout_ms else None))
        except MessageTooLargeError as exc:
            raise message_too_large(function_id, exc.size, exc.limit) from None
        except ConnectionLostError as exc:
            if type(exc) is not ConnectionLostError:  # (OutboundQueueFullError: its message is its own)
                raise
            # Its sender hears nothing later: the error names the call, as a keyed call's does.
            raise ConnectionLostError(exc.code, f"The call to '{function_id}' was {exc.message}") from None
        if not written and self._closed:
            raise ShuttingDownError(self._shutdown_cause)
        return written

    async def trigger_once_async(self, request: dict[str, Any] | TriggerRequest) -> bool:
        """Fire and forget, at most once: send a void call on the connection up now and never on a later one; True
        once it is written to that connection's socket. Ours: the reference SDK has no such call.

        False means never sent, so safe to retry: no connection was up, or it dropped before the call's turn (it
        waits behind the frames queued before it, unwritten until the socket takes it at once, so a socket dropped
        for ``send_timeout`` does not take it along). :meth:`trigger` with a void action would instead keep it
        for the next connection and send it there, however much later. Usable from any loop.

        True means handed to the operating system's socket buffer, not received: the engine may never read it. A
        connection that dies with it in flight loses it, as any fire-and-forget message; so does one dropped for
        ``send_timeout`` (an engine that stopped reading): every call said True while the engine was not reading,
        as many as the kernel's buffer holds (megabytes), is lost with it. True never hides a duplicate, and False
        never hides a call that ran. A caller cancelled while the call waits its turn takes it back, unless it was
        written meanwhile.

        The request is :meth:`trigger`'s; its ``action`` must be ``None`` or :meth:`TriggerAction.Void` and its
        ``timeout_ms`` is not used. Raises :class:`~iii.errors.ConnectionLostError` (never sent) when the outbound
        queue is full, :class:`~iii.errors.InvocationError` ``message_too_large`` (never sent) when the call is over
        the engine's message size limit, ``ValueError`` for another action, and
        :class:`~iii.errors.ShuttingDownError` once the client is shut down.

        Example:
            >>> # if not await iii.trigger_once_async({"function_id": "audit::log", "payload": {"event": "login"}}):
            >>> #     ...  # not sent: the engine is unreachable right now; retrying cannot log it twice
        """
        function_id, payload, action, _ = _unpack_request(request)
        if action is not None and action_to_wire(action) != {"type": "void"}:
            raise ValueError(f"trigger_once_async sends a void call: its action must be None or TriggerAction.Void(), "
                             f"got {action!r:.100}")
        frame = self._prepare_call({"function_id": function_id, "payload": payload, "action": _VOID})[2]
        # on the client's loop, where the connection changes: read from here, its state may be out of date
        return await self._bridge.run_async(self._send_void(frame, function_id, once=True))

    def _drop_call(self, invocation_id: str) -> None:
        """The caller stopped waiting (cancelled): forget the call; a late result is ignored."""
        self._calls.discard(invocation_id)
        self._session.forget(invocation_id)
        self._retry.forget(invocation_id)

    async def trigger_async(self, request: dict[str, Any] | TriggerRequest) -> Any:
        """Async form of :meth:`trigger`; works from any event loop.

        Example:
            >>> # await iii.trigger_async({"function_id": "notify", "payload": {}, "action": TriggerAction.Void()})
        """
        running = asyncio.get_running_loop()
        if running is self._loop:
            function_id, payload, action, timeout_ms = _unpack_request(request)
            if self._closed:
                raise ShuttingDownError(self._shutdown_cause)
            return await self._call(function_id, payload, action, timeout_ms, self._telemetry.trace.headers())
        function_id, invocation_id, frame, timeout = self._prepare_call(request)
        if invocation_id is None:
            await self._bridge.run_async(self._send_void(frame, function_id, timeout_ms=timeout))
            return None
        future: asyncio.Future[Any] = running.create_future()
        waiter = LoopWaiter(running, future)
        bridge = self._bridge
        # Held: if the client's loop thread ends before answering, the future fails at once (LoopStoppedError)
        # instead of being awaited forever on this, foreign, loop.
        bridge.hold(waiter)
        try:
            self._start_from_outside(self._loop.call_soon_threadsafe, invocation_id, function_id, frame, timeout,
                                     waiter)
            return await future
        except asyncio.CancelledError:
            if bridge.alive:
                self._loop.call_soon_threadsafe(self._drop_call, invocation_id)
            raise
        finally:
            bridge.release(waiter)
            # A failed call's error keeps this frame (its traceback), which kept the future holding the error: a
            # cycle per failed call, freed only by a full collection.
            del future, waiter

    async def _call(
        self,
        function_id: str,
        payload: Any,
        action: Any,
        timeout_ms: float | None = None,
        headers: tuple[str | None, str | None] | None = None,
    ) -> Any:
        """One invocation, on the client's loop; ``headers`` = ``(traceparent, baggage)`` of the caller."""
        if self._closed:
            raise ShuttingDownError(self._shutdown_cause)
        tp, bg = headers if headers is not None else self._telemetry.trace.headers()
        invocation_id, frame = self._session.new_call(
            function_id, payload, action=action_to_wire(action), traceparent=tp or None, baggage=bg or None
        )
        if len(frame) > self._conn.check_above:
            self._refuse_oversized(function_id, frame)
        if invocation_id is None:
            await self._send_void(frame, function_id, timeout_ms=timeout_ms or 0.0)
            return None
        self._session.track_call(invocation_id, function_id)
        timeout = timeout_ms or self._timeout_ms
        future = self._calls.add(invocation_id, function_id, timeout_ms=timeout, on_expire=self._call_expired)
        if self._retry.until:
            self._retry.remember(invocation_id, function_id, frame)
        try:
            # With other calls in flight, frames started in the same turn of the loop leave in one write.
            await self._conn.send(frame, invocation_id, batch=len(self._calls) > 1)
            # An error's traceback keeps this coroutine's locals for as long as its caller keeps the error: 433 calls
            # of 1 MiB refused at a full queue, their errors kept, held 433 MB of frames.
            del frame
            return await future
        finally:
            self._calls.discard(invocation_id)
            self._session.forget(invocation_id)
            if self._retry.active:
                self._retry.forget(invocation_id)
            del future  # (the cycle trigger_async breaks: the error's traceback keeps this frame)

    def list_functions(self) -> list[FunctionInfo]:
        """Every function registered with the engine (``engine::*`` left out).

        Example:
            >>> # [f.function_id for f in iii.list_functions()]
        """
        return self._run_on_loop(self.list_functions_async())

    async def list_functions_async(self) -> list[FunctionInfo]:
        """Async form of :meth:`list_functions`."""
        result = await self.trigger_async({"function_id": "engine::functions::list", "payload": {}})
        return [FunctionInfo(**f) for f in result.get("functions", [])]

    def list_workers(self) -> list[WorkerInfo]:
        """Every worker connected to the engine.

        Example:
            >>> # [w.name for w in iii.list_workers()]
        """
        return self._run_on_loop(self.list_workers_async())

    async def list_workers_async(self) -> list[WorkerInfo]:
        """Async form of :meth:`list_workers`."""
        result = await self.trigger_async({"function_id": "engine::workers::list", "payload": {}})
        return [WorkerInfo(**w) for w in result.get("workers", [])]

    def list_triggers(self, include_internal: bool = False) -> list[TriggerInfo]:
        """Every trigger; ``include_internal`` adds those bound to ``engine::`` functions.

        Example:
            >>> # iii.list_triggers(include_internal=True)
        """
        return self._run_on_loop(self.list_triggers_async(include_internal))

    async def list_triggers_async(self, include_internal: bool = False) -> list[TriggerInfo]:
        """Async form of :meth:`list_triggers`."""
        result = await self.trigger_async(
            {"function_id": "engine::triggers::list", "payload": {"include_internal": include_internal}}
        )
        return [TriggerInfo(**t) for t in result.get("triggers", [])]

    def create_channel(self, buffer_size: int | None = None) -> Channel:
        """Create a channel; pass ``writer_ref`` / ``reader_ref`` (or the ends themselves) in payloads.

        Example:
            >>> # ch = iii.create_channel(); iii.trigger({"function_id": "produce", "payload": {"out": ch.writer}})
        """
        return self._run_on_loop(self.create_channel_async(buffer_size))

    async def create_channel_async(self, buffer_size: int | None = None) -> Channel:
        """Async form of :meth:`create_channel`."""
        result = await self.trigger_async(
            {"function_id": "engine::channels::create", "payload": {"buffer_size": buffer_size}}
        )
        writer_ref = StreamChannelRef(**result["writer"])
        reader_ref = StreamChannelRef(**result["reader"])
        writer, reader = ChannelWriter(self._address, writer_ref), ChannelReader(self._address, reader_ref)
        # stopped by shutdown (HandlerRunner.close), as the ends handlers get in payloads are: a write blocked on a
        # reader that never came waited out the attach deadline (300 s) after shutdown returned
        self._runner.ends.add(writer)
        self._runner.ends.add(reader)
        return Channel(writer=writer, reader=reader, writer_ref=writer_ref, reader_ref=reader_ref)

    # ---------------------------------------------------------------- conveniences

    def on_functions_available(
        self, callback: Callable[[list[FunctionInfo]], Awaitable[None] | None]
    ) -> Callable[[], None]:
        """Call ``callback`` with the full function list whenever the engine's set of ids changes.

        On a thread of the client's callbacks (never its loop), each call in a copy of the context this method was
        called in (ours: the reference runs every callback in the one task of the engine's call, on its loop): the
        callback sees the context variables of the code that subscribed it, and one callback's ``ContextVar.set`` is
        seen by no other callback. The callbacks run one after the other, so one that blocks holds the others' calls
        (only the newest list waits meanwhile). From the start of ``shutdown()`` no callback is called (a list
        still waiting is dropped); the shutdown gives one still running 3 s to return (``CANCEL_WAIT_S``, as for the
        handlers it cancels), then names it in a warning: its thread is a daemon, and the process does not wait for
        it to exit (the reference's callback blocked its loop, and its ``shutdown()`` with it, for as long as it ran).

        An ``async def`` callback (one returning an awaitable) runs on the client's loop, as async handlers do (it
        may await the async API; one that blocks the loop blocks the worker); the callbacks' thread waits for its
        end, so the calls stay one after the other. The reference SDK never awaited it.

        Example:
            >>> # unsubscribe = iii.on_functions_available(lambda fns: print(len(fns)))
        """
        self._refuse_if_closed()
        if not callable(callback):  # (else a TypeError logged at every change, far from this call)
            raise TypeError(f"on_functions_available: the callback must be callable, got {type(callback).__name__}")
        with self._functions_available_lock:
            self._functions_available.add(callback)
            if self._functions_available_trigger is None:
                self._functions_available_trigger = self._subscribe_functions_available()

        def unsubscribe() -> None:
            with self._functions_available_lock:
                self._functions_available_callbacks.pop(callback, None)
                if not self._functions_available_callbacks and self._functions_available_trigger is not None:
                    self._functions_available_trigger.unregister()
                    self._functions_available_trigger = None

        return unsubscribe

    def _subscribe_functions_available(self) -> Trigger:
        """Register the one ``engine::functions-available`` trigger (and, the first time, its function) that runs
        every callback (under ``_functions_available_lock``)."""
        if self._functions_available_function_id is None:
            self._functions_available_function_id = f"iii.on_functions_available.{uuid.uuid4()}"
        function_id = self._functions_available_function_id
        if not self._session.has_function(function_id):

            async def handler(data: dict[str, Any]) -> None:
                self._queue_functions_available([FunctionInfo(**f) for f in data.get("functions", [])])

            self.register_function({"id": function_id}, handler)
        return self.register_trigger({"type": "engine::functions-available", "function_id": function_id,
                                      "config": {}})

    def _queue_functions_available(self, functions: list[FunctionInfo], *, pushed: bool = True) -> None:
        """Hand ``functions`` to the callbacks on a handler thread (a list still waiting is replaced: this one is the
        newer whole set); ``pushed``: the engine sent it (not read back after a reconnect)."""
        if pushed:
            self._functions_available_pushes += 1
        self._functions_available_ids = frozenset(f.function_id for f in functions)
        self._functions_available.push(functions)

    async def _refresh_functions_available(self, generation: int) -> None:
        """After a reconnect: the function list read once and handed to the callbacks if its ids differ from the last
        list they got. Why: a change made while this worker was away was pushed to its old connection, which the
        engine may still have held (a host gone without a close is seen only by keepalive), and the re-registration
        changes nothing the engine compares, so the callbacks kept the old list until some later change. A push
        that comes meanwhile is as new or newer (the engine's frames come in order) and wins."""
        pushes = self._functions_available_pushes
        try:
            listed = await self._call("engine::functions::list", {"include_internal": True}, None, self._own_timeout_ms)
        except (InvocationError, TimeoutError, ShuttingDownError) as exc:
            log.debug("Reading the function list after a reconnect stopped: %s", exc)
            return
        if (self._session.generation != generation or self._closed or self._functions_available_trigger is None
                or pushes != self._functions_available_pushes or not isinstance(listed, dict)):
            return
        try:
            functions = [FunctionInfo(**f) for f in listed.get("functions", [])]
        except (TypeError, ValueError) as exc:  # (an engine's odd answer: the next push says it)
            log.debug("The function list read after a reconnect was not understood: %s", exc)
            return
        if frozenset(f.function_id for f in functions) != self._functions_available_ids:
            self._queue_functions_available(functions, pushed=False)

    def on_registrations_ready(self, callback: Callable[[], Awaitable[None] | None]) -> Callable[[], None]:
        """Call ``callback()`` each time a connection is up and this worker's registrations are in place on the
        engine; returns the callable that removes it. Ours: the reference SDK has no such hook.

        When it runs: once the engine has handled the replay of every registration on a new connection (one
        round trip after it, an ``engine::workers::list`` filtered to no worker, made only while a callback is
        registered), and after a
        reconnect once the check for registrations the old connection's cleanup deleted (docs/protocol.md,
        production behaviour T7) has re-sent them and the engine has handled them, or has given up. A worker that
        subscribes to events (a ``subscribe`` trigger, say) may re-read the state it follows from here on without
        missing an event; what was published while it was away never reaches it. Only connections that become ready
        after this call count.

        On a thread of the client's callbacks (a daemon, as for :meth:`on_functions_available`), never the client's
        loop: it may block or call the sync API (``list_functions``, ``trigger``) without stopping the worker, and an
        exception is logged; each call runs in a copy of the context this method was called in; an ``async def``
        one runs on the client's loop, and ``shutdown()`` treats a running one as it does there. The callbacks run
        one call at a time;
        connections that became ready meanwhile add one more call, not one each. By the time it runs the connection
        may have dropped again: a later connection calls it again.

        Example:
            >>> # remove = iii.on_registrations_ready(lambda: print("in place"))
            >>> # remove()
        """
        self._refuse_if_closed()
        if not callable(callback):
            raise TypeError(f"on_registrations_ready: the callback must be callable, got {type(callback).__name__}")
        self._registrations_ready.add(callback)

        def remove() -> None:
            self._registrations_ready.callbacks.pop(callback, None)

        return remove

    def create_stream(self, stream_name: str, stream: IStream[Any]) -> None:
        """Serve stream ``stream_name`` from ``stream``: get, set, delete, list, list_groups and update.

        ``update`` falls back to get → apply ops → set under a per-item lock when the backend's ``update``
        returns ``None`` or raises ``NotImplementedError`` (docs/protocol.md#sdk-improvements S7, S8; see
        :mod:`iii.stream_glue`).

        Example:
            >>> # iii.create_stream("todos", MemoryStream())
        """
        # an iii_streams store refuses a group over the engine's message size before building its answer
        for function_id, handler in stream_functions(stream_name, stream,
                                                     max_bytes=lambda: self._conn.max_message_size).items():
            self.register_function({"id": function_id}, handler)


class TriggerAction:
    """Factories for the ``action`` of :meth:`III.trigger`.

    Example:
        >>> TriggerAction.Enqueue(queue="jobs").queue
        'jobs'
        >>> TriggerAction.Void().type
        'void'
    """

    @staticmethod
    def Enqueue(*, queue: str) -> TriggerActionEnqueue:
        """Route the call through queue ``queue``; ``trigger`` returns ``{"messageReceiptId": ...}``."""
        return TriggerActionEnqueue(queue=queue)

    @staticmethod
    def Void() -> TriggerActionVoid:
        """Fire and forget; ``trigger`` returns ``None``."""
        return TriggerActionVoid()


def register_worker(address: str, options: InitOptions | None = None) -> III:
    """Create a client and wait (at most 30 s) until it is connected.

    ``ValueError`` at once for a URL that cannot work (scheme not ws/wss, no host, port outside 1-65535).
    ``ConnectionError`` ("cannot reach the engine at …") when no connection came within 30 s, or sooner when
    ``ReconnectionConfig.max_retries`` ran out; ``ConnectionError`` ("ws://… did not answer as an iii engine: HTTP
    426 on the WebSocket upgrade …") at the first answer with an HTTP status no engine gives (a 5xx or 429 is
    retried), or after 3 answers in a row that are HTTP 404 (a proxy's before its route to the engine is up) or not
    HTTP at all (a connection closed before any answer is retried: a forwarder in front of an engine not up yet);
    that client is shut down. Once connected, a lost engine is
    retried as configured (forever by default).

    Example:
        >>> # iii = register_worker("ws://localhost:49134", InitOptions(worker_name="billing"))
    """
    client = III(address, options)
    try:
        client._wait_until_connected()
    except BaseException:
        client.shutdown()
        raise
    return client


# ---------------------------------------------------------------- helpers


_LONGEST_TIMEOUT_MS: Final = (threading.TIMEOUT_MAX - 1.0) * 1000.0
"""Longer timeouts wait this long (about 292 years): a thread's wait and the loop's clock take no more, and a huge
int (10**400) has no float at all."""


def _checked_count(value: Any, name: str) -> int:
    """``value`` as a count > 0; anything else raises ValueError naming ``name``.

    Example:
        >>> _checked_count(0, "max_invocations")
        Traceback (most recent call last):
        ...
        ValueError: max_invocations must be a whole number > 0, got 0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a whole number > 0, got {value!r:.100}")
    return int(value)


def _checked_timeout_ms(value: Any, name: str) -> float:
    """``value`` as a call's timeout in milliseconds: a finite number >= 0, one longer than
    :data:`_LONGEST_TIMEOUT_MS` cut to it; anything else raises ValueError naming ``name`` (a NaN would never match
    its own timer, a negative one expires at once).

    Example:
        >>> _checked_timeout_ms(-1, "timeout_ms")
        Traceback (most recent call last):
        ...
        ValueError: timeout_ms must be a finite number of milliseconds >= 0, got -1
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a finite number of milliseconds >= 0, got {value!r}")
    if not isinstance(value, (int, float)):  # a Fraction, a NumPy number
        try:
            value = float(value)
        except OverflowError:  # beyond any float: cut below when positive, refused when negative
            value = _LONGEST_TIMEOUT_MS if value > 0 else -math.inf
    if not 0 <= value < math.inf:
        raise ValueError(f"{name} must be a finite number of milliseconds >= 0, got {value!r}")
    return _LONGEST_TIMEOUT_MS if value > _LONGEST_TIMEOUT_MS else value


def _checked_seconds(value: Any, name: str) -> float:
    """``value`` as a wait in seconds, checked as a call's timeout is (:func:`_checked_timeout_ms`: a huge int,
    10**400, has no float and failed with OverflowError); anything else raises ValueError naming ``name``.

    Example:
        >>> _checked_seconds("0.25", "close_timeout")
        Traceback (most recent call last):
        ...
        ValueError: close_timeout must be a finite number of seconds >= 0, got '0.25'
    """
    try:
        return min(_checked_timeout_ms(value, name), threading.TIMEOUT_MAX)  # (that bound is in milliseconds)
    except ValueError:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r:.100}") from None


def _checked_close_timeout(close_timeout: float | None) -> float | None:
    """:meth:`III.shutdown`'s and :meth:`III.shutdown_async`'s ``close_timeout``, checked (``None``: the default)."""
    return None if close_timeout is None else _checked_seconds(close_timeout, "close_timeout")


class _TelemetrySink:
    """A client's telemetry sink (:meth:`III.send_telemetry`) that also tells the exporters the engine's message
    size limit (:attr:`max_message_size`, ``None`` when it named none), so they split their frames under it."""

    __slots__ = ("_conn", "_send")

    def __init__(self, send: Callable[[bytes], None], conn: Connection) -> None:
        self._send = send
        self._conn = conn

    def __call__(self, frame: bytes) -> None:
        self._send(frame)

    @property
    def max_message_size(self) -> int | None:
        """The engine's message size limit in bytes, from the current (or last) connection."""
        return self._conn.max_message_size


class _RegistrationFrame(str):
    """A registration change frame (function, trigger, trigger type, service) handed to the connection: marked so
    that, still queued when a new socket opens, it can be told apart and dropped (the replay supersedes it)."""

    __slots__ = ()


_ANSWER_PREFIXES: Final = ('{"type":"invocationresult"', '{"type":"triggerregistrationresult"')
_ANSWER_PREFIXES_BYTES: Final = tuple(prefix.encode() for prefix in _ANSWER_PREFIXES)


def _is_answer(frame: Frame) -> bool:
    """Whether ``frame`` answers one of the engine's requests (an invocation's result, a trigger registration's),
    as :mod:`iii.protocol.frames` writes them.

    Example:
        >>> from iii.protocol import frames
        >>> _is_answer(frames.invocation_result("i1", "f", result=1)), _is_answer('{"type":"invokefunction"}')
        (True, False)
    """
    if isinstance(frame, str):
        return frame.startswith(_ANSWER_PREFIXES)
    return bytes(frame[:64]).startswith(_ANSWER_PREFIXES_BYTES)  # (the head only: a frame may be megabytes)


def _is_registration(frame: Frame) -> bool:
    """Whether ``frame`` was queued as a :class:`_RegistrationFrame`.

    Example:
        >>> _is_registration(_RegistrationFrame('{"type":"unregistertrigger","id":"t1"}')), _is_registration("{}")
        (True, False)
    """
    return type(frame) is _RegistrationFrame


def _as_model(value: Any, model: type[M], what: str, also: str = "") -> M:
    """``value`` as ``model``: an instance as it is, a dict validated into one; anything else a ``TypeError`` naming
    ``what`` (``None`` or a string failed with "'NoneType' object has no attribute 'id'").

    Example:
        >>> _as_model(None, RegisterServiceInput, "register_service's service")
        Traceback (most recent call last):
        ...
        TypeError: register_service's service must be a RegisterServiceInput or a dict, got NoneType
    """
    if isinstance(value, model):
        return value
    if isinstance(value, dict):
        return model(**value)
    raise TypeError(f"{what} must be {also}a {model.__name__} or a dict, got {type(value).__name__}")


_TRIGGER_KEYS: frozenset[str] = frozenset(TriggerRequest.model_fields)


def _request_keys_problem(request: dict[Any, Any]) -> str:
    """What is wrong with the keys of a trigger request given as a dict: a key it lacks or one it does not know (a
    misspelt ``"payload"`` was dropped without a word, and the function ran with a ``None`` payload).

    Example:
        >>> _request_keys_problem({"function_id": "f", "data": 1})
        "a trigger request has no key 'data' (its keys: function_id, payload, action, timeout_ms)"
        >>> _request_keys_problem({"payload": 1})
        "a trigger request needs 'function_id' (its keys: function_id, payload, action, timeout_ms)"
    """
    known = ", ".join(TriggerRequest.model_fields)
    unknown = [key for key in request if key not in _TRIGGER_KEYS]
    if unknown:
        return f"a trigger request has no key {unknown[0]!r:.100} (its keys: {known})"
    return f"a trigger request needs 'function_id' (its keys: {known})"


def _unpack_request(request: dict[str, Any] | TriggerRequest) -> tuple[str, Any, Any, float | None]:
    """``(function_id, payload, action, timeout_ms)`` of a trigger request in either form; ``timeout_ms`` (``None``:
    the client's default) is checked by :func:`_checked_timeout_ms`.

    Example:
        >>> _unpack_request({"function_id": "f", "timeout_ms": float("nan")})
        Traceback (most recent call last):
        ...
        ValueError: timeout_ms must be a finite number of milliseconds >= 0, got nan
        >>> _unpack_request({"function_id": "f", "timeout_ms": 10**400})[3] == _LONGEST_TIMEOUT_MS
        True
        >>> _unpack_request({"function_id": None})
        Traceback (most recent call last):
        ...
        TypeError: function_id must be a string, got None
    """
    if isinstance(request, TriggerRequest):
        function_id, payload, action, timeout_ms = (request.function_id, request.payload, request.action,
                                                     request.timeout_ms)
    elif isinstance(request, dict):
        if "function_id" not in request or not _TRIGGER_KEYS.issuperset(request):
            raise TypeError(_request_keys_problem(request))
        function_id, payload, action = request["function_id"], request.get("payload"), request.get("action")
        timeout_ms = request.get("timeout_ms")
    else:  # None or a list failed with "'NoneType' object is not subscriptable"
        raise TypeError(f"a trigger request is a dict or a TriggerRequest, got {type(request).__name__}")
    if not isinstance(function_id, str):
        # Sent, a None waited out the whole timeout (the engine answers nothing to it), an int came back as
        # invalid_message.
        raise TypeError(f"function_id must be a string, got {function_id!r:.100}")
    if timeout_ms is None:
        return function_id, payload, action, None
    return function_id, payload, action, _checked_timeout_ms(timeout_ms, "timeout_ms")


