"""Invocation routing (docs/protocol.md#messages.6, docs/protocol.md#engine-improvements E6/E7).

The hot path works on plain dicts: a worker's ``invokefunction`` is looked up, stamped with
``_caller_worker_id`` and forwarded to the owner as one text frame; the owner's ``invocationresult`` is matched
against the pending table and forwarded to the caller. Built-in functions run as tasks.

Example (engine-internal call of a built-in):
    >>> import asyncio
    >>> from iii_engine.registry import FunctionEntry, Registry
    >>> from iii_engine.modules.base import BuiltinFunction
    >>> async def demo() -> object:
    ...     reg = Registry()
    ...     async def echo(data: object, ctx: object) -> object:
    ...         return data
    ...     reg.add_function(FunctionEntry("echo", builtin=BuiltinFunction("echo", echo)))
    ...     return await Invocations(reg, {}).call("echo", {"x": 1})
    >>> asyncio.run(demo())
    {'x': 1}
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import traceback
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.loss_log import LossLog, latest_tail
from iii.protocol.client import WORKER_BUSY
from iii.protocol.codec import Encoded, clip, is_uuid
from iii.protocol.ids import InvocationIds, new_invocation_id
from iii.protocol.worker_session import REPLY_REASON_CLIP, clip_text
from iii.wire import loads

from .held_voids import HeldVoids
from .limits import (
    CALL_CHARGE,
    FIRE_LIMIT,
    SKIP_LOG_INTERVAL_S,
    TOO_MANY_CALLS,
    CallCharge,
    FiredCalls,
    HeldTasks,
    WorkerCalls,
)
from .modules.base import (
    UNWRITABLE,
    CallNotSent,
    CallUnwritable,
    EncodedResult,
    EngineError,
    FiredSlots,
    InvocationContext,
    InvocationObserver,
    NamedQueues,
    UnwritableBody,
)
from .registry import FunctionEntry, Registry
from .workers import WorkerConnection, frame_bytes

log = logging.getLogger(__name__)

FIRED_BUSY_WAITS_MS = (100, 200, 400, 800, 1600, 3200)
"""Waits before asking again while a trigger-fired call's worker refuses it for being busy (each a random 50-100 % of
this, cut short when the worker answers another call): up to 6.3 s in all, then the call is counted lost
(:attr:`Invocations.busy_fired`) in a rate-limited warning."""

_BUSY_BUDGET_S = sum(FIRED_BUSY_WAITS_MS) / 1000

CALLER_KEY = "_caller_worker_id"
__all__ = ["CALLER_KEY", "InvocationIds", "Invocations", "Pending", "Started", "error_body", "error_of",
           "is_uuid", "new_invocation_id", "not_found"]


def error_body(code: str, message: str) -> dict[str, str]:
    """An ``ErrorBody``."""
    return {"code": code, "message": message}


def not_found(function_id: str) -> dict[str, str]:
    """The engine's ``function_not_found`` body (no quotes around the id, docs/protocol.md#error-codes)."""
    return error_body("function_not_found", f"Function {function_id} not found")


def _cancelled_itself() -> bool:
    """Whether the running task is being cancelled, as opposed to a CancelledError out of something it awaited
    that someone else cancelled (an inner future or task). Why: the second ended a worker's built-in call or
    enqueue with no answer at all (and its id left in the worker's in-flight set); it is a failure to report."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


HELD_BY_REFRESH_S = 1.0
"""How long the functions holding a worker's calls, as its ``too_many_calls`` refusals name them, are reused."""

CALLEE_LEFT = "its callee's worker disconnected before answering; the call may have run"
#: the call's frame never left the engine for its callee (it waited for room in the callee's queue): a retry is safe
CALLEE_LEFT_UNSENT = "its callee's worker disconnected before the call was sent to it; the call did not run"
CALLER_LEFT = "its caller disconnected"
ENGINE_STOPPING = "the engine is stopping"


def stopped(function_id: str, why: str) -> dict[str, str]:
    """The ``invocation_stopped`` body of a call of ``function_id`` ended unanswered, saying ``why``.

    Why say it: a bare "Invocation stopped" named neither the function nor the cause; a caller with several calls
    out could not tell which callee had died. The code stays as the wire has it.

    Example:
        >>> stopped("orders::place", ENGINE_STOPPING)
        {'code': 'invocation_stopped', 'message': 'Invocation of orders::place stopped: the engine is stopping'}
    """
    return error_body("invocation_stopped", f"Invocation of {function_id} stopped: {why}")


def error_of(error: Any, kind: type[EngineError] = EngineError) -> EngineError:
    """The :class:`EngineError` (of ``kind``) for an invocation's error body (anything else becomes
    ``invocation_failed``).

    Example:
        >>> error_of({"code": "boom", "message": "it broke"}).body()
        {'code': 'boom', 'message': 'it broke'}
    """
    if isinstance(error, dict):
        return kind(str(error.get("code", "")), str(error.get("message", "")), error.get("stacktrace"))
    return kind("invocation_failed", str(error))


class Started:
    """An engine-internal call in flight, from :meth:`Invocations.start`.

    ``future`` resolves to ``(result, error_body)``: exactly one of them is meaningful, as in an
    ``invocationresult``; ``(None, None)`` after :meth:`abandon`. ``abandon()`` stops waiting: a routed call leaves
    the pending table (the worker's late result is then dropped), a built-in's task is cancelled. It is a no-op once
    the outcome is in.
    """

    __slots__ = ("_abandon", "_pending", "future")

    def __init__(self, future: asyncio.Future[tuple[Any, Any]], abandon: Callable[[], Any],
                 pending: Pending | None = None) -> None:
        self.future = future
        self._abandon = abandon
        self._pending = pending

    def abandon(self) -> None:
        """Stop waiting for the outcome (see the class)."""
        self._abandon()

    def hook(self, callback: Callable[[], object] | None) -> bool:
        """Have ``callback`` called, with no argument, as soon as :attr:`future` is settled (``None``: no longer);
        ``False`` (nothing arranged: use the future's done callbacks) for a built-in's call or one already ended.

        Why: a done callback runs one pass of the event loop after the result is set; a waiter that only has to
        settle a future of its own (the REST API module's) saves that pass, its handle and its context switch per
        call. ``callback`` runs inside the code that settles the call (a worker's reader, a timer, a disconnect),
        after the future is set: it must be quick and should not raise (an exception is logged, not passed on).

        Example:
            >>> loop = asyncio.new_event_loop()
            >>> ended = Started(loop.create_future(), lambda: None, None)
            >>> ended.hook(print)  # a built-in's call: use the future's done callbacks
            False
            >>> loop.close()
        """
        pending = self._pending
        # An ended call never calls its hook again: True here left its waiter waiting for good.
        if pending is None or (callback is not None and self.future.done()):
            return False
        pending.hook = callback
        return True


@dataclass(slots=True)
class Pending:
    """An invocation routed to a worker and not answered yet."""

    invocation_id: str
    function_id: str
    callee: WorkerConnection
    caller: WorkerConnection | None = None
    future: asyncio.Future[tuple[Any, Any]] | None = None
    timer: asyncio.TimerHandle | None = None
    watch: Any = None  # the invocation observer's token, handed back when the result arrives
    holder: WorkerConnection | None = None  # the worker whose max_calls_per_worker count the call holds
    ended: bool = False  # set by _finish: a wait for room in the callee's queue stops at once
    hook: Callable[[], object] | None = None  # called once the future is settled (Started.hook)
    # a worker's void call: its message and frame size until the frame is handed over, so that a callee leaving
    # before then does not lose it (:meth:`Invocations._void_unsent` routes it again); dropped at the handover, as
    # the callee may have run it from then on
    resend: tuple[dict[str, Any], int] | None = None
    _handed: bool = False

    @property
    def handed(self) -> bool:
        """Set by the callee's outbox once it hands the frame to the socket (workers.Handover): from then on the
        callee may run it; a frame its queue dropped unwritten (the connection lost first) never has it set."""
        return self._handed

    @handed.setter
    def handed(self, value: bool) -> None:
        self._handed = value
        self.resend = None


class Invocations:
    """The pending table and every way of calling a function."""

    def __init__(self, registry: Registry, workers: dict[str, WorkerConnection], *,
                 timeout_ms: int | None = None, fired: FiredCalls | None = None,
                 worker_calls: WorkerCalls | None = None, void_grace_ms: int = 0) -> None:
        self.registry = registry
        #: the bound on trigger-fired calls (:meth:`fire`) in flight
        self.fired = fired if fired is not None else FiredCalls()
        #: the bound on the calls one worker has in flight (:meth:`start_invoke`)
        self.worker_calls = worker_calls if worker_calls is not None else WorkerCalls()
        self._max_calls = self.worker_calls.limit
        # max_call_bytes_per_worker, checked here before a worker's call, and by FiredCalls (given it as well) for
        # each fan-out the call sets off
        self._max_call_bytes = self.worker_calls.byte_limit
        self.workers = workers
        # Set by the queue module (EngineServices.serve_named_queues); None: enqueue actions fail.
        self.named_queues: NamedQueues | None = None
        # Set while the engine's stop stops its modules (before the connections close), cleared by the next start:
        # an enqueue then gets engine_stopping, retry-safe, not "QueueModule not loaded" (a misconfiguration's text).
        self.modules_stopping = False
        self.timeout_ms = timeout_ms
        self.pending: dict[str, Pending] = {}
        # Set by the observability module; None keeps the call path free of any telemetry work.
        self.observer: InvocationObserver | None = None
        #: set by :meth:`stopping` (the engine's stop closing the workers' connections) until the next start: a call a
        #: disconnect ends says the engine is stopping, the cause, not that its callee's worker or its caller left
        self.engine_stopping = False
        #: results that ended no call (:meth:`_stray_result`)
        self.stray_results = 0
        self._stray_log = LossLog(self._log_stray, SKIP_LOG_INTERVAL_S)
        # A producer retrying into a full queue fails thousands of enqueues a second: one line per interval.
        self._enqueue_log = LossLog(self._log_enqueue_failed, SKIP_LOG_INTERVAL_S)
        #: void calls dropped because no worker serves their function (:meth:`_unknown_void`)
        self.unknown_void_calls = 0
        #: void calls of functions no worker serves yet, held up to ``void_grace_ms`` for one to register them
        self.held_voids = HeldVoids(void_grace_ms, route=self.start_invoke, drop=self._unknown_void,
                                    connected=lambda caller: self.workers.get(caller.id) is caller,
                                    served=self._served)
        # (a worker's backlog of voids sent after a restart, before their callee is back: one line per interval)
        self._unknown_void_log = LossLog(self._log_unknown_void, SKIP_LOG_INTERVAL_S)
        #: worker void calls whose callee left before they were written to it (:meth:`_void_unsent`)
        self.unsent_void_calls = 0
        self._unsent_void_log = LossLog(self._log_unsent_void, SKIP_LOG_INTERVAL_S)
        # those routed again that wait for room in their new callee's queue (:meth:`_route_unsent`)
        self._rerouted: set[asyncio.Task[None]] = set()
        #: trigger-fired calls not made because no worker serves their function (:meth:`_fired_missing`)
        self.missing_fired = 0
        # Every firing of a trigger whose function is gone (5,000 every-second cron triggers: 45,000 lines in 9 s)
        # would be a line: one per interval, naming the latest function and its triggers.
        self._missing_log = LossLog(self._log_missing, SKIP_LOG_INTERVAL_S)
        self._missing_latest = ""
        #: trigger-fired calls (and conditions) not run because their worker stayed busy through every try
        #: (:meth:`call_while_busy`)
        self.busy_fired = 0
        self._busy_log = LossLog(self._log_busy, SKIP_LOG_INTERVAL_S)
        # the calls a busy worker refused, waiting to ask again, by that worker, oldest first: each call the worker
        # answers frees one of its max_invocations, and wakes the oldest at once (on a fixed schedule alone, a
        # busy worker sat idle while its refused calls slept: it worked 44 % of a burst)
        self._slot_waiters: dict[str, dict[asyncio.Future[None], None]] = {}  # by worker id
        # Every task the engine runs for a call, with what it holds until it ends: a worker's max_calls_per_worker
        # count, a max_fired_calls slot, or nothing. The task gives it back itself when it ends; close() gives back
        # what tasks cancelled before they ever ran hold (their ``finally`` never runs).
        self._tasks = HeldTasks()

    # -- worker-initiated calls ------------------------------------------------------------------------------

    async def handle_invoke(self, caller: WorkerConnection, msg: dict[str, Any], size: int = 0) -> None:
        """A worker's ``invokefunction`` (already validated): :meth:`start_invoke`, awaiting what it returns."""
        routed = self.start_invoke(caller, msg, size)
        if routed is not None:
            await routed

    def start_invoke(self, caller: WorkerConnection, msg: dict[str, Any],
                     size: int = 0) -> Coroutine[Any, Any, None] | None:
        """Start a worker's ``invokefunction`` (already validated); returns the coroutine the connection's reader
        must await before its next frame (a routed call waiting for room in the callee's queue: production's
        back-pressure, and frame order), or ``None`` when nothing is left to wait for (a built-in call runs in a
        task of its own, an answer is queued). Why not a coroutine itself: the reader makes none per built-in call.
        A caller with ``max_calls_per_worker`` calls of the kind in flight (of worker functions; or built-in calls
        and enqueue actions), or holding ``max_call_bytes_per_worker`` bytes, is refused before its call is run or
        routed (:class:`~iii_engine.limits.WorkerCalls`); a call it starts holds one of them until it is over, and a
        built-in call or enqueue action also its frame's ``size`` bytes (a routed call's frame goes to its callee's
        byte-bounded queue, its caller's socket unread while it waits). The fan-outs a built-in call sets off are
        checked against the share again when they are taken (:class:`~iii_engine.limits.FiredCalls`).
        """
        function_id: str = msg["function_id"]
        data = msg["data"]
        invocation_id: str | None = msg.get("invocation_id")
        action = msg.get("action")
        over_bytes = caller.call_bytes >= self._max_call_bytes
        if action is not None:
            if action["type"] == "enqueue":
                if over_bytes or caller.builtin_calls >= self._max_calls:
                    self._too_many_calls(caller, function_id, invocation_id, builtin=True)
                    return None
                charge = self._charge(caller, size)
                task = asyncio.get_running_loop().create_task(
                    self._enqueue(charge, invocation_id, function_id, data, action["queue"]))
                self._tasks[task] = charge
                return None
            invocation_id = None  # void: never answered
        if type(data) is dict:
            data[CALLER_KEY] = caller.id
        entry = self.registry.functions.get(function_id)
        if entry is None:
            if invocation_id is not None:
                caller.post(caller.session.result(invocation_id, function_id, None, not_found(function_id)))
            elif not self.held_voids.hold(caller, msg, size):
                self._unknown_void(caller, function_id)
            return None
        traceparent, baggage = msg.get("traceparent"), msg.get("baggage")
        if entry.builtin is not None:
            if over_bytes or caller.builtin_calls >= self._max_calls:
                self._too_many_calls(caller, function_id, invocation_id, builtin=True)
                return None
            if invocation_id is not None:
                if invocation_id in caller.in_flight:
                    self._id_in_use(caller, function_id, invocation_id)
                    return None
                caller.in_flight.add(invocation_id)
            ctx = InvocationContext(caller.id, invocation_id, traceparent, baggage)
            # One task per call (a slow built-in must not hold up the worker's next frames). The task leaves
            # ``_tasks`` itself when it ends (see _run_builtin_for): no done callback to schedule per call.
            charge = self._charge(caller, size)
            self._tasks[asyncio.get_running_loop().create_task(self._run_builtin_for(charge, entry, data, ctx))] = \
                charge
            return None
        callee = self.workers.get(entry.owner or "")
        if callee is None:
            if invocation_id is not None:
                caller.post(caller.session.result(invocation_id, function_id, None, not_found(function_id)))
            elif not self.held_voids.hold(caller, msg, size):
                self._unknown_void(caller, function_id)
            return None
        if invocation_id is None and self.held_voids.releasing(function_id, caller):
            # behind this caller's void calls held for this function, now being routed in order; past the held
            # bounds the caller's reader waits for them to go (back-pressure, as for a callee's full queue)
            if self.held_voids.hold(caller, msg, size, behind=True):
                return None
            return self._after_release(caller, msg, size, function_id)
        if over_bytes or caller.calls - caller.builtin_calls >= self._max_calls:
            self._too_many_calls(caller, function_id, invocation_id, builtin=False)
            return None
        routed_id = invocation_id or new_invocation_id()
        if routed_id in self.pending or routed_id in caller.in_flight:
            # Taking the place of the call still pending under this id would leave its caller waiting for an answer
            # that now goes elsewhere, out of reach of the callee's disconnect (which stops the calls it holds):
            # the callee of any call knows its id. Refused instead.
            self._id_in_use(caller, function_id, routed_id)
            return None
        pending = Pending(routed_id, function_id, callee, caller if invocation_id is not None else None,
                          holder=caller, resend=None if invocation_id is not None else (msg, size))
        # A void call too: the caller's disconnect then stops it, so a caller that leaves and comes back cannot pile
        # up void calls a silent callee never ends (each new connection's count starts at 0).
        caller.in_flight.add(routed_id)
        return self._route(pending, data, traceparent, baggage)

    @staticmethod
    def _charge(caller: WorkerConnection, size: int) -> CallCharge:
        """Count a call ``caller`` starts in a task of its own (a built-in call or an enqueue action), with its
        frame's ``size`` bytes."""
        caller.calls += 1
        caller.builtin_calls += 1
        caller.call_bytes += size
        return CallCharge(caller, size)

    @staticmethod
    def _id_in_use(caller: WorkerConnection, function_id: str, invocation_id: str) -> None:
        """Refuse an answered call whose id belongs to a call not over: one pending (any worker's), or one
        ``caller`` takes part in (:attr:`WorkerConnection.in_flight`, which its disconnect stops).

        Why the second: that set holds each id once, and a built-in call's answer takes its id out. A callee
        reusing the id of the call it serves for a built-in call, then leaving without an answer, left that call
        pending for ever (its caller waiting, and holding a ``max_calls_per_worker`` count for good); two
        built-in calls under one id left the second unanswered.
        """
        log.warning("worker %s reused invocation id %s of a call not over; refused", caller.id, invocation_id)
        caller.post(caller.session.result(invocation_id, function_id, None, error_body(
            "invocation_id_in_use", f"Invocation id {invocation_id} belongs to a call still pending")))

    def _too_many_calls(self, caller: WorkerConnection, function_id: str, invocation_id: str | None, *,
                        builtin: bool) -> None:
        """Refuse a call of ``caller``, which has ``max_calls_per_worker`` of its kind in flight (``builtin``: a
        built-in call or enqueue action) or holds its bytes: one with an ``invocation_id`` (void ones have none
        by now) gets ``too_many_calls`` at once, a void one is dropped; both counted and logged."""
        held = "" if builtin else self._held_by(caller)
        message = self.worker_calls.refuse(caller, function_id, invocation_id is not None, builtin=builtin,
                                           held=held)
        if invocation_id is not None:
            caller.post(caller.session.result(invocation_id, function_id, None, error_body(TOO_MANY_CALLS, message)))

    def _held_by(self, caller: WorkerConnection) -> str:
        """What holds ``caller``'s calls of worker functions, for their refusal: the function with the most of them
        and how they end. Worked out at most once per :data:`HELD_BY_REFRESH_S` per worker: it reads every call
        the worker takes part in, and a flood refused at the bound must not pay that per frame."""
        now = time.monotonic()
        known = caller.held_by
        if known is not None and now - known[0] < HELD_BY_REFRESH_S:
            return known[1]
        counts: dict[str, int] = {}
        pending = self.pending
        for invocation_id in caller.in_flight:
            call = pending.get(invocation_id)
            if call is not None and call.holder is caller:
                counts[call.function_id] = counts.get(call.function_id, 0) + 1
        held = ""
        if counts:
            top, n = max(counts.items(), key=lambda item: item[1])
            others = len(counts) - 1
            held = f", {n} of them to {clip_text(top)}"
            if others:
                held += f" (the rest to {others} other function{'s' if others > 1 else ''})"
            # the surprise: a caller's own timeout or cancellation does not end a call (the wire has no cancel)
            held += (f": a call counts until its callee answers it, a side disconnects or invocation_timeout_ms "
                     f"{self.timeout_ms} runs out, not when its caller stops waiting" if self.timeout_ms else
                     ": a call counts until its callee answers it or a side disconnects, not when its caller stops "
                     "waiting (set invocation_timeout_ms to end calls a callee never answers)")
        caller.held_by = (now, held)
        return held

    async def _route(self, pending: Pending, data: Any, traceparent: str | None, baggage: str | None) -> None:
        callee = pending.callee
        if self.observer is not None:
            pending.watch = self.observer.call_started(pending.function_id, traceparent, builtin=False,
                                                       worker_id=callee.id)
            # the worker's spans then nest inside the engine's span of this call
            traceparent = self.observer.child_traceparent(pending.watch) or traceparent
        text: str | None
        try:
            text = callee.session.invoke(pending.invocation_id, pending.function_id, data, traceparent, baggage)
        except (ValueError, TypeError) as exc:
            # data the engine made (a stream trigger's event around a value 126 deep) that a frame cannot hold: the
            # call ends before anything is sent, its caller told as of any end (the error escaped a trigger's task
            # as an unretrieved exception, and its call was never made nor logged)
            text, unwritable = None, CallUnwritable(
                UNWRITABLE, f"the call of {clip_text(pending.function_id)} could not be written for its worker ({exc})")
        self.pending[pending.invocation_id] = pending
        # counted from here, given back in _finish: in the table <=> counted, whatever ends the call
        if pending.holder is not None:
            pending.holder.calls += 1
        if text is None:
            self._finish(pending.invocation_id, None, unwritable.body())
            return
        callee.in_flight.add(pending.invocation_id)
        if self.timeout_ms:
            loop = asyncio.get_running_loop()
            pending.timer = loop.call_later(self.timeout_ms / 1000, self._expire, pending.invocation_id)
        outbox = callee.outbox
        size = frame_bytes(text)
        if outbox.must_wait(size):
            await self._wait_for_room(pending, size)
            if pending.ended:
                # ended while it waited for room (timed out, its caller left, the callee was halted): its caller was
                # told so, and the callee must not run a call whose outcome nobody will take; the wait stopped when
                # it ended, so the caller's connection, whose frames wait behind this call, is read again at once
                return
        # The invoke path already waits for the callee (production's back-pressure): write from this task, at once
        # (the engine holds it for the turn's one write while the caller has more frames unread: see _serve_worker).
        if outbox.closed:
            # the connection was lost while the call waited for room (or in this turn): the frame never left the
            # engine, and the caller hears what the callee's disconnect tells every such call (one answer for one
            # situation; this said channel_send_failed "worker connection closed", halt_worker invocation_stopped)
            self._finish(pending.invocation_id, None, stopped(pending.function_id, self._callee_lost(pending)))
            return
        if not await outbox.send(text, size, flush=True, tag=pending):
            self._finish(pending.invocation_id, None, stopped(pending.function_id, self._callee_lost(pending)))

    def _callee_lost(self, pending: Pending) -> str:
        """Why a call whose callee's connection is gone ended: the engine's stop, or the callee's worker leaving
        before answering, the call either never handed to its connection's socket (it did not run: safe to retry,
        its frame waited for room or was dropped from the callee's queue unwritten) or handed over (it may have
        run).

        Why tell them apart: both said the callee disconnected (or "worker connection closed"), and a caller
        deciding whether to retry could not know that the calls that waited for room in the callee's queue were
        never sent.
        """
        if self.engine_stopping:  # the stop closed this worker's connection: the worker did not leave
            return ENGINE_STOPPING
        return CALLEE_LEFT if pending.handed else CALLEE_LEFT_UNSENT

    async def _wait_for_room(self, pending: Pending, size: int) -> None:
        """Wait for room for ``pending``'s frame in its callee's queue; the loss of the calling worker's connection
        ends the call. Why watch it here: that connection's frames are not read while its call waits (production's
        back-pressure), so its reader would see the loss only once the call ended, and with no
        ``invocation_timeout_ms`` against a callee that never reads, that is when the callee leaves; the worker
        that left stayed listed until then, its functions still routed to. Only the waiting path pays the task."""
        holder = pending.holder
        wait_closed = holder.wait_closed if holder is not None else None
        watch: asyncio.Future[None] | None = None

        def caller_left(done: asyncio.Future[None]) -> None:
            self._caller_left(pending, done)

        if wait_closed is not None:
            watch = asyncio.ensure_future(wait_closed())
            watch.add_done_callback(caller_left)
        try:
            await pending.callee.outbox.wait_for_room(size, pending)
        finally:
            if watch is not None:
                # Room came: a loss seen in this same turn must not stop the call now being sent (the caller's
                # disconnect ends it the ordinary way, its log not claiming "never sent").
                watch.remove_done_callback(caller_left)
                watch.cancel()

    def _caller_left(self, pending: Pending, watch: asyncio.Future[None]) -> None:
        if watch.cancelled() or pending.ended:
            return
        log.info("worker %s left while its call %s of %s waited for room; the call is stopped, never sent",
                 pending.holder.id if pending.holder is not None else "?", pending.invocation_id, pending.function_id)
        pending.caller = None  # nobody left to answer
        self._finish(pending.invocation_id, None, stopped(pending.function_id, CALLER_LEFT))

    def handle_result(self, sender: WorkerConnection, msg: dict[str, Any], verbatim: str | None = None) -> None:
        """A worker's ``invocationresult`` (already validated); ``verbatim``: the frame to forward as is."""
        invocation_id: str = msg["invocation_id"]
        pending = self.pending.get(invocation_id)
        if pending is None:
            # (the sender's in-flight set is left alone: an id there with no pending call is a built-in call the
            # sender made, and taking it out let the id be reused for a routed call that then outlived the sender's
            # disconnect, up to max_calls_per_worker more at every reconnect)
            self._stray_result(f"invocationresult {invocation_id} from worker {sender.id}: did not find caller")
            return
        if pending.callee is not sender:
            self._stray_result(f"worker {sender.id} sent a result for invocation {invocation_id} routed to worker "
                               f"{pending.callee.id}; ignored (E6)")
            return
        self._finish(invocation_id, msg.get("result"), msg.get("error"), msg.get("traceparent"), msg.get("baggage"),
                     verbatim)

    def reject_result(self, sender: WorkerConnection, invocation_id: str, reason: str) -> None:
        """A worker's ``invocationresult`` for ``invocation_id`` that could not be decoded: the call it answers ends
        with ``invalid_result`` naming why. Before, it was dropped and the call stayed pending: its caller waited
        with no ``invocation_timeout_ms`` for good, holding a ``max_calls_per_worker`` count."""
        pending = self.pending.get(invocation_id)
        if pending is None or pending.callee is not sender:
            return  # not the sender's call to answer (or over): the warning about the frame says enough
        self._finish(invocation_id, None, error_body(
            "invalid_result", f"worker {sender.id} answered invocation {invocation_id} of {pending.function_id} with "
                              f"a frame that could not be decoded: {clip_text(reason, REPLY_REASON_CLIP)}"))

    def _stray_result(self, what: str) -> None:
        """A result that ends no call: late (its caller left, it timed out or was stopped) or not the sender's.
        Logged rate-limited: a worker sending such results by the thousand must not flood the log."""
        self.stray_results += 1
        self._stray_log.lost("stray", what)

    def _log_stray(self, counts: Mapping[str, int], latest: str | None) -> None:
        latest_text = latest_tail(latest)
        log.warning("%d invocation result(s) ended no call since the last warning (late: the caller left, the call "
                    "timed out or was stopped; or not the sender's to answer); %d in all%s", counts["stray"],
                    self.stray_results, latest_text)

    def registered(self, function_id: str) -> None:
        """A worker registered ``function_id``: the void calls held for it are routed, in the order they came."""
        self.held_voids.registered(function_id)

    def _served(self, function_id: str) -> bool:
        """Whether a connected worker (or the engine) serves ``function_id`` now: a worker whose connection is
        already closed, its disconnect not handled yet, does not (a release would send its held calls into it)."""
        entry = self.registry.functions.get(function_id)
        if entry is None:
            return False
        if entry.builtin is not None:
            return True
        callee = self.workers.get(entry.owner or "")
        return callee is not None and not callee.outbox.closed

    async def _after_release(self, caller: WorkerConnection, msg: dict[str, Any], size: int, function_id: str) -> None:
        """Route a void call of ``function_id`` once the held calls before it are routed (see start_invoke)."""
        await self.held_voids.released(function_id)
        routed = self.start_invoke(caller, msg, size)
        if routed is not None:
            await routed

    def _void_unsent(self, pending: Pending) -> None:
        """A worker's void call whose callee left before its frame was written: it did not run and nobody hears of it
        (no caller waits), so it is routed again once the callee's disconnect is handled, as a new void call of its
        caller (:meth:`_route_unsent`). Before, it was dropped: 56 to 96 of 2,000 void calls to a callee reconnecting
        40 times ended without a word (then counted and logged, still lost)."""
        holder = pending.holder
        assert holder is not None  # (a worker's call: _finish tells only those)
        if pending.resend is not None and not holder.outbox.closed:
            msg, size = pending.resend
            pending.resend = None
            # not at once: the callee's disconnect may still list it as the function's worker (its connection closed
            # before its clean-up ran), and routing into it again would only end the call the same way
            asyncio.get_running_loop().call_soon(self._route_unsent, holder, msg, size)
            return
        self._unsent(holder.id, pending.function_id)

    def _route_unsent(self, caller: WorkerConnection, msg: dict[str, Any], size: int) -> None:
        """Route again a void call of ``caller`` whose callee left before it was written: to the function's worker if
        a connected one serves it, else held for one to register it (``void_grace_ms``, as a void call of a function
        nobody serves yet); dropped and counted only when neither can take it (its caller gone too, no grace, or the
        held bounds full)."""
        function_id: str = msg["function_id"]
        if caller.outbox.closed or self.engine_stopping:
            self._unsent(caller.id, function_id)
        elif not self._served(function_id):
            # (its worker's clean-up pending, or it left for good): a worker registering it releases the call
            if not self.held_voids.hold(caller, msg, size):
                self._unsent(caller.id, function_id)
        else:
            routed = self.start_invoke(caller, msg, size)
            if routed is not None:  # waiting for room in the new callee's queue: not on the caller's reader here
                task = asyncio.get_running_loop().create_task(routed)
                self._rerouted.add(task)
                task.add_done_callback(self._rerouted.discard)

    def _unsent(self, caller_id: str, function_id: str) -> None:
        """Count and log a void call lost because its callee left before it was written and nothing could take it."""
        self.unsent_void_calls += 1
        self._unsent_void_log.lost("unsent", f"worker {caller_id} called {clip_text(function_id)!r}")

    def _log_unsent_void(self, counts: Mapping[str, int], latest: str | None) -> None:
        log.warning("%d void call(s) not sent since the last warning: their callee's worker disconnected before they "
                    "were written to it (they did not run); %d in all%s", counts["unsent"], self.unsent_void_calls,
                    latest_tail(latest))

    def _unknown_void(self, caller: WorkerConnection, function_id: str) -> None:
        """A void call of a function no connected worker serves: dropped (as production drops it), counted and
        logged at most once per interval (one line per call let one worker's backlog flood the log: 10,000 lines)."""
        self.unknown_void_calls += 1
        self._unknown_void_log.lost("dropped", f"worker {caller.id} called {function_id!r}")

    def _log_unknown_void(self, counts: Mapping[str, int], latest: str | None) -> None:
        latest_text = latest_tail(latest)
        log.warning("%d void call(s) of unknown functions dropped since the last warning (no worker serves them: "
                    "not registered, or not registered again yet after a restart); %d in all%s", counts["dropped"],
                    self.unknown_void_calls, latest_text)

    def _fired_missing(self, function_id: str) -> None:
        """A trigger-fired call of ``function_id``, which no worker serves: counted, logged once per interval."""
        self.missing_fired += 1
        self._missing_latest = function_id
        self._missing_log.lost("missing", function_id)

    def _log_missing(self, counts: Mapping[str, int], latest: str | None) -> None:
        function_id = self._missing_latest
        # read here, once per warning, not per firing
        triggers = [entry for entry in self.registry.triggers.values() if entry.function_id == function_id]
        if triggers:
            first = triggers[0]
            others = len(triggers) - 1
            whose = f", the function of trigger {clip_text(first.id)} ({clip_text(first.trigger_type)})" + (
                f" and {others} other trigger{'s' if others > 1 else ''}" if others else "")
        else:
            whose = ""
        log.warning("%d trigger-fired call(s) not made since the last warning: no worker serves their function (not "
                    "registered, or its worker left); %d in all; latest: %s%s", counts["missing"],
                    self.missing_fired, clip_text(function_id), whose)

    def _log_enqueue_failed(self, counts: Mapping[str, int], latest: str | None) -> None:
        latest_text = latest_tail(latest)
        log.warning("%d enqueue(s) failed since the last warning%s", counts["failed"], latest_text)

    def _finish(self, invocation_id: str, result: Any, error: Any, traceparent: str | None = None,
                baggage: str | None = None, verbatim: str | None = None) -> None:
        pending = self.pending.pop(invocation_id, None)
        if pending is None:
            return
        pending.ended = True
        # whether it took a place at its callee (one that could not be written never did): only then does its end
        # free one for a call waiting there
        reached = invocation_id in pending.callee.in_flight
        if pending.timer is not None:
            pending.timer.cancel()
        outbox = pending.callee.outbox
        if outbox.waiting:  # a call may be waiting for room there: this one, if so, stops waiting
            outbox.wake_waiters()
        holder = pending.holder
        if holder is not None:
            holder.calls -= 1
            # the calling worker's (answered or void: a call with a caller always has it as its holder)
            holder.in_flight.discard(invocation_id)
        pending.callee.in_flight.discard(invocation_id)
        if self._slot_waiters and reached:
            self._slot_freed(pending.callee, error)
        if pending.watch is not None and self.observer is not None:
            self.observer.call_finished(pending.watch, error, builtin=False)
        caller = pending.caller
        if caller is not None:
            caller.post(verbatim if verbatim is not None else
                        caller.session.result(invocation_id, pending.function_id, result, error, traceparent, baggage))
        elif pending.future is None and pending.holder is not None and self._left_unsent(pending, error):
            self._void_unsent(pending)
        if pending.future is not None and not pending.future.done():
            pending.future.set_result((result, error))
            if pending.hook is not None:
                try:
                    pending.hook()
                except Exception:
                    # As the loop does for a done callback: the settling code (a disconnect's halt_worker among
                    # them) must go on, or the worker's other calls and its clean-up were left undone.
                    log.exception("the hook of invocation %s of %s raised", invocation_id, pending.function_id)

    def _expire(self, invocation_id: str) -> None:
        pending = self.pending.get(invocation_id)
        if pending is not None:
            log.warning("invocation %s of %s timed out after %s ms", invocation_id, pending.function_id,
                        self.timeout_ms)
            message = f"Invocation of {pending.function_id} timed out after {self.timeout_ms} ms"
            self._finish(invocation_id, None, error_body("invocation_timeout", message))

    def halt_worker(self, worker: WorkerConnection) -> None:
        """Disconnect step 3: stop every invocation in the worker's in-flight set (docs/protocol.md#invocations)."""
        for invocation_id in list(worker.in_flight):
            pending = self.pending.get(invocation_id)
            if pending is None:
                continue  # a built-in call it made: its task drops the result
            if worker is not pending.callee and worker is not pending.holder and worker is not pending.caller:
                continue  # another worker's call under the id of a built-in call of this one's: not this one's to end
            why = self._callee_lost(pending)
            if pending.caller is worker or pending.holder is worker:
                pending.caller = None  # nobody left to answer: the callee's late result finds no caller
                # (told to the observer only)
                why = ENGINE_STOPPING if self.engine_stopping else CALLER_LEFT
            self._finish(invocation_id, None, stopped(pending.function_id, why))
        worker.in_flight.clear()
        self.held_voids.caller_left(worker)

    # -- built-ins and enqueue -------------------------------------------------------------------------------

    async def _run_builtin_for(self, charge: CallCharge, entry: FunctionEntry, data: Any,
                               ctx: InvocationContext) -> None:
        # The fired calls this call sets off (a publish's deliveries) hold its bytes too (FiredCalls reads them here)
        CALL_CHARGE.set(charge)
        caller = charge.worker
        try:
            # Without an observer there is nothing for run_builtin to time: one coroutine fewer per built-in call.
            run = self.run_builtin if self.observer is not None else self._run_builtin
            result, error = await run(entry, data, ctx)
            invocation_id = ctx.invocation_id
            if invocation_id is None or invocation_id not in caller.in_flight:
                return  # no reply wanted, or the caller is gone (halted)
            if charge.unreached and error is None:
                # fired calls it set off were not made, their callee at its share: the caller hears of it (the void
                # ones only from the warning)
                unreached = self.fired.unreached(charge, entry.id)
                result, error = None, error_body(FIRE_LIMIT, unreached or "")
            routed = self.pending.get(invocation_id)
            if routed is None or (routed.holder is not caller and routed.callee is not caller):
                # (kept only for a routed call of this worker's under the same id: its place is that call's)
                caller.in_flight.discard(invocation_id)
            if type(result) is EncodedResult:
                text = caller.session.result(invocation_id, entry.id, None, error, result_json=result.json)
            else:
                try:
                    text = caller.session.result(invocation_id, entry.id, result, error)
                except (TypeError, ValueError) as exc:  # no JSON form, or outside the JSON policy (NaN, nesting)
                    text = caller.session.result(invocation_id, entry.id, None, error_body(
                        "serialization_error", f"Failed to serialize result for {entry.id}: {exc}"))
            # Written from this call's own task when the caller's queue is idle (no wake-up of its sender task), else
            # queued behind what is there, in order; a caller that stops reading holds up only this task, and further
            # replies fill its byte-bounded queue until it overflows and the caller is disconnected.
            await caller.outbox.send(text, flush=False)
        finally:
            # The task leaves ``_tasks`` itself; one cancelled before it ever ran skips this, and HeldTasks.close()
            # gives back what it holds.
            charge.give_back()
            del self._tasks[asyncio.current_task()]  # type: ignore[arg-type]

    async def run_builtin(self, entry: FunctionEntry, data: Any, ctx: InvocationContext) -> tuple[Any, Any]:
        """Run a built-in; returns ``(result, error_body)``; never raises (except cancellation)."""
        assert entry.builtin is not None
        observer = self.observer
        if observer is None:
            return await self._run_builtin(entry, data, ctx)
        watch = observer.call_started(entry.id, ctx.traceparent, builtin=True, worker_id=ctx.caller_worker_id)
        outcome = await self._run_builtin(entry, data, ctx)
        observer.call_finished(watch, outcome[1], builtin=True)
        return outcome

    async def _run_builtin_plain(self, entry: FunctionEntry, data: Any, ctx: InvocationContext) -> tuple[Any, Any]:
        """:meth:`run_builtin` for an in-process caller: an :class:`EncodedResult` comes back decoded (a copy), and
        ``data`` made :class:`~iii.protocol.codec.Encoded` for workers (a fan-out's one payload) goes in as the value
        it was made from, shared as the plain value of a fan-out always was."""
        if isinstance(data, Encoded):
            data = data.value()
        result, error = await self.run_builtin(entry, data, ctx)
        if type(result) is EncodedResult:
            result = loads(result.json)
        return result, error

    async def _run_builtin(self, entry: FunctionEntry, data: Any, ctx: InvocationContext) -> tuple[Any, Any]:
        assert entry.builtin is not None
        try:
            return await entry.builtin.handler(data, ctx), None
        except EngineError as exc:
            return None, exc.body()
        except Exception as exc:
            return None, self._failure(entry, exc)
        except asyncio.CancelledError as exc:
            if _cancelled_itself():
                raise
            return None, self._failure(entry, exc)

    @staticmethod
    def _failure(entry: FunctionEntry, exc: BaseException) -> dict[str, str]:
        """The ``internal_error`` body for a built-in that raised (logged with its traceback)."""
        log.error("built-in function %s failed", entry.id, exc_info=exc)
        body = error_body("internal_error", f"Built-in function {entry.id} failed: {exc!r}")
        body["stacktrace"] = "".join(traceback.format_exception(exc))
        return body

    async def _enqueue(self, charge: CallCharge, invocation_id: str | None, function_id: str, data: Any,
                       queue: str) -> None:
        caller = charge.worker
        try:
            result: Any = None
            error: Any = None
            if self.named_queues is None and self.modules_stopping:  # it stopped with the engine: it comes back
                error = error_body("engine_stopping", f"the engine is stopping: {function_id} was not enqueued; safe "
                                                      "to retry once the engine runs again")
            elif self.named_queues is None:
                error = error_body("enqueue_error", "QueueModule not loaded")
            else:
                try:
                    result = {"messageReceiptId": await self.named_queues.enqueue(queue, function_id, data)}
                except EngineError as exc:
                    error = exc.body()
                except Exception as exc:
                    error = error_body("enqueue_error", str(exc))
                except asyncio.CancelledError as exc:
                    if _cancelled_itself():
                        raise
                    error = error_body("enqueue_error", repr(exc))
            if error is not None:
                # the names and the message may quote the sender's input: clipped
                self._enqueue_log.lost("failed", f"enqueue of {clip(function_id)} on queue {clip(queue)} for "
                                                 f"worker {caller.id}: {clip_text(str(error['message']))}")
            if invocation_id is not None:
                caller.post(caller.session.result(invocation_id, function_id, result, error))
        finally:
            charge.give_back()  # as in _run_builtin_for
            del self._tasks[asyncio.current_task()]  # type: ignore[arg-type]

    # -- engine-internal calls -------------------------------------------------------------------------------

    async def call(self, function_id: str, data: Any, *, timeout_s: float | None = None,
                   traceparent: str | None = None, baggage: str | None = None) -> Any:
        """Call any function and return its result; :class:`EngineError` for an error result."""
        entry = self._entry(function_id)
        pending: Pending | None = None
        if entry.builtin is not None:
            ctx = InvocationContext(None, None, traceparent, baggage)
            # Inline, in the caller's task: what the caller holds of max_fired_calls is in the holds its takes
            # returned, so the built-in's own takes (a chained publish) leave it as it is.
            if timeout_s is None:  # no deadline: no Timeout object (a timer-less context manager) per call
                result, error = await self._run_builtin_plain(entry, data, ctx)
            else:
                async with asyncio.timeout(timeout_s):  # inline: no task per call, as wait_for would make
                    result, error = await self._run_builtin_plain(entry, data, ctx)
        else:
            try:
                if timeout_s is None:  # the engine's invocation_timeout_ms timer (if set) still bounds the wait
                    pending = await self._start_routed(entry, data, traceparent, baggage)
                    assert pending.future is not None
                    result, error = await pending.future
                else:
                    # the wait for room in the callee's queue too: a callee that stopped reading held the call
                    # (and, say, a composed stream update's item lock) past its deadline, for good
                    async with asyncio.timeout(timeout_s):
                        pending = await self._start_routed(entry, data, traceparent, baggage)
                        assert pending.future is not None
                        result, error = await pending.future
            except TimeoutError:
                if pending is not None:  # else _start_routed took it out of the table itself
                    self._finish(pending.invocation_id, None, None)
                raise EngineError("invocation_timeout",
                                  f"Invocation of {function_id} timed out after {timeout_s} s") from None
            except asyncio.CancelledError:  # nobody waits any more: the call leaves the pending table now
                if pending is not None:
                    self._finish(pending.invocation_id, None, None)
                raise
        if error is not None:
            if self._left_unsent(pending, error):
                assert pending is not None
                unsent = error_of(error, CallNotSent)
                assert isinstance(unsent, CallNotSent)
                unsent.worker_id = pending.callee.id
                raise unsent
            if isinstance(error, UnwritableBody):  # ours: a worker's answer of that code is a plain dict
                raise error_of(error, CallUnwritable)
            raise error_of(error)
        return result

    @staticmethod
    def _left_unsent(pending: Pending | None, error: Any) -> bool:
        """Whether ``error`` ended ``pending`` because its callee left before the frame was handed to its socket.
        Why not read it from the words alone: a worker's answer comes only for a call it received, so a frame never
        handed makes the error the engine's own, where a worker could send the same words."""
        return (pending is not None and not pending.handed and isinstance(error, dict)
                and str(error.get("message", "")).endswith(CALLEE_LEFT_UNSENT))

    async def start(self, function_id: str, data: Any, *, traceparent: str | None = None,
                    baggage: str | None = None) -> Started:
        """Start a call and return at once with its :class:`Started` handle (no task for a worker's function).

        Why: a caller that races the outcome against something else (the REST API module: the function's result
        against the first chunk of its response channel) awaits ``started.future`` directly instead of wrapping
        :meth:`call` in a task. Returns once the invocation frame is written (or queued); the wait for room in the
        worker's queue is the caller's to bound. The caller must :meth:`Started.abandon` a call it stops waiting
        for, so it leaves the pending table at once.

        Raises:
            EngineError: ``function_not_found``.
        """
        entry = self._entry(function_id)
        pending: Pending | None = None
        if entry.builtin is not None:
            ctx = InvocationContext(None, None, traceparent, baggage)
            task = self._tasks.spawn(self._run_builtin_plain(entry, data, ctx), None)
            return Started(task, task.cancel)
        pending = await self._start_routed(entry, data, traceparent, baggage)
        assert pending.future is not None
        return Started(pending.future, lambda: self._finish(pending.invocation_id, None, None), pending)

    def _entry(self, function_id: str) -> FunctionEntry:
        entry = self._served_entry(function_id)
        if entry is None:
            raise EngineError("function_not_found", f"Function {function_id} not found")
        return entry

    def _served_entry(self, function_id: str) -> FunctionEntry | None:
        """``function_id``'s entry when the engine or a connected worker serves it, else ``None``."""
        entry = self.registry.functions.get(function_id)
        if entry is None or (entry.builtin is None and entry.owner not in self.workers):
            return None
        return entry

    async def _start_routed(self, entry: FunctionEntry, data: Any, traceparent: str | None,
                            baggage: str | None) -> Pending:
        callee = self.workers[entry.owner or ""]
        future: asyncio.Future[tuple[Any, Any]] = asyncio.get_running_loop().create_future()
        pending = Pending(new_invocation_id(), entry.id, callee, None, future)
        try:
            await self._route(pending, data, traceparent, baggage)
        except BaseException:  # cancelled (a deadline) while waiting for room in the worker's queue
            self._finish(pending.invocation_id, None, None)
            raise
        return pending

    def fire(self, function_id: str, data: Any, *, taken: FiredSlots | None = None,
             busy_until: float | None = None) -> bool:
        """Call without waiting (trigger-fired); the outcome is logged and dropped.

        The call holds a slot of :attr:`fired` until its outcome is in, then gives it back. ``taken``: the slot the
        caller took for it (one slot, with its bytes), now the call's; otherwise one is taken if free, else the
        call is skipped, counted and logged, and ``False`` returned. A call of a function nobody serves is not made
        (``taken`` given back), counted in :attr:`missing_fired` and logged at most once per interval. A call of a
        worker's function also holds one of that worker's ``max_fired_calls_per_worker``; with none free it is not
        made (:meth:`FiredCalls.to_callee`: the slot given back, counted, logged) and ``False`` returned, unless it
        was handed ``taken``: ``True`` then, as a producer gives back the slot it handed over when ``False`` comes
        back (the cron module does), and this one is back already. ``busy_until``: see :meth:`call_while_busy`.
        """
        if taken is None:
            taken = self.fired.try_take()
            if taken is None:
                self.fired.skip(f"call of {function_id}")
                return False
            handed = False
        else:
            handed = True
        entry = self._served_entry(function_id)
        if entry is None:
            taken.release()
            self._fired_missing(function_id)
            return True  # made, and failed at once (a task of its own reported that before)
        held: FiredSlots = taken
        if entry.builtin is None:  # a worker's function (a built-in's call ends on its own)
            call = self.fired.to_callee(taken, entry.owner or "", function_id)
            if call is None:
                return handed
            held = call
        # The task leaves ``_tasks`` itself when it ends (see _fire): no done callback to schedule per call.
        # It is mapped to what it holds, so a stop gives back the slot, bytes and share of one that never ran too.
        self._tasks[asyncio.get_running_loop().create_task(self._fire(function_id, data, busy_until))] = held
        return True

    async def _fire(self, function_id: str, data: Any, busy_until: float | None) -> None:
        try:
            await self.call_while_busy(function_id, data, until=busy_until)
        except EngineError as exc:
            if exc.code == "function_not_found":  # unregistered, or its worker left, since it was fired
                if not self.engine_stopping:  # (a try after a busy refusal met the stop's closed connections)
                    self._fired_missing(function_id)
            elif isinstance(exc, CallUnwritable):  # the engine's own failure, not its callee's: as loud as below
                log.warning("trigger-fired call of %s not made: %s: %s", function_id, exc.code, exc.message)
            elif exc.code != WORKER_BUSY:  # (counted and told by call_while_busy)
                log.info("trigger-fired call of %s failed: %s: %s", function_id, exc.code, exc.message)
        except Exception as exc:  # its outcome is logged and dropped, whatever it is
            # a payload with no JSON form (an alert value of inf once did): before, the task ended with it and
            # asyncio reported "Task exception was never retrieved" only when the task was collected
            log.warning("trigger-fired call of %s not made: %s: %s", function_id, type(exc).__name__, exc)
        finally:
            # One cancelled before it ever ran skips this: HeldTasks.close() gives its slot back (the count
            # outlives a stop: an engine started again keeps its FiredCalls). The slot fire() was handed goes
            # back, with exactly the bytes its take charged.
            self._tasks.leave(asyncio.current_task())  # type: ignore[arg-type]

    async def call_while_busy(self, function_id: str, data: Any, *, until: float | None = None) -> Any:
        """Call ``function_id`` for a trigger and return its result; while its worker refuses for being busy (our
        SDK's ``worker_busy``: nothing ran), ask again after each of :data:`FIRED_BUSY_WAITS_MS` (a random 50-100 %
        of it), or as soon as that worker answers another call (a slot freed: the call waiting longest goes first),
        the caller still holding the call's slots, so a short busy spell loses no event (before, each refusal was a
        lost event and a log line). The last refusal (the seventh) is counted in :attr:`busy_fired`, told in a
        rate-limited warning and raised. Retries keep no order: a later event may run before an earlier one refused.

        ``until``: the event loop's time (``loop.time()``) past which no try is made: a cron tick is not asked
        again once its next tick is due (held ticks ran late, in a burst and out of order).
        """
        loop = asyncio.get_running_loop()
        end = math.inf if until is None else until
        for wait_ms in (*FIRED_BUSY_WAITS_MS, None):
            try:
                return await self.call(function_id, data)
            except EngineError as exc:
                if exc.code != WORKER_BUSY:
                    raise
                wait_s = 0.0 if wait_ms is None else wait_ms * random.uniform(0.5, 1.0) / 1000
                if wait_ms is None or loop.time() + wait_s > end:
                    self.busy_fired += 1
                    self._busy_log.lost("busy", function_id)
                    raise
            # spread: the calls one burst of events fired were refused together, and would all ask again together;
            # sooner when the worker answers a call (a slot freed), the call waiting longest first
            await self._slot_or_timeout(function_id, wait_s)

    async def _slot_or_timeout(self, function_id: str, wait_s: float) -> None:
        """Wait ``wait_s``, or less: until the worker serving ``function_id`` answers a call (not with a refusal),
        when this is the oldest of its calls waiting so."""
        entry = self._served_entry(function_id)
        worker = None if entry is None or entry.builtin is not None else entry.owner
        if worker is None or worker not in self.workers:
            await asyncio.sleep(wait_s)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = self._slot_waiters.setdefault(worker, {})
        waiting[waiter] = None
        try:
            await asyncio.wait((waiter,), timeout=wait_s)
        finally:
            waiter.cancel()
            waiting.pop(waiter, None)
            if not waiting and self._slot_waiters.get(worker) is waiting:
                del self._slot_waiters[worker]

    def _slot_freed(self, callee: WorkerConnection, error: Any) -> None:
        waiting = self._slot_waiters.get(callee.id)
        if not waiting or (isinstance(error, Mapping) and error.get("code") == WORKER_BUSY):
            return  # (a refusal frees nothing)
        waiter = next(iter(waiting))
        del waiting[waiter]
        if not waiting:
            del self._slot_waiters[callee.id]
        waiter.set_result(None)

    def _log_busy(self, counts: Mapping[str, int], latest: str | None) -> None:
        log.warning("%d trigger-fired call(s) not run: their worker stayed busy (worker_busy, its max_invocations "
                    "reached) while they were asked again for up to %.1f s (a cron tick: until its next tick was "
                    "due)%s", counts.get("busy", 0), _BUSY_BUDGET_S,
                    f" (the latest: {clip_text(latest)})" if latest else "")

    def stopping(self) -> None:
        """The engine's stop is about to close the workers' connections: until :attr:`engine_stopping` is cleared by
        the next start, a call a disconnect ends fails with ``invocation_stopped`` saying the engine is stopping.

        Why: the stop closes the connections before it ends the calls, and a call pending in a closed callee (a
        module's call, a fired call, a worker's call) was told "its callee's worker disconnected before answering",
        blaming a worker the stop had cut off. The calls still end when the connections do, not before: a worker
        answering as the stop begins still has its answer delivered.

        Example:
            >>> from iii_engine.registry import Registry
            >>> calls = Invocations(Registry(), {})
            >>> calls.stopping()
            >>> calls.engine_stopping
            True
        """
        self.engine_stopping = True

    async def close(self) -> None:
        """Engine shutdown: stop pending calls and built-in tasks, drop held void calls."""
        for invocation_id, pending in list(self.pending.items()):
            self._finish(invocation_id, None, stopped(pending.function_id, ENGINE_STOPPING))
        rerouted = list(self._rerouted)
        for task in rerouted:
            task.cancel()
        await asyncio.gather(*rerouted, return_exceptions=True)
        await self.held_voids.close()
        self._unknown_void_log.close()
        self._unsent_void_log.close()
        self._missing_log.close()
        self._busy_log.close()
        self._stray_log.close()
        self._enqueue_log.close()
        await self._tasks.close()
