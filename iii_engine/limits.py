"""Count bounds on what workers make the engine hold: connections, registrations per worker, services.

Why: a control frame is bounded in bytes (``max_message_size``) and a worker's unread output too
(``max_outbox_bytes``), but without counts a worker that loops on ``register_function`` or reconnects without end
(a bug as often as an attack) grows the engine until it runs out of memory and takes every other worker with it.

- ``max_workers``: a connection past it is closed at once with 1013 ("try again later") and a reason naming the
  setting; SDKs reconnect with back-off, so a worker gets in once another leaves.
- ``max_registrations_per_worker``: functions, trigger types and triggers one connection holds at once.
  Registrations are never acknowledged on the wire, so a refused one is logged by the engine (the first refusal
  of a connection names the item and the setting; the total is logged when it disconnects) and a call to a
  refused function fails with ``function_not_found``. Re-registering what the worker already holds is never refused.
- ``max_services``: explicit (``registerservice``) services the engine keeps; they outlive their worker and their
  functions. Implicit ones (a function id's prefix) come and go with functions, which are bounded above, and do not
  count. A new explicit service past it is refused the same way.
- ``max_fired_calls``: trigger-fired calls in flight engine-wide (pub/sub deliveries, stream and state triggers,
  cron ticks, log and alert triggers, worker and function events), each counted from dispatch until its
  handler's outcome is back; see :class:`FiredCalls`.
- ``max_calls_per_worker``: calls one worker has started through the engine and that are not over (its calls of
  worker functions, answered or void, its built-in calls and its enqueue actions); past it a call is refused at
  once (``too_many_calls``, or counted and logged when no reply was asked for); see :class:`WorkerCalls`.

Example:
    >>> from iii_engine.config import EngineConfig
    >>> limits = CountLimits(EngineConfig(max_workers=2))
    >>> limits.connection_refusal(1) is None, limits.connection_refusal(2)
    (True, 'too many workers connected (max_workers 2)')
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections import OrderedDict, deque
from collections.abc import Coroutine, Iterable, Mapping
from typing import Any

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.loss_log import LossLog

from .config import DEFAULT_FIRE_WAIT_TIMEOUT_MS, DEFAULT_MAX_CALLS_PER_WORKER, DEFAULT_MAX_FIRED_CALLS, EngineConfig
from .modules.base import EngineError, FiredCallLimit
from .registry import Registry
from .workers import WorkerConnection

log = logging.getLogger(__name__)

TRY_AGAIN_LATER = 1013
"""Close code for a connection past ``max_workers`` (RFC 6455 "Try Again Later")."""

FIRE_LIMIT = "fire_limit"
"""Error code of a call whose trigger-fired calls found no room under ``max_fired_calls`` in time."""

TOO_MANY_CALLS = "too_many_calls"
"""Error code of a worker's call refused because that worker has ``max_calls_per_worker`` calls in flight."""

SKIP_LOG_INTERVAL_S = 10.0
"""At most one warning per this many seconds about calls skipped or refused for want of room (with their count)."""

DEGRADED_WINDOW_S = 60.0
"""``engine::health::check`` reports a bound degraded while it skipped or refused a call this recently."""


class CountLimits:
    """The engine's count bounds, checked where the engine adds a connection, a registration or a service."""

    def __init__(self, config: EngineConfig) -> None:
        self.max_workers = config.max_workers
        self.max_registrations = config.max_registrations_per_worker
        self.max_services = config.max_services

    def connection_refusal(self, connected: int) -> str | None:
        """The close reason for one more connection while ``connected`` workers are, or ``None`` to accept it."""
        if connected < self.max_workers:
            return None
        return f"too many workers connected (max_workers {self.max_workers})"

    @staticmethod
    def held(worker: WorkerConnection, registry: Registry) -> int:
        """The registrations ``worker`` makes the engine hold: its functions (current, and overwritten ones kept
        to be restored when their overwriter leaves, E5), trigger types and stored or pending triggers."""
        return (len(worker.functions) + len(worker.external_functions) + registry.shadowed_count(worker.id)
                + len(worker.trigger_types) + registry.trigger_count(worker.id))

    def admit_registration(self, worker: WorkerConnection, registry: Registry, kind: str, item_id: str,
                           held: bool) -> bool:
        """May ``worker`` register ``item_id`` (a ``kind``: function, trigger type, trigger)? ``held``: it already
        holds that id (a re-registration, which never counts twice)."""
        if held:
            return True
        count = self.held(worker, registry)
        if count < self.max_registrations:
            return True
        return self._refuse(worker, f"{kind} {item_id!r}",
                            f"it holds {count} registrations (max_registrations_per_worker {self.max_registrations})")

    def admit_service(self, worker: WorkerConnection, registry: Registry, name: str) -> bool:
        """May ``worker`` add the explicit service ``name``? Replacing an explicit one always may; making an
        implicit one (a function's prefix) explicit adds one, as it then outlives its functions."""
        known = registry.services.get(name)
        if (known is not None and known.explicit) or registry.explicit_services < self.max_services:
            return True
        return self._refuse(worker, f"service {name!r}", f"the engine keeps {registry.explicit_services} "
                            f"explicit services (max_services {self.max_services})")

    @staticmethod
    def report(worker: WorkerConnection) -> None:
        """Log how many registrations ``worker`` had refused (called when it disconnects)."""
        if worker.refused_registrations > 1:
            log.warning("worker %s: %d registrations were refused over the engine's count limits",
                        worker.id, worker.refused_registrations)

    @staticmethod
    def _refuse(worker: WorkerConnection, what: str, why: str) -> bool:
        worker.refused_registrations += 1
        if worker.refused_registrations == 1:  # one line per connection, not one per frame of a flood
            log.warning("worker %s: %s refused: %s; later refusals are counted and logged when it disconnects",
                        worker.id, what, why)
        return False


class _WaitExpired(Exception):
    """A producer's wait for room ran out (set on its future by :meth:`FiredCalls._expire`)."""


class FiredCalls:
    """The engine-wide bound on trigger-fired calls in flight (``max_fired_calls``).

    Why: a fired call is a task the producer does not wait for; a publisher faster than a slow subscriber would
    otherwise pile up tasks (each waiting for room in the subscriber's outbound queue) until the engine dies.

    A call holds its slot from dispatch until its handler's result (or failure, or timeout) is back. A producer
    that is itself a call (a worker's ``publish``, a ``state::set`` with triggers) :meth:`take` s all the slots its
    fan-out needs at once (never half-delivered), waiting its turn in FIFO order for at most
    ``fire_wait_timeout_ms``; when the wait runs out its call fails with ``fire_limit``. That deadline also ends
    the deadlock of fired handlers that publish while every slot is held by such handlers. Producers with nobody
    to wait (cron ticks, log records, worker events) :meth:`try_take` and, when that fails, :meth:`skip`: counted
    in :attr:`skipped`. Skipped and refused calls are logged: the first time, then at most every
    ``SKIP_LOG_INTERVAL_S`` with their counts.
    Waiting producers are bounded too: at most ``max_fired_calls`` of them wait at once, a further one fails at
    once. Waiters go first: :meth:`try_take` fails while any producer waits.

    Example:
        >>> fired = FiredCalls(2, 1000)
        >>> fired.try_take(2), fired.try_take(), fired.in_flight
        (True, False, 2)
        >>> fired.release(2); fired.in_flight
        0
    """

    def __init__(self, max_fired_calls: int = DEFAULT_MAX_FIRED_CALLS,
                 wait_timeout_ms: int = DEFAULT_FIRE_WAIT_TIMEOUT_MS) -> None:
        self.limit = max_fired_calls
        self.wait_timeout_ms = wait_timeout_ms
        self.in_flight = 0
        #: the most ever in flight at once (never above ``limit``)
        self.peak = 0
        #: calls skipped while full by producers with nobody to wait
        self.skipped = 0
        #: calls not made because their producer's wait ran out (or too many producers waited): it failed
        self.refused = 0
        # each waiter's future, the slots it asks for and its deadline (loop time), in arrival order; a dict so
        # that one leaving (cancelled) is removed in O(1) wherever it stands
        self._waiters: OrderedDict[asyncio.Future[None], tuple[int, float]] = OrderedDict()
        self._deadline_timer: asyncio.TimerHandle | None = None  # for the oldest waiter (see _expire)
        self._waiting = 0  # slots the waiters ask for
        self._losses = LossLog(self._log_lost, SKIP_LOG_INTERVAL_S)

    @property
    def waiting(self) -> int:
        """Slots producers are waiting for."""
        return self._waiting

    def stats(self) -> dict[str, int]:
        """The counters, as ``engine::metrics::list`` and ``engine::health::check`` report them."""
        return {"in_flight": self.in_flight, "max_fired_calls": self.limit, "peak": self.peak,
                "waiting": self._waiting, "skipped": self.skipped, "refused": self.refused}

    def degraded(self) -> bool:
        """Whether a call was skipped or refused within the last :data:`DEGRADED_WINDOW_S`."""
        return self._losses.recent(DEGRADED_WINDOW_S)

    def try_take(self, n: int = 1) -> bool:
        """Take ``n`` slots if they are free now and nobody waits; ``False`` (nothing taken) otherwise."""
        in_flight = self.in_flight + n
        if in_flight > self.limit or self._waiters:
            return False
        self.in_flight = in_flight
        if in_flight > self.peak:
            self.peak = in_flight
        return True

    async def take(self, n: int, what: str, targets: str = "calls") -> None:
        """Take ``n`` slots, all at once, waiting in turn for at most ``fire_wait_timeout_ms``.

        ``what`` names the producer and ``targets`` what it fires (``"subscribers"``) in the error.

        Raises:
            EngineError: ``fire_limit`` when the wait runs out, or when ``n`` could never fit or too many
                producers wait already; nothing is taken then.
        """
        if self.try_take(n):
            return
        if n > self.limit:
            raise self._refuse(n, f"{what}: none of its {n} {targets} reached: more than max_fired_calls "
                               f"{self.limit} trigger-fired calls at once")
        if len(self._waiters) >= self.limit:
            raise self._refuse(n, f"{what}: none of its {n} {targets} reached: {self.in_flight} trigger-fired "
                               f"calls in flight (max_fired_calls {self.limit}) and {len(self._waiters)} "
                               "producers already waiting for room")
        loop = asyncio.get_running_loop()
        granted: asyncio.Future[None] = loop.create_future()
        deadline = loop.time() + self.wait_timeout_ms / 1000
        self._waiters[granted] = (n, deadline)
        self._waiting += n
        if self._deadline_timer is None:
            self._deadline_timer = loop.call_at(deadline, self._expire)
        try:
            await granted
        except _WaitExpired:
            raise self._refuse(n, f"{what}: none of its {n} {targets} reached: no room within "
                               f"{self.wait_timeout_ms} ms (fire_wait_timeout_ms): {self.in_flight} trigger-fired "
                               f"calls in flight (max_fired_calls {self.limit})") from None
        except BaseException:
            if granted.done() and not granted.cancelled():
                if granted.exception() is None:
                    self.release(n)  # cancelled as they were granted: given back
                raise  # (or as its deadline came: nothing was taken)
            granted.cancel()
            # still queued unless a release in the turn it was cancelled passed it by (see _grant)
            if self._waiters.pop(granted, None) is not None:
                self._waiting -= n
                self._grant()  # the head may have left: those behind it may fit now
            raise

    def _expire(self) -> None:
        """The deadline timer: waiters whose ``fire_wait_timeout_ms`` is over leave with :class:`_WaitExpired`.

        Every waiter waits the same time and they are queued in arrival order, so deadlines come in queue order:
        one timer, armed for the oldest waiter, serves them all (an ``asyncio.timeout`` per waiter cost a timer,
        its cancellation and a context manager per wait).
        """
        self._deadline_timer = None
        waiters = self._waiters
        loop = asyncio.get_running_loop()
        now = loop.time()
        left = False
        while waiters:
            granted, (n, deadline) = next(iter(waiters.items()))
            if not granted.done() and deadline > now:
                self._deadline_timer = loop.call_at(deadline, self._expire)
                break
            # expired, or cancelled and not yet back to clean up (it finds itself gone and grants nothing)
            del waiters[granted]
            self._waiting -= n
            left = True
            if not granted.done():
                granted.set_exception(_WaitExpired())
        if left:
            self._grant()  # a large head gone: smaller ones behind it may fit now

    def release(self, n: int = 1) -> None:
        """Give back ``n`` slots (their calls' outcomes are in); waiters that now fit get theirs, in order."""
        self.in_flight -= n
        if self._waiters:
            self._grant()

    def _grant(self) -> None:
        waiters = self._waiters
        while waiters:
            granted, (n, _) = next(iter(waiters.items()))
            if granted.done():
                # cancelled (its task was, or its deadline came) and not yet back to clean up: it gets nothing,
                # the slots go on down the line
                del waiters[granted]
                self._waiting -= n
                continue
            if self.in_flight + n > self.limit:
                return  # FIFO: nobody overtakes the head, so a large fan-out is never starved by small ones
            del waiters[granted]
            self._waiting -= n
            self.in_flight += n
            if self.in_flight > self.peak:
                self.peak = self.in_flight
            granted.set_result(None)

    def skip(self, what: str, n: int = 1) -> None:
        """Count ``n`` calls of ``what`` skipped for want of room, and warn (rate-limited, never silent)."""
        self.skipped += n
        self._losses.lost("skipped", what, n)

    def _refuse(self, n: int, message: str) -> EngineError:
        """Count ``n`` calls refused to a waiting producer and warn (rate-limited: a void call's producer hears of
        it from nobody else); the error for the producer."""
        self.refused += n
        self._losses.lost("refused", message, n)
        return EngineError(FIRE_LIMIT, message)

    def _log_lost(self, counts: Mapping[str, int], what: str | None) -> None:
        latest = f"; latest: {what}" if what is not None else ""
        log.warning("trigger-fired calls not made, no room under max_fired_calls %d: %d skipped (nobody to wait), "
                    "%d refused (their producer failed with fire_limit) since the last warning; %d skipped, "
                    "%d refused in all, %d in flight%s", self.limit, counts.get("skipped", 0),
                    counts.get("refused", 0), self.skipped, self.refused, self.in_flight, latest)

    def close(self) -> None:
        """Engine shutdown: stop the deadline timer (an engine started again arms a new one on its loop) and the
        pending warning timer (its count is logged now)."""
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        self._losses.close()


class WorkerCalls:
    """The bound on the calls one worker has in flight through the engine (``max_calls_per_worker``).

    Why: a worker's frames are bounded in bytes, not in count. Each call it starts holds something in the engine
    until it is over: a task per built-in call or enqueue action, a pending-table entry per call of a worker
    function (a void one too, until its callee answers). A worker calling faster than its callees answer (or a
    callee that never answers, with no ``invocation_timeout_ms``) grew the engine without end.

    The count lives on the worker (:attr:`WorkerConnection.calls`); :class:`~iii_engine.invocations.Invocations`
    takes and gives back, and calls :meth:`refuse` for a call past the bound: an answered one gets a
    ``too_many_calls`` error, a void one is dropped; both are counted and logged (rate-limited, never silent).

    Example:
        >>> calls = WorkerCalls(2)
        >>> calls.stats([])
        {'max_calls_per_worker': 2, 'in_flight': 0, 'busiest_worker': 0, 'refused': 0, 'refused_void': 0}
    """

    def __init__(self, max_calls_per_worker: int = DEFAULT_MAX_CALLS_PER_WORKER) -> None:
        self.limit = max_calls_per_worker
        #: calls refused with ``too_many_calls``
        self.refused = 0
        #: void calls (no reply asked for) not made
        self.refused_void = 0
        self._losses = LossLog(self._log_refused, SKIP_LOG_INTERVAL_S)

    def refuse(self, worker: WorkerConnection, function_id: str, answered: bool) -> str:
        """Count a call of ``function_id`` by ``worker`` refused at the bound (``answered``: it gets the error);
        the error message."""
        message = f"worker {worker.id} has {worker.calls} calls in flight (max_calls_per_worker {self.limit})"
        if answered:
            self.refused += 1
        else:
            self.refused_void += 1
        self._losses.lost("answered" if answered else "void",
                          f"{'call' if answered else 'void call'} of {function_id}: {message}")
        return message

    def stats(self, workers: Iterable[WorkerConnection]) -> dict[str, int]:
        """The counters, as ``engine::metrics::list`` and ``engine::health::check`` report them: ``in_flight``
        sums every worker's calls, ``busiest_worker`` is the most one worker has."""
        counts = [worker.calls for worker in workers]
        return {"max_calls_per_worker": self.limit, "in_flight": sum(counts), "busiest_worker": max(counts, default=0),
                "refused": self.refused, "refused_void": self.refused_void}

    def degraded(self) -> bool:
        """Whether a call was refused within the last :data:`DEGRADED_WINDOW_S`."""
        return self._losses.recent(DEGRADED_WINDOW_S)

    def _log_refused(self, counts: Mapping[str, int], what: str | None) -> None:
        latest = f"; latest: {what}" if what is not None else ""
        log.warning("worker calls refused over max_calls_per_worker %d: %d answered with too_many_calls, %d void "
                    "(no reply asked for, dropped) since the last warning; %d and %d in all%s", self.limit,
                    counts.get("answered", 0), counts.get("void", 0), self.refused, self.refused_void, latest)

    def close(self) -> None:
        """Engine shutdown: a pending warning is logged now."""
        self._losses.close()


Held = WorkerConnection | FiredCallLimit | tuple[FiredCallLimit, int] | None
"""What a task of :class:`HeldTasks` holds until it ends: one call of a worker's ``max_calls_per_worker`` count
(its connection), one ``max_fired_calls`` slot (the bound), several (the bound and how many), or nothing."""


def _give_back(held: Held) -> None:
    if isinstance(held, WorkerConnection):
        held.calls -= 1
    elif isinstance(held, tuple):
        held[0].release(held[1])
    elif held is not None:
        held.release()


def _never_ran(task: asyncio.Task[Any]) -> bool:
    coro = task.get_coro()
    return inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED


class HeldTasks(dict[asyncio.Task[Any], Held]):
    """Tasks that each hold part of a count bound until they end, mapped to what they hold.

    A task gives back what it holds itself, in a ``finally``, and leaves the map: by its own ``del`` (the call
    path: no done callback to schedule per call) or by :meth:`spawn`'s done callback. Why this class: a coroutine
    cancelled before its first step never enters its ``try``, so that ``finally`` never runs; :meth:`close`
    cancels every task and gives back what such ones hold (before, a stop leaked them: a restarted engine had
    that many ``max_fired_calls`` slots fewer, for good). A dict, so the call path adds and removes its tasks by
    plain item assignment. Only :meth:`close` may cancel a task that holds something: one cancelled elsewhere
    before it ran would leave the map (done callback) with what it holds.

    Example:
        >>> async def demo() -> int:
        ...     fired = FiredCalls(2)
        ...     tasks = HeldTasks()
        ...     fired.try_take()
        ...     tasks.spawn(asyncio.sleep(1), fired)  # cancelled before it ever ran: its slot comes back
        ...     await tasks.close()
        ...     return fired.in_flight
        >>> asyncio.run(demo())
        0
    """

    def spawn(self, coro: Coroutine[Any, Any, Any], held: Held, name: str | None = None) -> asyncio.Task[Any]:
        """Run ``coro`` in a task (named ``name``) holding ``held``, which ``coro`` gives back itself when it
        ends; it leaves the map when it is done."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self[task] = held
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self.pop(task, None)

    async def close(self) -> None:
        """Cancel every task and wait for them; gives back what those that never ran hold."""
        # Until none is left: a task may be added while we wait for the cancelled ones (a frame read meanwhile).
        # Each round removes exactly the tasks it cancelled: a later one must stay tracked (a blanket clear()
        # would leave it running, unawaited).
        while self:
            tasks = list(self.items())
            # Checked before the cancel: one whose coroutine never started skips its ``finally`` (any cancel
            # before its first step, this one or an earlier one, e.g. an abandoned call's).
            unstarted = [held for task, held in tasks if held is not None and _never_ran(task)]
            for task, _ in tasks:
                task.cancel()
            await asyncio.gather(*(task for task, _ in tasks), return_exceptions=True)
            for task, _ in tasks:
                self.pop(task, None)
            for held in unstarted:
                _give_back(held)


class Slots:
    """``n`` slots taken first come, first served; a free one is taken without a coroutine (:meth:`try_take`).

    Why not ``asyncio.Semaphore``: its ``acquire`` on a free semaphore cost about 1 % of a whole REST request's CPU
    (a coroutine and two scans of its waiters), and taking its fast path by hand means reading its private fields.

    Example:
        >>> slots = Slots(1)
        >>> slots.try_take(), slots.try_take(), slots.free
        (True, False, 0)
        >>> slots.release(); slots.free
        1
    """

    __slots__ = ("_waiters", "free")

    def __init__(self, n: int) -> None:
        self.free = n
        self._waiters: deque[asyncio.Future[None]] = deque()

    def locked(self) -> bool:
        """Whether a taker would wait now."""
        return self.free <= 0 or bool(self._waiters)

    def try_take(self) -> bool:
        """Take a slot now if one is free and nobody waits (a request never passes one that waits)."""
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def take(self) -> None:
        """Take a slot, waiting in turn; a cancelled wait takes nothing (a slot handed over as it was cancelled
        goes to the next waiter)."""
        if self.try_take():
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(granted)
        try:
            await granted
        except BaseException:
            if granted.done() and not granted.cancelled():
                self.release()  # handed over in the turn it was cancelled: passed on
            else:
                granted.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(granted)
            raise

    def release(self) -> None:
        """Give a slot back: to the oldest waiter, else to the free count."""
        while self._waiters:
            granted = self._waiters.popleft()
            if not granted.done():
                granted.set_result(None)
                return
        self.free += 1
