"""The ``cron`` trigger type (docs/guides/engine.md#modules): call a function on a seconds-precision UTC schedule.

Each tick is fired by exactly one engine among those sharing a lock store (:mod:`~iii_engine.modules.cron.locks`;
settings: :class:`~iii_engine.modules.cron.settings.CronSettings`). A tick is a trigger-fired call: it holds a slot
of the engine's ``max_fired_calls`` from the tick (lock and condition included) until the handler's outcome is in;
with no room the tick is skipped, counted and logged (nobody waits for a tick, and a late one is worth little). A
shared lock (Redis) is waited for without the slot, which is taken again once the tick is won.

Example (engine configuration):
    >>> CronModule.class_names
    ('modules::cron::CronModule',)
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final, cast

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.iii_types import TriggerInfo
from iii.loss_log import LossLog, latest_tail

from ...limits import HeldTasks
from ..base import EngineError, EngineModule, EngineServices, FiredSlots
from ..health import component, probe
from ..trigger_set import check_trigger_config
from .expr import CronExpression, CronSyntaxError, rfc3339
from .locks import CronLock, open_cron_lock
from .settings import CronSettings

log = logging.getLogger(__name__)

# Ticks skipped because the lock store failed are logged at most this often (a Redis that is down fails every tick
# of every trigger: a traceback per tick before)
LOCK_FAILURE_LOG_INTERVAL_S = 10.0
LEFT_CHECK_S = 2.0
"""How long after a tick it left to the engines sharing a lock an engine looks whether one of them fired it."""
MAX_LEFT_CHECKS = 16_384
"""Ticks left to the others waiting to be looked at, at most (past it they are counted in ``left_unchecked``)."""

#: longest ``lock_key`` a cron trigger config may name (it is part of a Redis key, sent with every tick)
MAX_LOCK_KEY_CHARS: Final = 1024

_CLOCK_BACK_S: Final = 1.0
"""Seconds still left before a tick after sleeping all of them: past this, the wall clock was set back."""
_LATE_S: Final = 1.0
"""Seconds a tick may be late, by the loop's clock (a stall) or by the wall clock (a step forward while its schedule
slept), before the ticks it passed over are skipped."""
_TURN_BATCH: Final = 256
"""Schedules that go on past their tick in one turn of the event loop, at most (see :class:`_Turns`)."""
_WAKE_S: Final = 1.0
"""Longest the shared clock sleeps before the wall clock is read again: a clock stepped forward during a sleep is seen
within it."""
_COMPACT_MIN: Final = 64
"""Sleepers gone (cancelled) the clock's heap keeps before it is rebuilt without them (past half of it)."""


class _WallClock:
    """One timer for every sleeping schedule: a heap of (wall-clock moment, sleeper), the loop woken at the earliest
    moment or after :data:`_WAKE_S`, whichever is first, and the wall clock read against the loop's monotonic clock
    once per wake.

    Why one: each schedule slept in 1 s pieces of its own to see a wall clock stepped forward, so schedules that
    never fired cost CPU every second (20,000 triggers due in 2099 at distinct instants: 37 % of a core, idle). Now
    an idle second costs one wake whatever the number of schedules; a sleep begun or cancelled costs O(log N), a
    wall clock set back O(N) (every sleeper is woken to schedule from the new time).

    Example:
        >>> async def nap() -> bool:
        ...     late = await _WallClock().sleep_until(datetime.now(UTC) + timedelta(milliseconds=10))
        ...     return late is not None and late >= 0.0  # on time, or late by the loop's clock
        >>> asyncio.run(nap())
        True
    """

    def __init__(self) -> None:
        #: times the clock's timer ran (what an idle second costs: at most one per :data:`_WAKE_S`)
        self.wakes = 0
        self._heap: list[tuple[datetime, int, asyncio.Future[float | None]]] = []
        self._count = 0  # tie-break: futures do not compare
        # sleepers cancelled since the heap was last rebuilt (some of them may be out of it already: a count to
        # decide when to rebuild, which then costs at most twice the cancellations, not an exact one)
        self._gone = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # loop time the timer is set for
        self._read: tuple[datetime, float] | None = None  # the clocks (wall, loop) when last read

    async def sleep_until(self, moment: datetime) -> float | None:
        """Sleep until the wall clock reads ``moment``: then the seconds the event loop woke later than asked (0.0
        when no sleep was needed), a stall measured on the loop's monotonic clock, which a wall clock stepped a
        little either way does not move; None when the clock was found set back by more than
        :data:`_CLOCK_BACK_S` meanwhile (waiting out the jump would silence an every-second schedule for as long
        as the clock went back).

        The wall clock is read at least every :data:`_WAKE_S`: one monotonic sleep of the whole delay did not see a
        clock stepped forward meanwhile, and the tick fired as late as the step, with no warning and no count
        (``0,30 * * * * *``, stepped +15 s: the :30 tick fired at :45). How late the wall clock then reads is the
        caller's to look at."""
        if moment <= datetime.now(UTC):
            return 0.0
        loop = asyncio.get_running_loop()
        if self._stepped_back(loop):
            self._wake_all()  # the sleepers before this one: this one starts from the clock as it now reads
        sleeper: asyncio.Future[float | None] = loop.create_future()
        self._count += 1
        heapq.heappush(self._heap, (moment, self._count, sleeper))
        if self._heap[0][2] is sleeper:  # the earliest now: the timer, set for a later one or none, comes sooner
            self._set_timer(loop)
        try:
            return await sleeper
        except asyncio.CancelledError:
            if sleeper.cancelled():  # still in the heap (a woken one is out of it): dropped later, in bulk
                self._gone += 1
                if self._gone > _COMPACT_MIN and 2 * self._gone > len(self._heap):
                    self._heap = [entry for entry in self._heap if not entry[2].done()]
                    heapq.heapify(self._heap)
                    self._gone = 0
            raise

    def close(self) -> None:
        """Stop the timer and forget every sleeper (the module stopping: their schedules are cancelled)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for _, _, sleeper in self._heap:
            sleeper.cancel()
        self._heap.clear()
        self._gone = 0
        self._read = None

    def _stepped_back(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Read both clocks: whether the wall clock went back more than :data:`_CLOCK_BACK_S` against the loop's
        since they were last read."""
        wall, mono = datetime.now(UTC), loop.time()
        read, self._read = self._read, (wall, mono)
        return read is not None and (mono - read[1]) - (wall - read[0]).total_seconds() > _CLOCK_BACK_S

    def _set_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        """The timer, for the earliest sleeper's moment or :data:`_WAKE_S` from now, whichever is first."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        heap = self._heap
        while heap and heap[0][2].done():  # cancelled sleepers at the top: no wake for them
            heapq.heappop(heap)
            self._gone -= 1
        if not heap:
            self._read = None  # nobody sleeps: no timer, no cost (a step meanwhile concerns no sleeper)
            return
        if self._read is None:
            self._read = (datetime.now(UTC), loop.time())
        delay = min(max((heap[0][0] - self._read[0]).total_seconds(), 0.0), _WAKE_S)
        self._timer_at = self._read[1] + delay
        self._timer = loop.call_at(self._timer_at, self._wake)

    def _wake(self) -> None:
        """The timer ran: wake the sleepers whose moment the wall clock has reached (all of them, with None, when it
        was set back), then set the timer again."""
        self._timer = None
        self.wakes += 1
        loop = asyncio.get_running_loop()
        if self._stepped_back(loop):
            self._wake_all()
            return
        assert self._read is not None  # just read
        now, overrun = self._read[0], max(loop.time() - self._timer_at, 0.0)
        heap = self._heap
        while heap and (heap[0][0] <= now or heap[0][2].done()):
            _, _, sleeper = heapq.heappop(heap)
            if sleeper.done():
                self._gone -= 1
            else:
                sleeper.set_result(overrun)
        self._set_timer(loop)

    def _wake_all(self) -> None:
        """The wall clock went back: every sleeper is woken with None, to schedule from the clock as it now reads."""
        heap, self._heap, self._gone = self._heap, [], 0
        for _, _, sleeper in heap:
            if not sleeper.done():
                sleeper.set_result(None)
        loop = asyncio.get_running_loop()
        self._set_timer(loop)


class _Turns:
    """Lets at most :data:`_TURN_BATCH` schedules go on in one turn of the event loop, the rest in the following
    turns in the order they came: the loop reads its sockets between the turns.

    Why: every schedule of the same tick woke in the same turn, and the loop ran them all, then all their ticks'
    tasks, before it read a socket again: with 10,000 every-second triggers another worker's call waited up to
    0.3-0.4 s (p95 264-339 ms), with 40,000 seconds. The first :data:`_TURN_BATCH` of a turn go on at once, with no
    extra step.

    Example:
        >>> async def three_woken() -> list[int]:
        ...     turns, done = _Turns(2), []
        ...     async def schedule(n: int) -> None:
        ...         await turns.take()
        ...         done.append(n)
        ...     await asyncio.gather(*(schedule(n) for n in range(3)))
        ...     return done
        >>> asyncio.run(three_woken())
        [0, 1, 2]
    """

    def __init__(self, batch: int = _TURN_BATCH) -> None:
        self.batch = batch
        self._used = 0  # schedules that went on in this turn
        self._turning = False  # a _next_turn is scheduled
        # waiting schedules, each with what its future is to be given: cancelled ones (their trigger gone) are skipped
        self._waiting: deque[tuple[asyncio.Future[Any], Any]] = deque()

    async def take(self, others: Iterable[asyncio.Future[Any]] = (), result: Any = None) -> None:
        """Return when this turn (or a later one) has room for one more schedule to go on; ``others``, schedules
        woken with this one, go on after it, each future given ``result``, :attr:`batch` per turn."""
        waiting = self._waiting
        if self._used < self.batch and not waiting:
            self._used += 1
            waiter = None
        else:
            waiter = asyncio.get_running_loop().create_future()
            waiting.append((waiter, None))
        waiting.extend((other, result) for other in others)
        self._schedule_turn()
        if waiter is not None:
            await waiter

    def _schedule_turn(self) -> None:
        if not self._turning:
            self._turning = True
            asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        """A new turn: the next :attr:`batch` waiting go on in it."""
        self._turning = False
        self._used = 0
        waiting = self._waiting
        while waiting and self._used < self.batch:
            waiter, result = waiting.popleft()
            if not waiter.done():
                waiter.set_result(result)
                self._used += 1
        if self._used:
            self._schedule_turn()  # to start the turn after with none used


_LEAD: Final = "lead"
"""What a schedule waiting for another's wake is given when that one left first: it sleeps for the instant itself."""


class _Instant:
    """The schedules due at one instant: the first (the leader) sleeps until it (on the module's :class:`_WallClock`),
    the others wait for its wake, so that 10,000 schedules of one tick hold one sleeper, not 10,000 that all wake in
    one turn of the loop (the leader lets them go on through :class:`_Turns`)."""

    __slots__ = ("followers",)

    def __init__(self) -> None:
        # each follower's future, a dict for its removal in O(1) when its trigger goes (churn left them behind)
        self.followers: dict[asyncio.Future[Any], None] = {}


def parse_trigger_expression(config: Any) -> CronExpression:
    """The schedule of a ``cron`` trigger config; :class:`EngineError` ``invalid_cron_expression`` if bad.

    Example:
        >>> parse_trigger_expression({"expression": "0 * * * * *"}).source
        '0 * * * * *'
    """
    expression = config.get("expression") if isinstance(config, dict) else None
    if not isinstance(expression, str) or not expression.strip():
        raise EngineError("invalid_cron_expression", "cron trigger config needs a non-empty 'expression'")
    try:
        return CronExpression.parse(expression)
    except CronSyntaxError as exc:
        raise EngineError("invalid_cron_expression",
                          f"Invalid cron expression {expression!r:.100}: {exc}") from exc


def lock_key_of(trigger: TriggerInfo) -> str | None:
    """The ``lock_key`` (ours) of ``trigger``'s config, None without one: its ticks are then locked by its id, as in
    production. Engines sharing a lock store fire a tick once only among triggers with the same lock: the SDK gives
    each ``register_trigger`` a fresh id, so replicas of one worker share a lock only through a ``lock_key``. A
    ``lock_key`` has a key space of its own: naming another trigger's id does not take that trigger's lock.

    Raises:
        EngineError: ``invalid_trigger_config`` naming the field: ``lock_key`` empty or over 1,024 characters (its
            type is checked by :func:`~iii_engine.modules.trigger_set.check_trigger_config`).

    Example:
        >>> lock_key_of(TriggerInfo(id="t1", trigger_type="cron", function_id="f",
        ...                         config={"expression": "* * * * * *", "lock_key": "nightly-report"}))
        'nightly-report'
        >>> lock_key_of(TriggerInfo(id="t1", trigger_type="cron", function_id="f", config={"expression": "@daily"}))
        >>> lock_key_of(TriggerInfo(id="t1", trigger_type="cron", function_id="f", config={"lock_key": ""}))
        Traceback (most recent call last):
        ...
        iii_engine.modules.base.EngineError: invalid_trigger_config: cron trigger t1: 'lock_key' must not be empty
    """
    key = trigger.config.get("lock_key") if isinstance(trigger.config, dict) else None
    if not isinstance(key, str):
        return None
    if not key:
        raise EngineError("invalid_trigger_config", f"cron trigger {trigger.id}: 'lock_key' must not be empty")
    if len(key) > MAX_LOCK_KEY_CHARS:
        raise EngineError("invalid_trigger_config", f"cron trigger {trigger.id}: 'lock_key' is {len(key)} "
                          f"characters long, at most {MAX_LOCK_KEY_CHARS}: {key!r:.100}")
    return key


class CronModule(EngineModule):
    """Engine module providing the ``cron`` trigger type."""

    name: ClassVar[str] = "cron"
    class_names: ClassVar[tuple[str, ...]] = ("modules::cron::CronModule",)
    #: what one trigger costs beyond its registration (its schedule's task and parsed expression), held of its
    #: registrant's ``max_registration_bytes_per_worker`` (see :class:`~iii_engine.modules.base.TriggerTypeHandler`).
    #: Measured, engine RSS over 20,000 triggers: 3.0 KiB each with one expression, 4.1 KiB with distinct ones (each
    #: its own tick instant), a trigger of a worker's trigger type 0.9 KiB (before, 17.9 KiB, 14.4 of it the
    #: expression's frozensets: charged 6 KiB then). With the registration's own charge (~2.3 KiB for these) a
    #: trigger is charged ~5.3 KiB in all, above either (tests/integration/modules/test_cron_trigger_memory.py)
    retained_bytes_per_trigger: ClassVar[int] = 3 * 1024

    def __init__(self, services: EngineServices, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(services, config)
        self.settings = CronSettings.parse(self.config)
        self._lock: CronLock | None = None
        self._schedules: dict[str, asyncio.Task[None]] = {}
        # ticks being fired, each holding its max_fired_calls slot until the call has it
        self._firings = HeldTasks()
        self._turns = _Turns()
        self._clock = _WallClock()
        self._instants: dict[datetime, _Instant] = {}
        #: ticks not fired because the engine's loop stalled past them or the wall clock jumped forward (each logged)
        self.missed_ticks = 0
        #: ticks not fired because the lock store failed or did not answer (logged rate-limited)
        self.lock_failures = 0
        #: ticks a shared lock's engine left to the others, no worker here serving the function or condition
        self.ticks_left = 0
        #: of those, ticks no engine had fired :data:`LEFT_CHECK_S` later (logged rate-limited), and ticks not looked
        #: at (more than :data:`MAX_LEFT_CHECKS` waiting to be)
        self.ticks_lost = 0
        self.left_unchecked = 0
        self._left_checks: set[asyncio.Task[None]] = set()
        self._lock_failure_log = LossLog(self._log_lock_failures, LOCK_FAILURE_LOG_INTERVAL_S)
        # One line per trigger per stall before: 5,000 every-second triggers and one 3 s stop wrote 5,903 lines
        # (1.2 MB), on the loop, which made the stall longer.
        self._missed_log = LossLog(self._log_missed, LOCK_FAILURE_LOG_INTERVAL_S)
        self._lost_log = LossLog(self._log_lost, LOCK_FAILURE_LOG_INTERVAL_S)
        # its own: one log's `latest` names the latest tick of either kind, and each line must name one of its own
        self._unchecked_log = LossLog(self._log_unchecked, LOCK_FAILURE_LOG_INTERVAL_S)

    async def start(self) -> None:
        """Open the lock store and register the trigger type."""
        # fresh for each start: a turn scheduled on the loop of a run that ended never came, and would hold every
        # schedule of the next run behind it
        self._turns = _Turns()
        self._clock = _WallClock()
        self._instants = {}
        self._lock = open_cron_lock(self.settings)
        await self._lock.prepare()  # a lock store that is down fails the start in one line naming it
        self.services.register_trigger_type("cron", "Run a function on a cron schedule (UTC, seconds)", self)

    async def health(self) -> dict[str, dict[str, Any]]:
        """``cron``: whether the lock store answers now (a Redis ``PING``; the in-process lock always does)."""
        lock = self._lock
        if lock is None:
            return {"cron": component("no lock store: the module is not started")}
        return {"cron": await probe(lock.prepare(), adapter=type(lock).__name__)}

    async def stop(self) -> None:
        """Cancel every schedule and close the lock store."""
        tasks = list(self._schedules.values())
        self._schedules.clear()
        for task in tasks:
            task.cancel()  # a cancelled schedule starts no tick from here on
        self._instants.clear()
        self._clock.close()
        await self._firings.close()  # ticks not yet run give their slots back
        for check in list(self._left_checks):
            check.cancel()
        await asyncio.gather(*self._left_checks, return_exceptions=True)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._lock_failure_log.close()
        self._missed_log.close()
        self._lost_log.close()
        self._unchecked_log.close()
        if self._lock is not None:
            await self._lock.close()
            self._lock = None

    async def register(self, trigger: TriggerInfo) -> None:
        """Start the schedule; a missing or malformed expression, a condition that is not a string, or a bad
        ``lock_key`` (:func:`lock_key_of`) rejects the trigger."""
        check_trigger_config(trigger, "cron trigger", ("condition_function_id", "lock_key"))
        expression = parse_trigger_expression(trigger.config)
        lock_key_of(trigger)  # refused at register, not at its first tick
        # Replaced before waiting for the old schedule to end: a register of the same id arriving meanwhile
        # stored its schedule, which this one then overwrote and nothing could cancel (it fired for good).
        old = self._schedules.pop(trigger.id, None)
        self._schedules[trigger.id] = asyncio.create_task(
            self._schedule(trigger, expression), name=f"cron:{trigger.id}"
        )
        if old is not None:
            old.cancel()  # asked before the new schedule first runs: the two never both fire a tick
            with contextlib.suppress(asyncio.CancelledError):
                await old

    async def unregister(self, trigger: TriggerInfo) -> None:
        """Stop the schedule of ``trigger.id`` (no-op if none)."""
        task = self._schedules.pop(trigger.id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _schedule(self, trigger: TriggerInfo, expression: CronExpression) -> None:
        schedule = asyncio.current_task()
        loop = asyncio.get_running_loop()
        tick = expression.next_after(datetime.now(UTC))
        while tick is not None:
            woken = await self._wait_for(tick)
            if woken is None:
                now = datetime.now(UTC)
                log.warning("cron %s: the wall clock went back (now %s, before tick %s); scheduling from now",
                            trigger.id, rfc3339(now), rfc3339(tick))
                tick = expression.next_after(now)
                continue
            overrun, late, woke_at = woken
            overrun += loop.time() - woke_at  # a tick held back for its turn is late as one a stall made late
            if late >= _LATE_S and overrun < _LATE_S:
                # the wall clock went forward while the schedule slept: this tick is as late as those it passed over
                now = datetime.now(UTC)
                self._skip_missed(trigger, expression, tick - timedelta(seconds=1), now, stalled=False, late=tick)
                tick = expression.next_after(now)
                continue
            following = expression.next_after(tick)
            slot = self.services.fired_calls.try_take()
            if slot is not None:
                self._firings.spawn(self._fire(trigger, tick, following, schedule, slot), slot,
                                    name=f"cron-fire:{trigger.id}")
            else:
                self.services.fired_calls.skip(f"cron {trigger.id} tick {rfc3339(tick)}")
            now = datetime.now(UTC)
            # A stall is the loop waking late, on its own clock; a wall clock set forward shows as a following tick
            # already a second late. Not this tick's lateness by the wall clock: a step forward of ±0.5 s jitter
            # (1 s) just as this tick woke on time made it look a second late, and the following tick, due that
            # very moment, was skipped as missed.
            if following is None or (overrun < _LATE_S and (now - following).total_seconds() < _LATE_S):
                tick = following
            else:  # after a long stall, skip the missed ticks rather than firing a burst of them; never silently
                self._skip_missed(trigger, expression, tick, now, stalled=overrun >= 1)
                tick = expression.next_after(now)

    async def _wait_for(self, tick: datetime) -> tuple[float, float, float] | None:
        """Wait for ``tick`` and then for a turn of the loop with room (:class:`_Turns`): then the loop's overrun on
        waking (see :meth:`_WallClock.sleep_until`), the seconds the wall clock read past ``tick`` then, and when
        (loop time) that was. ``None``: the wall clock was found set back. The first schedule waiting for an instant
        sleeps until it on the module's clock, the others wait for it (:class:`_Instant`)."""
        instant = self._instants.get(tick)
        if instant is None:
            instant = self._instants[tick] = _Instant()
        else:
            waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            instant.followers[waiter] = None
            try:
                woken = await waiter
            except BaseException:
                instant.followers.pop(waiter, None)
                if waiter.done() and not waiter.cancelled() and waiter.result() == _LEAD:
                    # handed the sleep, then cancelled before it ran: the next follower sleeps instead (lost, the
                    # instant's other schedules waited for a wake that never came, their ticks never fired)
                    self._hand_lead(instant, tick)
                raise
            instant.followers.pop(waiter, None)
            if woken != _LEAD:
                return cast("tuple[float, float, float] | None", woken)
        try:
            overrun = await self._clock.sleep_until(tick)
        except BaseException:  # cancelled (its trigger gone, the module stopping): a follower sleeps in its place
            self._hand_lead(instant, tick)
            raise
        if self._instants.get(tick) is instant:
            del self._instants[tick]
        woken = None if overrun is None else (overrun, (datetime.now(UTC) - tick).total_seconds(),
                                              asyncio.get_running_loop().time())
        await self._turns.take(list(instant.followers), woken)
        return woken

    def _hand_lead(self, instant: _Instant, tick: datetime) -> None:
        """The schedule sleeping until ``tick`` for ``instant`` leaves: a follower still waiting sleeps in its place,
        or the instant is forgotten when none waits."""
        for follower in instant.followers:
            if not follower.done():
                follower.set_result(_LEAD)
                return
        if self._instants.get(tick) is instant:
            del self._instants[tick]

    def _skip_missed(self, trigger: TriggerInfo, expression: CronExpression, last: datetime, now: datetime, *,
                     stalled: bool = True, late: datetime | None = None) -> None:
        """Count and log the ticks of ``expression`` after ``last`` up to ``now``, which a stall (``stalled``) or a
        wall clock set forward made late: exactly, by arithmetic (:meth:`CronExpression.count_between`), not by
        walking them (counted up to 1,000 before, so a long stall of an every-second schedule was reported as "at
        least 1000"). ``late``: the tick the log names as late (default ``last``, the latest tick fired). Logged
        rate-limited (one stall makes every schedule skip): the first at once, then at most one line every
        :data:`LOCK_FAILURE_LOG_INTERVAL_S` with the counts and the latest."""
        missed = expression.count_between(last, now)
        if missed:
            self.missed_ticks += missed
            late = last if late is None else late
            # The log says which: an operator chasing a stall that was a clock step looks for the wrong cause.
            cause = "the engine stalled" if stalled else "the wall clock went forward (the engine did not stall)"
            what = (f"cron {trigger.id}: {cause}: {(now - late).total_seconds():.1f} s late for tick "
                    f"{rfc3339(late)}; {missed} tick(s) up to {rfc3339(now)} skipped")
            self._missed_log.count("schedules")
            self._missed_log.lost("stalled" if stalled else "clock", what, missed)

    def _log_missed(self, counts: Mapping[str, int], latest: str | None) -> None:
        causes = [f"{counts[kind]} because {cause}" for kind, cause in (
            ("stalled", "the engine stalled"), ("clock", "the wall clock went forward")) if counts.get(kind)]
        summary = (f"{sum(counts.get(kind, 0) for kind in ('stalled', 'clock'))} tick(s) of "
                   f"{counts.get('schedules', 0)} trigger schedule(s) skipped since the last warning "
                   f"({', '.join(causes)}; {self.missed_ticks} in all)")
        if latest is None:
            log.warning("cron: %s", summary)
        else:  # the latest first: the cause and the ticks of one schedule, as a single skip was logged
            log.warning("%s [%s]", latest, summary)

    def _log_lock_failures(self, counts: Mapping[str, int], latest: str | None) -> None:
        latest_text = latest_tail(latest)
        if counts.get("lock"):
            log.warning("cron: %d tick(s) skipped since the last warning because the lock store failed (%d in all)%s",
                        counts["lock"], self.lock_failures, latest_text)

    def _log_lost(self, counts: Mapping[str, int], latest: str | None) -> None:
        latest_text = latest_tail(latest)
        if counts.get("left"):
            log.warning("cron: %d tick(s) fired by no engine since the last warning: this engine left them to the "
                        "others sharing the lock store (no worker connected here serves their function or condition) "
                        "and none fired them within %g s (%d in all)%s", counts["left"], LEFT_CHECK_S,
                        self.ticks_lost, latest_text)

    def _log_unchecked(self, counts: Mapping[str, int], latest: str | None) -> None:
        latest_text = latest_tail(latest)
        if counts.get("unchecked"):
            log.warning("cron: %d tick(s) left to the other engines sharing the lock store were not looked at (more "
                        "than %d waiting to be): whether an engine fired them is not known (%d in all)%s",
                        counts["unchecked"], MAX_LEFT_CHECKS, self.left_unchecked, latest_text)

    def _check_left(self, lock: CronLock, trigger: TriggerInfo, tick: datetime, condition: object) -> None:
        """Look, :data:`LEFT_CHECK_S` after a tick this engine left to the others, whether one of them fired it:
        only a tick no engine fired is a loss to warn of (a warning for every tick left was noise where another
        engine serves the function by design). Its own task: the tick's ``max_fired_calls`` slot is given back
        at once."""
        if len(self._left_checks) >= MAX_LEFT_CHECKS:
            self.left_unchecked += 1
            self._unchecked_log.lost("unchecked", f"cron {trigger.id} tick {rfc3339(tick)}")
            return
        needs = f"function {trigger.function_id}" + (f", condition {condition}" if condition else "")
        what = f"cron {trigger.id} tick {rfc3339(tick)}: {needs}"[:500]
        task = asyncio.get_running_loop().create_task(
            self._look_left(lock, trigger, int(tick.timestamp() * 1000), what), name=f"cron-left:{trigger.id}")
        self._left_checks.add(task)
        task.add_done_callback(self._left_checks.discard)

    async def _look_left(self, lock: CronLock, trigger: TriggerInfo, tick_ms: int, what: str) -> None:
        await asyncio.sleep(LEFT_CHECK_S)  # a delay, not a wait for an event: the other engines' time to fire it
        try:
            fired = await lock.fired(trigger.id, tick_ms, lock_key=lock_key_of(trigger))
        except Exception as exc:
            log.debug("cron: could not look whether %s was fired elsewhere: %s", what, exc)
            return
        if not fired:
            self.ticks_lost += 1
            self._lost_log.lost("left", what)

    async def _fire(self, trigger: TriggerInfo, tick: datetime, following: datetime | None,
                    schedule: asyncio.Task[Any] | None, slot: FiredSlots) -> None:
        """Fire one tick, holding the slot taken for it until the call has it (or the tick is not fired), but for
        the wait for a shared lock."""
        held = [slot]  # the slot this tick holds, if any: given back during a shared lock's round trip
        fired = False
        try:
            fired = await self._fire_taken(trigger, tick, following, schedule, held)
        finally:
            if not fired and held:
                held.pop().release()

    async def _fire_taken(self, trigger: TriggerInfo, tick: datetime, following: datetime | None,
                          schedule: asyncio.Task[Any] | None, held: list[FiredSlots]) -> bool:
        # A worker refusing the tick busy is asked again only until the following tick is due: held ticks ran
        # late, in a burst and out of order (5 within 1.4 s), where a missed tick is otherwise skipped.
        loop = asyncio.get_running_loop()
        busy_until = None if following is None else (
            loop.time() + (following - datetime.now(UTC)).total_seconds())
        lock = self._lock
        if lock is None:
            return False
        condition = trigger.config.get("condition_function_id") if isinstance(trigger.config, dict) else None
        if lock.shared and not all(self.services.has_function(needed) for needed in (trigger.function_id, condition)
                                   if isinstance(needed, str) and needed):
            # Taking the tick here would lose it (not made: nobody here serves it) where another engine sharing the
            # lock may have a worker for it: a replica whose worker was restarting took every other tick from one
            # that could deliver them.
            self.ticks_left += 1
            self._check_left(lock, trigger, tick, condition)
            return False
        if lock.shared:
            # Not held during the round trip: ticks waiting for Redis held max_fired_calls slots, and the other
            # trigger types' fired calls were skipped meanwhile ("no room under max_fired_calls 10000: 843
            # skipped"). The slot taken before showed there was room: with none, the tick was left to the others.
            held.pop().release()
        try:
            if not await lock.try_fire(trigger.id, int(tick.timestamp() * 1000), lock_key=lock_key_of(trigger)):
                return False
        except Exception as exc:
            self.lock_failures += 1
            self._lock_failure_log.lost("lock", f"cron {trigger.id} tick {rfc3339(tick)}: {type(exc).__name__}: "
                                        f"{exc}"[:500])
            return False
        if not held:
            again = self.services.fired_calls.try_take()
            if again is None:
                self.services.fired_calls.skip(f"cron {trigger.id} tick {rfc3339(tick)}")
                return False
            held.append(again)
        slot = held[0]
        payload = {
            "trigger": "cron",
            "job_id": trigger.id,
            "scheduled_time": rfc3339(tick),
            "actual_time": rfc3339(datetime.now(UTC)),
        }
        if not await self.services.condition_passes(condition, payload, busy_until=busy_until, hold_place=True):
            return False
        if self._schedules.get(trigger.id) is not schedule:
            return False  # unregistered (or replaced) while its lock or condition was awaited: its unregister returned
        return self.services.fire(trigger.function_id, payload, taken=slot, busy_until=busy_until)
