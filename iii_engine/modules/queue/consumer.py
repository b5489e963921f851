"""The consumer loop that runs one queue's jobs with retries, backoff and a dead-letter queue.

Example:
    >>> QueueConsumer.__name__
    'QueueConsumer'
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import replace

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.loss_log import BurstLog, LossLog, counts_text, latest_tail
from iii.protocol.worker_session import clip_text
from iii_streams.errors import PoolExhaustedError

from ..base import CallUnwritable, EngineError
from .settings import DEFAULT_STOP_TIMEOUT_MS, QueueSettings
from .store import WALL_STEP_MS, DeadLetter, Job, PutOff, QueueStore, clip_utf8, monotonic_ms, now_ms

DLQ_ERROR_BYTES = 1000
"""UTF-8 bytes of the handler's error a dead letter keeps (a longer one is cut, never inside a character, saying how
many bytes it was). Counted in characters before, 1,000 emoji kept 4,000 bytes (4 KB of the in-memory store)."""

STORE_FAILURE_LOG_INTERVAL_S = 30.0
"""While the store keeps failing, one warning per this many seconds sums up the failed polls."""

RETRY_LOG_BURST = 10
RETRY_LOG_INTERVAL_S = 10.0
"""A consumer logs its first :data:`RETRY_LOG_BURST` failed attempts of each this many seconds one line each (the
job, the attempt, the wait and the error); the rest are counted in one line per interval. A handler or condition
worker in a crash loop failed 400-460 attempts a second, each its own line."""

STALL_WARN_S = 60.0
"""A consumer whose every ``concurrency`` slot has been held this long by handlers that have not answered says so
(at most once per this many seconds while it lasts): the queue's other jobs wait behind them, and with no
``invocation_timeout_ms`` nothing ends such calls. Before, two hung handlers at ``concurrency: 2`` held the queue for
good without a line in the log."""

MAX_WAITING_LANES = 4096
"""Lanes put off because their job's function is not registered that a consumer remembers, to run them as soon as
the function registers; past it a lane put off waits for its next planned look (at most 5 s, or ``backoff_ms``). A
lane is forgotten once its planned look is due (that look runs it, here or on another engine sharing the store)."""

MAX_PUT_OFF_FUNCTIONS = 1024
"""Functions a consumer asks its store to put off (their jobs delayed in the store until their next look, never
claimed one by one), the most recently put off; the jobs of others are claimed and put off one at a time. As many
as the queue module tracks missing (``MAX_MISSING_TRACKED``)."""

PUT_OFF_MAX_CHARS = 64 * 1024
"""Characters of function ids a consumer has its store put off at most (the most recently put off first): what a
store keeps for them (the Redis store a hash of its own, written when they change) stays small whatever the ids."""

MAX_PUT_OFF_ROUNDS = 64
"""Claims in a row that only put lanes off before the consumer's loop comes round (its lease renewals and recovery
run between): at :data:`~iii_engine.modules.queue.store.PUT_OFF_LOOK` lanes a claim, 8,192 lanes."""


def dlq_error(exc: BaseException) -> str:
    """The ``error`` of a dead letter: the last attempt's error, ``code: message`` for an engine error (a worker's
    error body), cut to :data:`DLQ_ERROR_BYTES` of UTF-8.

    Example:
        >>> dlq_error(EngineError("invocation_failed", "card declined"))
        'invocation_failed: card declined'
        >>> dlq_error(RuntimeError())
        'RuntimeError'
    """
    text = f"{exc.code}: {exc.message}" if isinstance(exc, EngineError) else str(exc) or type(exc).__name__
    return clip_utf8(text, DLQ_ERROR_BYTES)


class JobNotReady(Exception):
    """Raised by a runner when a job cannot run yet (its function is not registered): tried again after
    ``delay_ms`` (default: the queue's ``backoff_ms``), its attempt not counted. ``waits_for``: the function it
    waits for; once :meth:`QueueConsumer.functions_changed` finds it registered, the job is tried at once.

    Example:
        >>> JobNotReady("orders::process", delay_ms=2000).delay_ms
        2000
    """

    def __init__(self, *args: object, delay_ms: int | None = None, waits_for: str | None = None) -> None:
        super().__init__(*args)
        self.delay_ms = delay_ms
        self.waits_for = waits_for


class Reported(Exception):
    """Mixin of a failure its runner has already logged once for all the jobs it hits: the consumer logs their
    attempts and dead letters at debug level only (10,000 jobs of a missing function made 10,000 warnings)."""


class StoreFailures:
    """Rate-limited log of a queue store failing and answering again, shared by the consumers of one store.

    The first failure is one error line (no traceback: that is at debug level); while failures go on, a warning
    at most every ``interval`` seconds counts them; once every consumer that failed has polled the store
    successfully again, one line says the store answers again. With Redis down, three queues logged 144 full
    tracebacks (546 KB) in 6 s.

    Example:
        >>> failures = StoreFailures(logging.getLogger("doc"))
        >>> failures.failing
        False
    """

    def __init__(self, log: logging.Logger, interval: float = STORE_FAILURE_LOG_INTERVAL_S) -> None:
        self._log = log
        self._interval = interval
        self._losses = LossLog(self._write, interval)
        self._queues: set[str] = set()  # queues whose latest poll failed
        self._since = 0.0
        self._count = 0
        self._latest = ""
        self._retry_ms = 0
        self._retry_max_ms = 0

    @property
    def failing(self) -> bool:
        """Whether a consumer's latest poll of the store failed."""
        return bool(self._queues)

    def failed(self, queue: str, exc: Exception, retry_ms: int, retry_max_ms: int | None = None) -> None:
        """A poll of ``queue`` failed with ``exc``; polled again in ``retry_ms``, backing off up to ``retry_max_ms``
        while it fails (``None``: every ``retry_ms``). The first failure of an outage is logged at once, later ones
        summed up (:data:`STORE_FAILURE_LOG_INTERVAL_S`).

        Example:
            >>> failures = StoreFailures(logging.getLogger("doc"))
            >>> failures.failed("q", ConnectionError("Connect call failed"), 100, 5000)
            >>> failures.failing
            True
            >>> failures.answered("q"); failures.failing
            False
            >>> failures.close()
        """
        self._log.debug("queue %s: store failed", queue, exc_info=exc)
        if not self._queues:
            self._since = time.monotonic()
            self._count = 0
        self._queues.add(queue)
        self._count += 1
        self._latest = f"queue {queue}: {type(exc).__name__}: {clip_text(str(exc))}"
        self._retry_ms = retry_ms
        self._retry_max_ms = retry_ms if retry_max_ms is None else retry_max_ms
        self._losses.lost(queue, self._latest)

    def answered(self, queue: str) -> None:
        """A poll of ``queue`` succeeded (cheap when nothing failed)."""
        if not self._queues or queue not in self._queues:
            return
        self._queues.discard(queue)
        if not self._queues:
            # the failures not summed up yet are in this line's count; a "still failing" line just before it was
            # wrong, and a new outage is told at once, as the first one was
            self._losses.reset()
            self._log.warning("queue store answers again after %d failed poll(s) over %.1f s",
                              self._count, time.monotonic() - self._since)

    def forget(self, queue: str) -> None:
        """``queue``'s consumer stopped: its failed poll no longer holds the "answers again" line back (a topic
        consumer stopped while the store failed would have kept it back for good)."""
        if queue in self._queues:
            self._queues.discard(queue)
            if not self._queues:
                # the outage is not known to be over: its count so far is said, then the next one starts afresh
                self._losses.reset()
                self._log.warning("queue store: the last consumer whose polls failed stopped (%s) after %d failed "
                                  "poll(s) over %.1f s", queue, self._count, time.monotonic() - self._since)

    def _write(self, counts: Mapping[str, int], latest: str | None) -> None:
        failed = sum(counts.values())
        if latest is not None and failed == 1:
            if self._retry_max_ms > self._retry_ms:
                retrying = f"retrying in {self._retry_ms} ms, then less often (at most every {self._retry_max_ms} ms)"
            else:
                retrying = f"retrying every {self._retry_ms} ms"
            self._log.error("queue store failed (%s); %s, failures summed up every %.0f s (tracebacks at debug level)",
                            latest, retrying, self._interval)
            return
        self._log.warning("queue store still failing: %d failed poll(s) of %d queue(s) since the last warning; "
                          "latest: %s", failed, len(counts), latest or self._latest)

    def close(self) -> None:
        """Stop: failures not logged yet are logged now (their timer belongs to this loop)."""
        self._losses.close()


Runner = Callable[[Job], Awaitable[None]]


class QueueConsumer:
    """Claims jobs of one store queue and runs them, at most ``concurrency`` at a time.

    ``run(job)`` raising means the attempt failed: the job is retried after its backoff, or moved to the
    dead-letter queue once ``max_retries`` attempts failed. ``can_claim()`` false pauses claiming (a topic
    with no subscriber keeps its jobs). ``on_idle()`` is told when the last job running here has finished
    (stored as done, retried or dead).

    ``skip()`` names functions whose jobs this consumer leaves in the store (another engine sharing it serves them,
    this one does not); claims move past them.

    ``look_for(function_id, now_ms)`` says until when the jobs of a function are put off (its worker is missing, and
    a job of it was put off here lately), or ``None``: the store delays such lanes itself at each claim, at most
    :data:`MAX_PUT_OFF_FUNCTIONS` functions, instead of handing their jobs over one at a time.

    ``poll_idle`` false: nothing but this engine changes the store, and wakes the consumer when it does (the
    in-memory store, :attr:`MemoryQueueStore.shared` false), so an idle queue is never polled; else an idle queue is
    polled at ``poll_interval_ms``, doubling per poll that found nothing up to ``idle_poll_max_ms``.

    ``store_failures`` is where failed polls are told (shared by the consumers of one store, so an outage logs a
    line, not one per queue and poll); by default the consumer's own.

    Example:
        >>> from iii_engine.modules.queue.store import MemoryQueueStore
        >>> async def run(job: Job) -> None: ...
        >>> consumer = QueueConsumer(MemoryQueueStore(), "q", QueueSettings(), run)
    """

    def __init__(
        self,
        store: QueueStore,
        queue: str,
        settings: QueueSettings,
        run: Runner,
        *,
        can_claim: Callable[[], bool] = lambda: True,
        on_idle: Callable[[], None] = lambda: None,
        log: logging.Logger | None = None,
        stop_timeout_ms: int = DEFAULT_STOP_TIMEOUT_MS,
        store_failures: StoreFailures | None = None,
        skip: Callable[[], Collection[str]] = tuple,
        look_for: Callable[[str, int], int | None] = lambda function_id, now: None,
        poll_idle: bool = True,
    ) -> None:
        if stop_timeout_ms < 1:
            raise ValueError(f"stop_timeout_ms must be >= 1, got {stop_timeout_ms}")
        self.store = store
        self.queue = queue
        self.settings = settings
        self._run = run
        self._can_claim = can_claim
        self._skip = skip
        self._look_for = look_for
        # functions whose jobs were put off here lately, the latest last: the store puts their lanes off at each claim
        self._putting_off: OrderedDict[str, None] = OrderedDict()
        self._bring: set[str] = set()  # functions another engine serves: their remembered lanes are brought forward
        self._looks = PutOff()  # the looks last asked for (see _put_off_looks), with the changes the store is to get
        self._looks_chars = 0  # characters of the function ids in _looks
        self._look_heap: list[tuple[int, str]] = []  # (look, function) of _looks, with stale entries skipped
        self._looks_changes = -1  # the count of changes when all were last asked for
        self._looks_stale = False  # all to be asked for again (too many stale entries, or room to make)
        self._wall_lead: int | None = None  # the wall clock's lead on the monotonic one when the looks were asked
        self._on_idle = on_idle
        self._log = log or logging.getLogger(__name__)
        self._retry_log = BurstLog(RETRY_LOG_BURST, RETRY_LOG_INTERVAL_S, self._log.info,
                                   LossLog(self._log_retry_counts, RETRY_LOG_INTERVAL_S))
        # jobs dead-lettered at once because their call cannot be written: as many lines, at most (10,000 such
        # jobs wrote 10,000 warnings in a second)
        self._unwritable_log = BurstLog(RETRY_LOG_BURST, RETRY_LOG_INTERVAL_S, self._log.warning,
                                        LossLog(self._log_unwritable_counts, RETRY_LOG_INTERVAL_S))
        # jobs dead-lettered after their last attempt: as many lines, at most (5,000 failing jobs with max_retries 1
        # wrote 5,000 warnings, each with the handler's whole error: 500 MB of log for errors of 100,000 characters)
        self._dead_log = BurstLog(RETRY_LOG_BURST, RETRY_LOG_INTERVAL_S, self._log.warning,
                                  LossLog(self._log_dead_counts, RETRY_LOG_INTERVAL_S))
        self._owns_failures = store_failures is None
        self.store_failures = StoreFailures(self._log) if store_failures is None else store_failures
        self._wake = asyncio.Event()
        # Whether anything but this engine changes the store (Redis, shared by engines): only then is an idle queue
        # polled at all, less and less often (idle_poll_max_ms); the module's in-memory store changes only through
        # this engine, which wakes the consumer (push, subscription, redrive, a job finished). Polling every
        # poll_interval_ms, 10,000 idle topics took 0.94 of a core.
        self._shared = poll_idle
        self._idle_polls = 0  # polls in a row that found nothing to claim: the wait before the next one grows
        self._claim_due: tuple[bool, int | None] = (False, None)  # the last claim's (due_known, next_due_ms)
        self._stop_timeout_ms = stop_timeout_ms
        self._inflight: dict[str, tuple[Job, asyncio.Task[None]]] = {}
        # Jobs whose handler is running: the only ones a stop cancels. A job task is cancelled only there, so the
        # store call that finishes or gives back its job (in the same task, no task of its own) is never cut short
        # before the stop's bound (else the job would stay active until its lease ran out, then run again).
        self._handling: dict[str, float] = {}  # (and when each handler began, loop time: see _note_stall)
        self._stall_said = float("-inf")  # when _note_stall last warned (loop time)
        self._loop_task: asyncio.Task[None] | None = None
        self._stopped = False
        self._stopping = asyncio.Event()  # set with _stopped: ends the finishing steps' backoffs (_guarded)
        self._failures = 0  # polls of the store failed in a row: the wait before the next one grows with them
        # lane -> (the function its job waits for, its planned look: wall-clock ms), for lanes put off with
        # JobNotReady.waits_for, at most MAX_WAITING_LANES; indexed by function too, so a change costs one look per
        # function waited for, not one per lane (4 queues of 4,200 lanes and 2,000 registrations took 32 s of CPU)
        self._waiting: dict[str, tuple[str, int]] = {}
        self._waiting_for: dict[str, set[str]] = {}
        # (planned look, lane) of the entries above, with stale pairs skipped as they come out: an entry goes once
        # its look is due, whoever ran its job (lanes another engine ran stayed for good and filled the bound)
        self._waiting_looks: list[tuple[int, str]] = []
        self._registered: Callable[[str], bool] = lambda function_id: False
        self._changes = 0  # functions_changed calls so far
        self._look_due = False  # a remembered lane's function is registered: bring its lanes forward

    @property
    def running(self) -> int:
        """Jobs this consumer has claimed and not finished."""
        return len(self._inflight)

    def wake(self) -> None:
        """Look for work now (a job was pushed or a subscriber appeared); an idle queue is polled at
        ``poll_interval_ms`` again."""
        self._idle_polls = 0
        self._wake.set()

    def functions_changed(self, registered: Callable[[str], bool]) -> None:
        """The registered functions changed (``registered(function_id)`` tells which are): jobs put off because
        their function was missing run now if it is registered, not at their next planned look.

        Example (a job put off for a minute runs as soon as its function registers):
            >>> import asyncio
            >>> from iii_engine.modules.queue.store import MemoryQueueStore
            >>> async def registered_later() -> object:
            ...     registered: set[str] = set()
            ...     put_off, ran = asyncio.Event(), asyncio.Queue[object](1)
            ...     async def run(job: Job) -> None:
            ...         if job.function_id not in registered:
            ...             put_off.set()
            ...             raise JobNotReady(delay_ms=60_000, waits_for=job.function_id)
            ...         ran.put_nowait(job.data)
            ...     store = MemoryQueueStore()
            ...     consumer = QueueConsumer(store, "q", QueueSettings(), run)
            ...     await store.push("q", Job.new("q", "orders::pay", "paid"))
            ...     consumer.start()
            ...     try:
            ...         await asyncio.wait_for(put_off.wait(), 5)
            ...         registered.add("orders::pay")
            ...         consumer.functions_changed(registered.__contains__)
            ...         return await asyncio.wait_for(ran.get(), 5)
            ...     finally:
            ...         await consumer.stop()
            >>> asyncio.run(registered_later())
            'paid'
        """
        self._registered = registered
        self._changes += 1
        self._expire_waiting(now_ms())
        # one look per function waited for, and a wake-up only when one of them is registered: a change to other
        # functions costs nothing per lane and no store round trip
        if any(registered(function_id) for function_id in self._waiting_for):
            self._look_due = True
            self._wake.set()

    @property
    def putting_off(self) -> list[str]:
        """The functions whose jobs the store puts off at this consumer's claims (at most
        :data:`MAX_PUT_OFF_FUNCTIONS`)."""
        return list(self._putting_off)

    def left_to_others(self, function_id: str) -> None:
        """Another engine sharing the store runs ``function_id``: its jobs are no longer put off here, and those put
        off already are brought forward for that engine to claim (not left until their planned look)."""
        self._putting_off.pop(function_id, None)
        self._drop_look(function_id)
        if function_id in self._waiting_for:
            self._bring.add(function_id)
            self._look_due = True
            self._wake.set()

    def start(self) -> None:
        """Start the consumer loop."""
        self._loop_task = asyncio.create_task(self._loop(), name=f"queue-consumer:{self.queue}")

    async def stop(self, deadline: float | None = None) -> None:
        """Stop claiming; store the outcome of every job whose handler has finished (done, retry or dead letter)
        and give back those still running, waiting at most ``stop_timeout_ms`` for the store (or until ``deadline``,
        loop time, when the stop is part of a longer one with a single bound). A job the store has not finished or
        taken back by then stays active and runs again once its lease runs out (logged)."""
        try:
            await self._stop(deadline)
        finally:
            self._retry_log.losses.close()
            self._unwritable_log.losses.close()
            self._dead_log.losses.close()
            self.store_failures.forget(self.queue)
            if self._owns_failures:
                self.store_failures.close()

    async def _stop(self, deadline: float | None) -> None:
        self._stopped = True
        self._stopping.set()
        self._wake.set()
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + self._stop_timeout_ms / 1000
        # A turn later: a handler whose answer came in this turn (its task's wake-up is queued) ends as done, not
        # cancelled and given back to run a second time.
        loop.call_soon(self._cancel_handlers)
        # The loop ends on the flag after its current store call, not by a cancellation: a claim cut short could
        # leave the job it took active with nobody running it.
        pending = self._unfinished()
        while pending and (left := deadline - loop.time()) > 0:
            await asyncio.wait(pending, timeout=left)
            pending = self._unfinished()
        if not pending:
            return
        self._log.warning(
            "queue %s: the store did not answer within the stop's %d ms; %d job(s) left active run again once their "
            "lease (%d ms) runs out", self.queue, self._stop_timeout_ms, self.running, self.settings.lease_ms)
        for task in pending:
            task.cancel()  # not awaited: a store client that swallows the cancellation must not hold the stop

    def _cancel_handlers(self) -> None:
        for job_id in self._handling:
            entry = self._inflight.get(job_id)
            if entry is not None:
                entry[1].cancel()

    def _unfinished(self) -> set[asyncio.Task[None]]:
        tasks = {task for _, task in self._inflight.values()}
        if self._loop_task is not None:
            tasks.add(self._loop_task)
        return {task for task in tasks if not task.done()}

    async def _loop(self) -> None:
        # On the monotonic clock: a step of the wall clock neither renews leases late (a step back of 120 s put the
        # next renewal 120 s off, past a 60 s lease, and another engine ran the job again) nor recovers at once.
        maintenance_due = 0
        while not self._stopped:
            self._wake.clear()
            try:
                if monotonic_ms() >= maintenance_due:
                    await self._maintain()
                    # a random 50-100 % of a third of the lease: the consumers of many topics started together do
                    # not renew and recover in step (1,000 of them at once queued on Redis's connection pool)
                    maintenance_due = monotonic_ms() + max(
                        round(self.settings.lease_ms / 3 * random.uniform(0.5, 1)), 1)
                self._expire_waiting(now_ms())
                if self._look_due and self._waiting:
                    await self._bring_forward()
                await self._fill()
                # (the idle wait reads the wall clock, as the due times it compares with do)
                timeout = await self._idle_timeout(now_ms() + maintenance_due - monotonic_ms())
            except Exception as exc:
                self._failures += 1
                self._idle_polls = 0  # once the store answers again, polled at poll_interval_ms
                longest = self.settings.store_retry_ms(self._failures)
                # 50-100 % of it: consumers that failed together (one store for all) do not poll it in step
                retry_ms = random.uniform(longest / 2, longest)
                self.store_failures.failed(self.queue, exc, round(retry_ms), self.settings.store_retry_cap_ms)
                timeout = retry_ms / 1000
            else:
                self._failures = 0
                self.store_failures.answered(self.queue)
            # A timer that sets the wake event; asyncio.wait_for can swallow a cancellation here on 3.11.
            timer = None if timeout is None else asyncio.get_running_loop().call_later(timeout, self._wake.set)
            try:
                await self._wake.wait()
            finally:
                if timer is not None:
                    timer.cancel()

    async def _maintain(self) -> None:
        # the store gets every look again now and then: one that lost what it held (a Redis restarted empty) puts
        # the jobs off again within a lease, not only once their functions are asked about anew
        self._looks.resend()
        now = now_ms()
        lanes = [job.lane for job, _ in self._inflight.values()]
        await self.store.renew(self.queue, lanes, deadline_ms=now + self.settings.lease_ms)
        recovered = await self.store.recover(self.queue, now_ms=now)
        if recovered:
            self._log.warning("queue %s: %d job(s) whose lease ran out returned to the queue, to run again (their "
                              "engine stopped renewing them: gone, stalled, or unable to store their outcome)",
                              self.queue, recovered)
        await self._note_stall()

    async def _note_stall(self) -> None:
        """Warn (at most every :data:`STALL_WARN_S`) while every ``concurrency`` slot is held by a handler that has
        run for :data:`STALL_WARN_S` or more and other jobs of the queue are waiting (a queue whose jobs are long
        by nature, with none waiting, says nothing)."""
        handling = self._handling
        if len(handling) < self.settings.concurrency:
            return
        now = asyncio.get_running_loop().time()
        if now - max(handling.values()) < STALL_WARN_S or now - self._stall_said < STALL_WARN_S:
            return
        waiting = (await self.store.counts(self.queue)).waiting
        if not waiting:
            return
        self._stall_said = now
        oldest = min(handling, key=handling.__getitem__)
        entry = self._inflight.get(oldest)
        function = entry[0].function_id if entry is not None else None
        self._log.warning(
            "queue %s: all %d of its concurrency slots have been held for over %g s by handlers that have not "
            "answered yet (the longest, job %s%s, for %.0f s), and %d job(s) wait for them, their leases renewed "
            "while they run. If a handler may hang, set the engine's invocation_timeout_ms to end calls nobody "
            "answers", self.queue, self.settings.concurrency, STALL_WARN_S, oldest,
            f" of {clip_text(function, 200)}" if function else "", now - handling[oldest], waiting)

    async def _bring_forward(self) -> None:
        """Make the lanes whose function is now registered due now (a lane whose job is still being put off is
        left: its own step looks again once the job is stored)."""
        self._look_due = False
        held = {job.lane for job, _ in self._inflight.values()}
        bring, self._bring = self._bring, set()
        lanes = [lane for function_id, waiting in self._waiting_for.items()
                 if function_id in bring or self._registered(function_id) for lane in waiting if lane not in held]
        if not lanes:
            return
        try:
            await self.store.bring_forward(self.queue, lanes, due_ms=now_ms())
        except BaseException:
            self._look_due = True  # tried again at the next poll
            self._bring |= bring
            raise
        for lane in lanes:
            self._forget_waiting(lane)

    def _remember_waiting(self, lane: str, function_id: str, look_ms: int) -> bool:
        """Remember ``lane`` as waiting for ``function_id`` until ``look_ms``; false past MAX_WAITING_LANES."""
        self._expire_waiting(now_ms())
        if lane not in self._waiting and len(self._waiting) >= MAX_WAITING_LANES:
            return False
        self._forget_waiting(lane)
        self._waiting[lane] = (function_id, look_ms)
        self._waiting_for.setdefault(function_id, set()).add(lane)
        if len(self._waiting_looks) >= 2 * MAX_WAITING_LANES:
            # rebuilt from the entries alone: the pairs lanes remembered again left behind stay within the bound
            self._waiting_looks = [(look, key) for key, (_, look) in self._waiting.items()]
            heapq.heapify(self._waiting_looks)
        else:
            heapq.heappush(self._waiting_looks, (look_ms, lane))
        return True

    def _forget_waiting(self, lane: str) -> None:
        entry = self._waiting.pop(lane, None)
        if entry is not None:
            lanes = self._waiting_for[entry[0]]
            lanes.discard(lane)
            if not lanes:
                del self._waiting_for[entry[0]]

    def _expire_waiting(self, now: int) -> None:
        """Forget the lanes whose planned look is due: that look runs their job (a function registered since
        would move nothing), and the lane may be another engine's to run."""
        looks = self._waiting_looks
        while looks and looks[0][0] <= now:
            look, lane = heapq.heappop(looks)
            entry = self._waiting.get(lane)
            if entry is not None and entry[1] == look:
                self._forget_waiting(lane)

    async def _fill(self) -> None:
        rounds = 0
        self._claim_due = (False, None)
        while not self._stopped and self._can_claim() and len(self._inflight) < self.settings.concurrency:
            now, changes = now_ms(), self._changes
            # a store shared with other engines: their functions' jobs are left to them; jobs of functions missing
            # here are put off in the store
            claim = await self.store.claim_next(self.queue, now_ms=now, lease_ms=self.settings.lease_ms,
                                                skip_functions=self._skip(), put_off=self._put_off_looks(now))
            if claim.put_off:
                self._put_off_in_store(claim.put_off, changes)
            job = claim.job
            if job is None:
                self._claim_due = (claim.due_known, claim.next_due_ms)
                rounds += 1
                if claim.more and rounds < MAX_PUT_OFF_ROUNDS:
                    continue
                if claim.more:
                    self._wake.set()  # on after the loop's maintenance, not after a poll interval
                return
            self._forget_waiting(job.lane)  # looked at now
            self._idle_polls = 0
            task = asyncio.create_task(self._work(job), name=f"queue-job:{job.id}")
            self._inflight[job.id] = (job, task)

    def _put_off_looks(self, now: int) -> PutOff:
        """The functions put off lately that are still to be put off, with their next look. Only the functions whose
        look has passed (their lanes come due, to be put off anew, not claimed one by one) are asked again; all of
        them when the registered functions changed."""
        if self._changes != self._looks_changes or self._looks_stale or self._wall_stepped(now):
            return self._ask_all(now)
        heap = self._look_heap
        while heap and heap[0][0] <= now:
            look, function_id = heapq.heappop(heap)
            if self._looks.get(function_id) != look:
                continue  # dropped, or asked again since
            again = self._look_for(function_id, now) if function_id in self._putting_off else None
            if again is None or again <= now:
                self._drop_look(function_id)
                if again is None:
                    self._putting_off.pop(function_id, None)
            else:
                self._looks.set(function_id, again)
                heapq.heappush(heap, (again, function_id))
        return self._looks

    def _wall_stepped(self, now: int) -> bool:
        """Whether the wall clock stepped (by more than :data:`WALL_STEP_MS`) since this was last asked: the looks,
        kept on the wall clock, are then all asked for again (stepped back 120 s, they put the jobs of a missing
        function off for two minutes past its grace: the in-memory store keeps its due times on the monotonic clock,
        but takes a look handed to it as it is)."""
        lead = now - monotonic_ms()
        stepped = self._wall_lead is not None and abs(lead - self._wall_lead) > WALL_STEP_MS
        if self._wall_lead is None or stepped:
            self._wall_lead = lead
        return stepped

    def _ask_all(self, now: int) -> PutOff:
        looks: dict[str, int] = {}
        chars = 0
        for function_id in reversed(list(self._putting_off)):
            look = self._look_for(function_id, now)
            if look is None:
                del self._putting_off[function_id]
            elif look > now:
                if chars + len(function_id) > PUT_OFF_MAX_CHARS:
                    break
                chars += len(function_id)
                looks[function_id] = look
        for function_id in [function_id for function_id in self._looks if function_id not in looks]:
            self._looks.drop(function_id)
        for function_id, look in looks.items():
            self._looks.set(function_id, look)
        self._looks_chars = chars
        self._look_heap = [(look, function_id) for function_id, look in looks.items()]
        heapq.heapify(self._look_heap)
        self._looks_changes, self._looks_stale = self._changes, False
        return self._looks

    def _note_put_off(self, function_id: str) -> None:
        """A job of ``function_id`` was put off here: its next jobs are put off by the store (its look is added at
        once, not when the looks are next asked for)."""
        if function_id in self._putting_off:
            self._putting_off.move_to_end(function_id)
            return
        self._putting_off[function_id] = None
        if len(self._putting_off) > MAX_PUT_OFF_FUNCTIONS:
            self._drop_look(self._putting_off.popitem(last=False)[0])
        now = now_ms()
        look = self._look_for(function_id, now)
        if look is None or look <= now:
            return
        if self._looks_chars + len(function_id) <= PUT_OFF_MAX_CHARS:
            self._looks.set(function_id, look)
            self._looks_chars += len(function_id)
            heapq.heappush(self._look_heap, (look, function_id))
            if len(self._look_heap) > 2 * len(self._looks) + 64:  # entries of dropped functions
                self._looks_stale = True
        # else left out until the looks are all asked for again: marking them stale here asked for all 1,024 at
        # nearly every claim once long ids filled the characters (3,000 functions of 120-character ids: 62.7 s)

    def _drop_look(self, function_id: str) -> None:
        if function_id in self._looks:
            self._looks.drop(function_id)
            self._looks_chars -= len(function_id)

    def _put_off_in_store(self, put_off: tuple[tuple[str, str, int], ...], changes: int) -> None:
        for lane, function_id, look_ms in put_off:
            self._remember_waiting(lane, function_id, look_ms)
        # a change came while the claim ran, and a function it put off is registered now: look again
        if self._changes != changes and any(self._registered(function_id) for _, function_id, _ in put_off):
            self._look_due = True
            self._wake.set()

    async def _idle_timeout(self, maintenance_due: int) -> float | None:
        """Seconds until the loop must come round by itself (``None``: only when woken): the next maintenance while
        jobs run here or other engines share the store; the next delayed job's due time while a job could be
        claimed; and, on a shared store, the next idle poll (``poll_interval_ms`` doubling per poll that found
        nothing, up to ``idle_poll_max_ms``) for jobs another engine pushed, which cannot wake this one. A topic
        nobody subscribes to here, or a queue at its ``concurrency``, is not polled: a subscription or a finished
        job wakes it."""
        deadline: int | None = maintenance_due if self._inflight or self._shared else None
        if self._can_claim() and len(self._inflight) < self.settings.concurrency:
            if self._shared:
                self._idle_polls += 1
                poll = now_ms() + self.settings.idle_poll_ms(self._idle_polls)
                deadline = poll if deadline is None else min(deadline, poll)
            known, due = self._claim_due
            if not known:  # (a claim that found nothing ready has read it: one round trip per idle poll, not two)
                due = await self.store.next_due_ms(self.queue)
            if due is not None:
                deadline = due if deadline is None else min(deadline, due)
        return None if deadline is None else max(deadline - now_ms(), 1) / 1000

    async def _work(self, job: Job) -> None:
        try:
            if self._stopped:  # claimed as the stop began, before this task ran: give it back now, not after its lease
                await self._guarded(lambda: self.store.release(self.queue, job), job, leaves_it_heading=True)
                return
            self._handling[job.id] = asyncio.get_running_loop().time()
            try:
                await self._run(job)
            finally:
                # (pop: a job whose lease ran out while its store was down can be claimed again and run twice here)
                self._handling.pop(job.id, None)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._stopped or (task is not None and task.cancelling()):
                await self._guarded(lambda: self.store.release(self.queue, job), job, leaves_it_heading=True)
                raise
            # The handler's own (an inner call of its was cancelled), not this task's: a failed attempt. Given back
            # instead, the job was claimed again at once, its attempts never counted: a busy loop for ever.
            await self._failed(job, RuntimeError("the handler raised CancelledError"))
        except JobNotReady as wait:
            delay = self.settings.backoff_ms if wait.delay_ms is None else wait.delay_ms
            changes, look_ms = self._changes, now_ms() + delay
            await self._guarded(lambda: self.store.retry(self.queue, job, due_ms=look_ms), job, leaves_it_heading=True)
            if wait.waits_for is not None:
                self._note_put_off(wait.waits_for)
                # a change came while the job was put off, and its function is registered now: look again
                if self._remember_waiting(job.lane, wait.waits_for, look_ms) and self._changes != changes \
                        and self._registered(wait.waits_for):
                    self._look_due = True
        except Exception as exc:
            await self._failed(job, exc)
        else:
            await self._guarded(lambda: self.store.ack(self.queue, job), job)
        finally:
            self._inflight.pop(job.id, None)
            self._wake.set()
            if not self._inflight:
                self._on_idle()

    async def _guarded(self, step: Callable[[], Awaitable[None]], job: Job, *, leaves_it_heading: bool = False) -> None:
        """Run ``step()``, the store call that stores ``job``'s outcome or gives it back, again after each failure
        (the failed polls' backoff) until it is done, for at most the job's lease from the first failure. The job
        stays in flight meanwhile, its lease renewed with the others' while the store answers. Given up on, its lane
        stays active and the job runs again once its lease expires (one line). A stop ends the tries: the stop's own
        bound is short, and its warning tells of the jobs left active.

        A step acts only while the job heads its lane, so one that took the job off (done, dead letter) is harmless
        to run again. One that ``leaves_it_heading`` (a retry, a give-back) is run again only after a failure that
        proves it was never sent (:class:`~iii_streams.errors.PoolExhaustedError`): applied with its answer lost, the
        job could be claimed again meanwhile, and a second retry took that claim back (the job ran a third time, two
        runs at once: 6-18 of 200 jobs whose answers were cut).

        Why: once, a finish that failed (a pool exhausted by a burst of enqueues with Redis healthy, a short stall)
        ran its job a second time: 19-20 of 400 jobs per burst, announced as jobs "of a lost engine"."""
        loop = asyncio.get_running_loop()
        failures, give_up_at = 0, 0.0
        while True:
            try:
                await step()
            except Exception as exc:
                failures += 1
                now = loop.time()
                if failures == 1:
                    give_up_at = now + self.settings.lease_ms / 1000
                maybe_applied = leaves_it_heading and not isinstance(exc, PoolExhaustedError)
                # (the traceback at debug level, as a failed poll's: with Redis down, four jobs in flight logged
                # seven records and 18 chained tracebacks beside the poll's one rate-limited line)
                self._log.debug("queue %s: store failed while finishing or releasing job %s (try %d)", self.queue,
                                job.id, failures, exc_info=exc)
                retry_s = self.settings.store_retry_ms(failures) / 1000 * random.uniform(0.5, 1)
                if not self._stopped and not maybe_applied and now + retry_s < give_up_at:
                    # a backoff (nothing tells when the store answers again), cut short by a stop
                    stopping = asyncio.ensure_future(self._stopping.wait())
                    try:
                        await asyncio.wait((stopping,), timeout=retry_s)
                    finally:
                        stopping.cancel()
                    continue
                tries = f"{failures} {'try' if failures == 1 else 'tries'}"
                self._log.error("queue %s: store failed while finishing or releasing job %s (%s: %s), %s; it runs "
                                "again once its lease expires (traceback at debug level)", self.queue, job.id,
                                type(exc).__name__, clip_text(str(exc)),
                                f"{tries}, the last at the stop" if self._stopped else
                                f"{tries}, not tried again (it may have been applied)" if maybe_applied else
                                f"{tries} over its lease")
                return
            if failures:
                self._log.info("queue %s: job %s finished or released once the store answered again (%d failed "
                               "tries)", self.queue, job.id, failures)
            return

    async def _failed(self, job: Job, exc: Exception) -> None:
        attempts = job.attempts + 1
        tried = replace(job, attempts=attempts)
        reported = isinstance(exc, Reported)
        # every line quotes the error as the dead letter keeps it, cut to DLQ_ERROR_BYTES (it was whole: 100 KB each)
        error = dlq_error(exc)
        if isinstance(exc, CallUnwritable):  # the same data fails the same way on every try: no retry helps
            self._said(f"queue {self.queue}: job {job.id} failed and was moved to the DLQ at once (attempt {attempts} "
                       f"of {self.settings.max_retries}): its call cannot be written for its worker, so no retry "
                       f"could succeed: {error}", False, self._unwritable_log, "job(s)", logging.WARNING)
            letter = DeadLetter(tried, error, now_ms())
            await self._guarded(lambda: self.store.dead(self.queue, letter), job)
            return
        if attempts >= self.settings.max_retries:
            line = f"queue {self.queue}: job {job.id} failed {attempts} time(s), moved to the DLQ: {error}"
            self._said(line, reported, self._dead_log, "dead letter(s)", logging.WARNING)
            letter = DeadLetter(tried, error, now_ms())
            await self._guarded(lambda: self.store.dead(self.queue, letter), job)
            return
        delay = self.settings.backoff_for(attempts)
        line = f"queue {self.queue}: job {job.id} attempt {attempts} failed, retry in {delay} ms: {error}"
        self._said(line, reported, self._retry_log, "failed attempt(s)", logging.INFO)
        due_ms = now_ms() + delay
        await self._guarded(lambda: self.store.retry(self.queue, tried, due_ms=due_ms), job, leaves_it_heading=True)

    def _said(self, line: str, reported: bool, burst: BurstLog, kind: str, level: int) -> None:
        """Log ``line`` (a job's failed attempt): at debug level when its runner reported the failure already, past
        the stop at ``level`` (a handler that outlived its cancel: no count is written after the stop's flush),
        else through ``burst`` (one line each up to its burst, the rest counted as ``kind``)."""
        if reported:
            self._log.debug("%s", line)
        elif self._stopped:
            self._log.log(level, "%s", line)
        else:
            burst.note(kind, line)

    def _log_unwritable_counts(self, counts: Mapping[str, int], latest: str | None) -> None:
        self._log.warning("queue %s: %s moved to the DLQ at once, their calls unwritable, not logged one by one (past "
                          "%d lines per %g s)%s", self.queue, counts_text(counts), RETRY_LOG_BURST,
                          RETRY_LOG_INTERVAL_S, latest_tail(latest))

    def _log_dead_counts(self, counts: Mapping[str, int], latest: str | None) -> None:
        self._log.warning("queue %s: %s after their last attempt, not logged one by one (past %d lines per %g s); "
                          "each is kept with its error in the DLQ%s", self.queue, counts_text(counts),
                          RETRY_LOG_BURST, RETRY_LOG_INTERVAL_S, latest_tail(latest))

    def _log_retry_counts(self, counts: Mapping[str, int], latest: str | None) -> None:
        what = counts_text(counts)
        latest_text = latest_tail(latest)
        self._log.info("queue %s: %s not logged one by one (past %d lines per %g s), each retried after its "
                       "backoff%s", self.queue, what, RETRY_LOG_BURST, RETRY_LOG_INTERVAL_S, latest_text)
