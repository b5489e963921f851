"""The consumer loop that runs one queue's jobs with retries, backoff and a dead-letter queue.

Example:
    >>> QueueConsumer.__name__
    'QueueConsumer'
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from .settings import DEFAULT_STOP_TIMEOUT_MS, QueueSettings
from .store import DeadLetter, Job, QueueStore, now_ms

DLQ_ERROR = "function call failed"


class JobNotReady(Exception):
    """Raised by a runner when a job cannot run yet (its function is not registered): retried, attempt not counted."""


Runner = Callable[[Job], Awaitable[None]]


class QueueConsumer:
    """Claims jobs of one store queue and runs them, at most ``concurrency`` at a time.

    ``run(job)`` raising means the attempt failed: the job is retried after its backoff, or moved to the
    dead-letter queue once ``max_retries`` attempts failed. ``can_claim()`` false pauses claiming (a topic
    with no subscriber keeps its jobs). ``on_idle()`` is told when the last job running here has finished
    (stored as done, retried or dead).

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
    ) -> None:
        if stop_timeout_ms < 1:
            raise ValueError(f"stop_timeout_ms must be >= 1, got {stop_timeout_ms}")
        self.store = store
        self.queue = queue
        self.settings = settings
        self._run = run
        self._can_claim = can_claim
        self._on_idle = on_idle
        self._log = log or logging.getLogger(__name__)
        self._wake = asyncio.Event()
        self._stop_timeout_ms = stop_timeout_ms
        self._inflight: dict[str, tuple[Job, asyncio.Task[None]]] = {}
        # Jobs whose handler is running: the only ones a stop cancels. A job task is cancelled only there, so the
        # store call that finishes or gives back its job (in the same task, no task of its own) is never cut short
        # before the stop's bound (else the job would stay active until its lease ran out, then run again).
        self._handling: set[str] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def running(self) -> int:
        """Jobs this consumer has claimed and not finished."""
        return len(self._inflight)

    def wake(self) -> None:
        """Look for work now (a job was pushed or a subscriber appeared)."""
        self._wake.set()

    def start(self) -> None:
        """Start the consumer loop."""
        self._loop_task = asyncio.create_task(self._loop(), name=f"queue-consumer:{self.queue}")

    async def stop(self, deadline: float | None = None) -> None:
        """Stop claiming; store the outcome of every job whose handler has finished (done, retry or dead letter)
        and give back those still running, waiting at most ``stop_timeout_ms`` for the store (or until ``deadline``,
        loop time, when the stop is part of a longer one with a single bound). A job the store has not finished or
        taken back by then stays active and runs again once its lease runs out (logged)."""
        self._stopped = True
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
        maintenance_due = 0
        while not self._stopped:
            self._wake.clear()
            try:
                if now_ms() >= maintenance_due:
                    await self._maintain()
                    maintenance_due = now_ms() + self.settings.lease_ms // 3
                await self._fill()
                timeout = await self._idle_timeout(maintenance_due)
            except Exception:
                self._log.exception("queue %s: store failed; retrying", self.queue)
                timeout = self.settings.poll_interval_ms / 1000
            # A timer that sets the wake event; asyncio.wait_for can swallow a cancellation here on 3.11.
            timer = asyncio.get_running_loop().call_later(timeout, self._wake.set)
            try:
                await self._wake.wait()
            finally:
                timer.cancel()

    async def _maintain(self) -> None:
        now = now_ms()
        lanes = [job.lane for job, _ in self._inflight.values()]
        await self.store.renew(self.queue, lanes, deadline_ms=now + self.settings.lease_ms)
        recovered = await self.store.recover(self.queue, now_ms=now)
        if recovered:
            self._log.warning("queue %s: %d job(s) of a lost engine returned to the queue", self.queue, recovered)

    async def _fill(self) -> None:
        while not self._stopped and self._can_claim() and len(self._inflight) < self.settings.concurrency:
            job = await self.store.claim(self.queue, now_ms=now_ms(), lease_ms=self.settings.lease_ms)
            if job is None:
                return
            task = asyncio.create_task(self._work(job), name=f"queue-job:{job.id}")
            self._inflight[job.id] = (job, task)

    async def _idle_timeout(self, maintenance_due: int) -> float:
        deadline = min(now_ms() + self.settings.poll_interval_ms, maintenance_due)
        due = await self.store.next_due_ms(self.queue)
        if due is not None:
            deadline = min(deadline, due)
        return max(deadline - now_ms(), 1) / 1000

    async def _work(self, job: Job) -> None:
        try:
            if self._stopped:  # claimed as the stop began, before this task ran: give it back now, not after its lease
                await self._guarded(self.store.release(self.queue, job), job)
                return
            self._handling.add(job.id)
            try:
                await self._run(job)
            finally:
                self._handling.discard(job.id)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._stopped or (task is not None and task.cancelling()):
                await self._guarded(self.store.release(self.queue, job), job)
                raise
            # The handler's own (an inner call of its was cancelled), not this task's: a failed attempt. Given back
            # instead, the job was claimed again at once, its attempts never counted: a busy loop for ever.
            await self._guarded(self._failed(job, RuntimeError("the handler raised CancelledError")), job)
        except JobNotReady:
            await self._guarded(self.store.retry(self.queue, job, due_ms=now_ms() + self.settings.backoff_ms), job)
        except Exception as exc:
            await self._guarded(self._failed(job, exc), job)
        else:
            await self._guarded(self.store.ack(self.queue, job), job)
        finally:
            self._inflight.pop(job.id, None)
            self._wake.set()
            if not self._inflight:
                self._on_idle()

    async def _guarded(self, step: Awaitable[None], job: Job) -> None:
        # A store failure here leaves the lane active; its lease expires and the job runs again.
        try:
            await step
        except Exception:
            self._log.exception("queue %s: store failed while finishing or releasing job %s", self.queue, job.id)

    async def _failed(self, job: Job, exc: Exception) -> None:
        attempts = job.attempts + 1
        tried = replace(job, attempts=attempts)
        if attempts >= self.settings.max_retries:
            self._log.warning(
                "queue %s: job %s failed %d time(s), moved to the DLQ: %s", self.queue, job.id, attempts, exc
            )
            await self.store.dead(self.queue, DeadLetter(tried, DLQ_ERROR, now_ms()))
            return
        delay = self.settings.backoff_for(attempts)
        self._log.info(
            "queue %s: job %s attempt %d failed, retry in %d ms: %s", self.queue, job.id, attempts, delay, exc
        )
        await self.store.retry(self.queue, tried, due_ms=now_ms() + delay)
