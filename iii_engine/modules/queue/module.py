"""The queue module (docs/reference/payloads.md#queues-enqueue-and-the-enqueue-action): named queues, topic mode,
dead-letter queue and console functions.

Named queues come from ``queue_configs``; the engine core hands them ``action: {"type":"enqueue"}`` calls through
:meth:`QueueModule.enqueue`. Topic mode is the ``enqueue {topic, data}`` function plus the ``queue`` trigger type:
each job goes to **one** subscriber (round robin). Jobs live in memory unless ``adapter.class`` is
``modules::queue::RedisAdapter`` (``config: {redis_url, key_prefix?}``; ``key_prefix`` is ours). Settings:
:class:`~iii_engine.modules.queue.settings.QueueModuleSettings`.

Our choices where production differs or is unrecorded: the receipt id is the job id
(docs/protocol.md#module-improvements M2); FIFO order is
strict per message group while different groups run in parallel up to ``concurrency`` (M3); a job whose function
is not registered waits for it up to the queue's ``missing_function_grace_ms`` (60 s by default) before its attempts
count, so jobs survive workers reconnecting after an engine restart or starting after the engine (production counts
the attempts at once), and then fails with ``function_not_found`` naming the function, to end in the dead-letter
queue (with the Redis adapter, an engine lacking the function leaves the job to another engine sharing the store
that consumes the queue and whose workers serve it, and its grace runs only while no live engine does:
``served_functions_ttl_ms``); a dead
letter keeps the last attempt's error (production's named queues keep "function call failed"); the
console functions' result shapes are ours (documented on each function).

Example (engine configuration):
    >>> QueueModule.class_names
    ('modules::queue::QueueModule',)
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Final, NoReturn

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.iii_types import TriggerInfo
from iii.loss_log import LossLog
from iii.protocol.client import RESULT_NOT_SENT, WORKER_BUSY
from iii.protocol.codec import MAX_JSON_DEPTH, fits_within
from iii.protocol.worker_session import clip_text
from iii.wire import LOG_CLIP, clip, dumps
from iii_streams.errors import PoolExhaustedError

from ...closing import close_store
from ...settings import RedisAdapterSettings
from ..base import (
    BuiltinFunction,
    BuiltinHandler,
    CallNotSent,
    EngineError,
    EngineModule,
    EngineServices,
    InvocationContext,
    trigger_registrant,
)
from ..bridge.queue import NO_DLQ, BridgeQueue
from ..health import link_health, probe
from ..trigger_set import check_trigger_config
from .consumer import JobNotReady, QueueConsumer, Reported, StoreFailures
from .settings import MISSING_FUNCTION_CHECK_MAX_MS, QueueModuleSettings, QueueSettings
from .store import (
    WALL_STEP_MS,
    Job,
    MemoryQueueStore,
    NotSent,
    QueueFull,
    QueueStore,
    StoreFull,
    TopicShare,
    monotonic_ms,
)

if TYPE_CHECKING:  # redis is an optional dependency: imported only with the Redis adapter
    from .redis_store import RedisQueueStore

log = logging.getLogger(__name__)

NAMED_PREFIX = "__fn_queue::"
TOPIC_PREFIX = "__topic::"
_STOPPED = "invocation_stopped"  # a stats or dead-letter read refused once the module is stopping


def _push_failed(what: str, job_id: str, exc: Exception) -> EngineError:
    """A push that failed: when no store connection became free in time (:class:`PoolExhaustedError`) or the one
    it needed could not be opened (:class:`NotSent`: refused, say), both before the push is sent, the job was
    certainly not enqueued, and the caller is told so; otherwise its outcome is unknown (a connection lost after it
    was sent may have stored the job, and then it runs), and the caller is told that, with the job id (its
    receipt), not that it failed.

    Example:
        >>> _push_failed("Queue 'q'", "j1", PoolExhaustedError("pool exhausted")).message
        "Queue 'q': the job was not enqueued (it never reached the store): pool exhausted"
        >>> _push_failed("Queue 'q'", "j1", NotSent("Error 111 connecting to redis:6379.")).message
        "Queue 'q': the job was not enqueued (it never reached the store): Error 111 connecting to redis:6379."
    """
    if isinstance(exc, PoolExhaustedError | NotSent):
        return EngineError("enqueue_error", f"{what}: the job was not enqueued (it never reached the store): "
                                            f"{clip_text(str(exc))}")
    return EngineError("enqueue_error", f"{what}: the store did not confirm job {job_id}: {clip_text(str(exc))} "
                                        "(if it reached the store, it will run)")


LOSS_QUEUES_NAMED: Final = 10
"""Queues the stop's loss warning names (those holding the most jobs); the rest are a count."""


def _tell_memory_loss(store: MemoryQueueStore) -> None:
    """Say, in one warning, what an in-memory store still holds as the module stops: lost with the process (a
    SIGTERM with 199 jobs accepted and waiting exited 0 and no line mentioned them). Nothing when it holds none.

    Example:
        >>> _tell_memory_loss(MemoryQueueStore())  # empty: no line
    """
    held = store.held()
    if not held:
        return
    waiting = sum(c.waiting for c in held.values())
    delayed = sum(c.delayed for c in held.values())
    leased = sum(c.active for c in held.values())
    dead = sum(c.dlq for c in held.values())
    sizes = sorted(((c.waiting + c.delayed + c.active + c.dlq, name) for name, c in held.items()), reverse=True)
    named = ", ".join(f"{clip_text(name, 200)} ({jobs})" for jobs, name in sizes[:LOSS_QUEUES_NAMED])
    if len(sizes) > LOSS_QUEUES_NAMED:
        named += f" and {len(sizes) - LOSS_QUEUES_NAMED} more"
    log.warning("queue module: the in-memory queue store discards %d job(s) at this stop: %d waiting, %d delayed, "
                "%d in flight (leased), %d dead letter(s), in %s; in-memory jobs live only as long as the engine "
                "(the RedisAdapter keeps them across restarts)", waiting + delayed + leased + dead, waiting, delayed,
                leased, dead, named)


def open_store(settings: QueueModuleSettings) -> QueueStore:
    """The job store the settings' ``adapter`` names (with the Bridge adapter the jobs live on the remote, and
    this store stays empty).

    Example:
        >>> type(open_store(QueueModuleSettings())).__name__
        'MemoryQueueStore'
    """
    adapter = settings.store_adapter[1]
    topics = TopicShare(TOPIC_PREFIX, settings.topic_bytes, settings.max_unsubscribed_topic_bytes)
    if isinstance(adapter, RedisAdapterSettings):
        from .redis_store import RedisQueueStore

        return RedisQueueStore(adapter.redis_url, key_prefix=adapter.key_prefix, topics=topics)
    return MemoryQueueStore(max_bytes=settings.max_memory_bytes, topics=topics)


RECLAIM_INTERVAL_S = 1.0
"""At most one round-robin sweep for idle topics per this many seconds: a sweep reads the store once per topic it
looks at. Topics this engine saw go idle (last subscriber gone, last running job finished, a dead letter
discarded) are looked at on the next need for room whatever the time, each once per such event."""

FIFO_READ_INTERVAL_S = 1.0
"""An enqueue to a topic with no subscriber on this engine asks the store whether the topic is FIFO at most once per
this many seconds (see :meth:`QueueModule._kept_fifo`)."""

RECLAIM_BATCH = 256
"""Topics one sweep looks at: a sweep's cost stays bounded however many topics there are."""


def _count(counts: dict[str, int], key: str, change: int) -> None:
    """Add ``change`` to ``counts[key]``, dropping the key at 0 (a worker gone leaves no key behind).

    Example:
        >>> counts = {"w": 1}
        >>> _count(counts, "w", -1), _count(counts, "v", 2), counts
        (None, None, {'v': 2})
    """
    left = counts.get(key, 0) + change
    if left:
        counts[key] = left
    else:
        del counts[key]


NO_WORKER: Final = ""
"""Whom a topic is counted against (``max_topics_per_worker``) when no worker made it: a trigger the engine
registered (its configuration), or an enqueue no worker called (the engine's own). Such topics share one share (no
worker id is empty)."""


@dataclass
class _Topic:
    consumer: QueueConsumer
    subscribers: dict[str, TriggerInfo] = field(default_factory=dict)
    turn: itertools.count[int] = field(default_factory=itertools.count)
    #: enqueues between finding this topic and storing their job: a sweep must not drop it under them
    pushing: int = 0
    #: enqueues begun here so far: one that began and ended while a sweep read the store changed what it read
    pushes: int = 0
    #: a subscriber's queue_config asked past the module's max_topic_* caps, and that was logged
    capped_logged: bool = False
    #: when the store was last asked whether the topic is FIFO (monotonic s; see QueueModule._kept_fifo), and that
    #: read while it is under way (the enqueues arriving meanwhile wait for its answer)
    fifo_read_at: float = float("-inf")
    fifo_read: asyncio.Task[bool | None] | None = None
    #: the worker this topic counts against (max_topics_per_worker): the one it was made for, then, whenever that
    #: one has no trigger subscribing to it, the earliest of those whose triggers do, until it is forgotten
    maker: str = NO_WORKER
    #: trigger id -> the worker it counts for, and worker -> its triggers subscribing here (earliest first)
    trigger_makers: dict[str, str] = field(default_factory=dict)
    maker_triggers: dict[str, int] = field(default_factory=dict)

    def unused(self) -> bool:
        """No subscriber, no enqueue under way and no job running here (the store may still hold jobs)."""
        return not self.subscribers and not self.pushing and not self.consumer.running


def _text_arg(function_id: str, data: Any, key: str) -> str:
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, str):
        raise EngineError("deserialization_error", f"Failed to deserialize input for {function_id}: missing {key}")
    return value


def _name(name: str) -> str:
    """``'name'`` for an error naming a queue the caller gave; a name past ``LOG_CLIP`` is cut (a 4 MiB name came
    back whole in the error, and in the engine's warning log)."""
    return f"'{name}'" if len(name) <= LOG_CLIP else clip(name)


def _full(name: str, kind: str, limit: int) -> str:
    """Why an enqueue (or a redrive) to the full queue or topic ``name`` was refused, naming the setting."""
    if kind == "queue":
        return f"Queue '{name}' is full: it holds {limit} jobs waiting, delayed or running " \
               f"(queue_configs.{name}.max_jobs)"
    return f"Topic '{name}' is full: it holds {limit} jobs waiting, delayed or running (max_topic_jobs)"


def _no_room(name: str, kind: str, full: StoreFull) -> EngineError:
    """Why an enqueue to ``name`` was refused by a byte bound of the store, naming the setting.

    Example:
        >>> _no_room("junk1", "topic", StoreFull(600, 16777000, 16777216, "unsubscribed")).message
        "Topic 'junk1' has no subscriber: a job of 600 bytes does not fit: the topics without a subscriber hold \
16777000 of their 16777216 bytes of jobs and dead letters (max_unsubscribed_topic_bytes)"
    """
    what = "Queue" if kind == "queue" else "Topic"
    fit = f"a job of {full.size} bytes does not fit"
    if full.bound == "unsubscribed":
        return EngineError("enqueue_error", f"{what} {_name(name)} has no subscriber: {fit}: the topics without a "
                                            f"subscriber hold {full.used} of their {full.limit} bytes of jobs and "
                                            "dead letters (max_unsubscribed_topic_bytes)")
    if full.bound == "topics":
        return EngineError("enqueue_error", f"{what} {_name(name)}: {fit}: the topics hold {full.used} of their "
                                            f"{full.limit} bytes of jobs and dead letters (max_topic_bytes)")
    return EngineError("enqueue_error", f"{what} '{name}': {fit}: the in-memory queue store holds {full.used} of "
                                        f"its {full.limit} bytes of jobs and dead letters (max_memory_bytes)")


MAX_MISSING_TRACKED = 1024
"""(queue, function) pairs with a missing function the module remembers; past it the oldest is forgotten and the
newcomer's wait counts from the forgotten one's start (never later), so a pair coming back never gets its grace anew:
enqueues naming made-up functions must not grow the engine, nor keep their jobs waiting for ever."""
CROWDED_LOG_INTERVAL_S = 10.0
"""Past :data:`MAX_MISSING_TRACKED` pairs, the lines about them are counted and logged at most this often."""

BUSY_RETRY_MIN_MS = 100
"""Shortest wait before a job whose worker refused it for being busy (``worker_busy``) is tried again (its
``backoff_ms`` if longer): the refusal comes at once, and a queue with ``backoff_ms`` 0 would ask again in a loop."""

NOT_SENT_RECHECK_MS = 500
"""How long a job whose call never reached its worker (:class:`CallNotSent`) waits before it is tried again, unless
another worker serves the function already (at once) or registers it meanwhile (then)."""

BUSY_QUIET_SLACK_MS = 1000
"""A busy spell ends when no refusal comes within twice the put-off it handed out plus this (or the queue's
``poll_interval_ms``, if longer): time for the put-off job to be claimed again."""

BUSY_PROGRESS_MS = 1000
"""A refusal while another job of the same function has been under way this long is progress (that job runs on the
worker: a refusal comes back at once), so the busy spell is not taken for a stuck worker."""

BUSY_LOG_INTERVAL_S = 10.0
"""Jobs put off for a busy worker are one warning at first, then a count at most this often."""


class BusyFunctions:
    """Busy spells per (queue, function): a worker refusing its jobs for being busy (our SDK's ``worker_busy``: none
    ran). A refused job is put off, its attempt not counted, for about as long as the spell has lasted (at least
    ``backoff_ms`` and :data:`BUSY_RETRY_MIN_MS`, at most ``backoff_ms`` or :data:`MISSING_FUNCTION_CHECK_MAX_MS`, a
    random 50-100 % of it). Once the spell has gone ``missing_function_grace_ms`` without progress (no other job of
    the function under way on this engine for :data:`BUSY_PROGRESS_MS` at a refusal), a refusal is a failed
    attempt, so a worker that stays busy, or answers ``worker_busy`` to everything, ends in the dead-letter queue
    rather than in refusals for ever (one holding a job unanswered counts as progress: ``invocation_timeout_ms``
    bounds that). A spell ends when a job of the function comes back from the worker, or when no refusal has come
    within twice the latest put-off and a poll (:data:`BUSY_QUIET_SLACK_MS`: the job ran elsewhere, was skipped or
    dead-lettered). Before, every refusal came back after ``backoff_ms``, however long the spell: 2 x 10,000 jobs
    kept an engine at 81-89 % of a core.

    Times are monotonic milliseconds.

    Example:
        >>> busy = BusyFunctions()
        >>> settings = QueueSettings(backoff_ms=100, missing_function_grace_ms=10_000)
        >>> busy.put_off("q", "f", settings, now=0) in range(50, 101)
        True
        >>> busy.put_off("q", "f", settings, now=1_000) in range(500, 1_001)  # as long as the spell, about
        True
        >>> busy.put_off("q", "f", settings, now=2_500, progress=True) is None  # another job runs: not stuck
        False
        >>> [busy.put_off("q", "f", settings, now=ms) is None for ms in range(5_000, 15_000, 2_500)]
        [False, False, False, True]
        >>> busy.put_off("q", "f", settings, now=60_000) is None  # no refusal for 47 s: a new spell
        False
    """

    def __init__(self, limit: int = MAX_MISSING_TRACKED) -> None:
        self._limit = limit
        # (queue, function) -> [start of the spell, latest progress, when it ends unless refused again], least
        # recently refused first
        self._spells: OrderedDict[tuple[str, str], list[int]] = OrderedDict()

    def put_off(self, queue: str, function_id: str, settings: QueueSettings, now: int, *,
                progress: bool = False) -> int | None:
        """A job of ``queue`` was refused busy by ``function_id``'s worker (``progress``: while another job of the
        function ran there): how long to put it off (ms), or ``None`` when the spell has gone
        ``missing_function_grace_ms`` without progress (the refusal is then a failed attempt)."""
        key = (queue, function_id)
        spell = self._spells.get(key)
        if spell is None or now > spell[2]:
            spell = self._spells[key] = [now, now, now]
            if len(self._spells) > self._limit:  # the spell refused longest ago is forgotten
                self._spells.popitem(last=False)
        else:
            self._spells.move_to_end(key)
            if progress:
                spell[1] = now
        if now - spell[1] >= settings.missing_function_grace_ms:
            return None
        wait = min(max(now - spell[0], settings.backoff_ms, BUSY_RETRY_MIN_MS), _longest_look(settings))
        # spread: the jobs one burst brought were refused together, and would all come back together
        delay = max(int(wait * random.uniform(0.5, 1.0)), 1)
        # quiet past twice this wait (and a poll): the refused job ran elsewhere, was skipped or dead-lettered
        spell[2] = now + 2 * delay + max(settings.poll_interval_ms, BUSY_QUIET_SLACK_MS)
        return delay

    def ran(self, queue: str, function_id: str) -> None:
        """A job of ``queue`` came back from ``function_id``'s worker: its busy spell, if any, is over."""
        if self._spells:
            self._spells.pop((queue, function_id), None)


def _look_delay(since: int, now: int, settings: QueueSettings) -> int:
    """How long a job of a function missing since ``since`` is put off: as long as the function has been missing (1,
    2, 4 ... s, from ``backoff_ms``), so many waiting jobs cost little and a worker registering late gets its jobs
    within the cap, never past the grace's end."""
    return min(max(now - since, settings.backoff_ms, 1), _longest_look(settings),
               since + settings.missing_function_grace_ms - now)


def _longest_look(settings: QueueSettings) -> int:
    """The longest a job of a missing function is put off between two looks."""
    return max(settings.backoff_ms, MISSING_FUNCTION_CHECK_MAX_MS)


class FunctionNotRegistered(EngineError, Reported):
    """A named-queue job's function is still not registered after the queue's ``missing_function_grace_ms``: a
    failed attempt (logged once per function and queue, not per job)."""


class MissingFunctions:
    """Named-queue jobs whose function is not registered: since when, per queue and function, to give them the
    queue's grace period and to space the looks at them; told once per function and queue (waiting: info; past
    the grace: a warning; registered: info), never per job or per look.

    Example:
        >>> missing = MissingFunctions()
        >>> missing.check("q", "orders::procss", QueueSettings(backoff_ms=100), now=0)
        Traceback (most recent call last):
        ...
        iii_engine.modules.queue.consumer.JobNotReady: orders::procss
        >>> try:
        ...     missing.check("q", "orders::procss", QueueSettings(missing_function_grace_ms=50), now=60)
        ... except FunctionNotRegistered as exc:
        ...     print(exc.code, exc.message[:43])
        function_not_found Function 'orders::procss' is not registered
    """

    def __init__(self, limit: int = MAX_MISSING_TRACKED) -> None:
        self._limit = limit
        # monotonic ms of the first miss: a step of the wall clock neither ends a grace nor stretches it (a +120 s
        # step dead-lettered jobs 9 s after they were enqueued, "still not registered after 60000 ms")
        self._since: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._wall_less_mono: int | None = None  # see on_wall
        self._warned: set[tuple[str, str]] = set()  # past their grace, warned of
        # function -> the queues in _since waiting for it: a registration looks at each function once, not at
        # every pair (up to MAX_MISSING_TRACKED of them on every registration)
        self._queues_of: dict[str, dict[str, None]] = {}
        # Past the limit, pairs come and go as they are looked at: one line each would be a line per look.
        self._crowded = LossLog(self._log_crowded, CROWDED_LOG_INTERVAL_S)

    def check(self, queue: str, function_id: str, settings: QueueSettings, now: int) -> NoReturn:
        """A job of ``queue`` found ``function_id`` not registered at ``now`` (monotonic ms: :func:`monotonic_ms`):
        raise :class:`JobNotReady` (with when to look again) within the grace, :class:`FunctionNotRegistered` past
        it."""
        key = (queue, function_id)
        since = self._since.get(key)
        grace = settings.missing_function_grace_ms
        crowded = len(self._since) >= self._limit
        if since is None:
            since = now
            if crowded:
                # the oldest goes; the newcomer (perhaps a pair forgotten earlier, back) waits from its start
                gone, gone_since = self._since.popitem(last=False)
                self._unindex(gone)
                self._warned.discard(gone)
                since = min(since, gone_since)
                self._crowded.lost("waiting", f"{_name(queue)}: {_name(function_id)}")
            else:
                log.info("queue %s: function %s is not registered; its jobs wait up to %d ms for a worker to "
                         "register it (missing_function_grace_ms)", _name(queue), _name(function_id), grace)
            self._since[key] = since
            self._queues_of.setdefault(function_id, {})[queue] = None
        waited = now - since
        if waited >= grace:
            if key not in self._warned:
                self._warned.add(key)
                if crowded:
                    self._crowded.lost("past_grace", f"{_name(queue)}: {_name(function_id)}")
                else:
                    log.warning("queue %s: function %s is still not registered after %d ms "
                                "(missing_function_grace_ms): its jobs now fail with function_not_found and go to the "
                                "dead-letter queue after max_retries (%d) attempts", _name(queue), _name(function_id),
                                grace, settings.max_retries)
            raise FunctionNotRegistered("function_not_found", f"Function {_name(function_id)} is not registered "
                                        f"(queue {_name(queue)} waited {grace} ms for a worker to register it: "
                                        "missing_function_grace_ms)")
        raise JobNotReady(function_id, delay_ms=_look_delay(since, now, settings), waits_for=function_id)

    def look(self, queue: str, function_id: str, settings: QueueSettings, now: int) -> int | None:
        """When a job of ``queue`` naming ``function_id`` is to be looked at next (monotonic ms, as ``now``: see
        :meth:`on_wall`), if its function is waited for and its grace has not ended; else ``None`` (the job is to be
        tried: :meth:`check` decides).

        Example:
            >>> missing = MissingFunctions()
            >>> missing.look("q", "late::fn", QueueSettings(), now=0) is None  # not waited for yet
            True
            >>> try:
            ...     missing.check("q", "late::fn", QueueSettings(backoff_ms=100), now=0)
            ... except JobNotReady:
            ...     pass
            >>> missing.look("q", "late::fn", QueueSettings(backoff_ms=100), now=400)
            800
        """
        since = self._since.get((queue, function_id))
        if since is None or now >= since + settings.missing_function_grace_ms:
            return None
        # The looks fall on points fixed from the start of the wait (after backoff_ms, then as long again as the
        # function has been missing, at most every max(backoff_ms, 5 s)), not on now plus a delay: asked at every
        # claim, the answer changes only when a look has passed, so a store keeping the looks rewrites them rarely.
        first, longest = max(settings.backoff_ms, 1), _longest_look(settings)
        look = since + first
        while look <= now:
            step = min(max(look - since, first), longest)
            if step == longest:
                look += longest * ((now - look) // longest + 1)
                break
            look += step
        return min(look, since + settings.missing_function_grace_ms)

    def on_wall(self, look: int, wall_now: int, mono_now: int) -> int:
        """``look`` (monotonic ms, from :meth:`look`) on the wall clock, which the stores' due times use. The wall
        clock's lead is kept until it changes by more than :data:`WALL_STEP_MS` (a step, followed at once), so a look
        stays the same from call to call and a store keeping the looks rewrites them only when they change.

        Example:
            >>> missing = MissingFunctions()
            >>> missing.on_wall(1_500, wall_now=10_000, mono_now=1_000), missing.on_wall(1_500, 10_001, 1_000)
            (10500, 10500)
            >>> missing.on_wall(1_500, wall_now=130_000, mono_now=1_000)  # the wall clock stepped 120 s
            130500
        """
        lead = wall_now - mono_now
        if self._wall_less_mono is None or abs(lead - self._wall_less_mono) > WALL_STEP_MS:
            self._wall_less_mono = lead
        return look + self._wall_less_mono

    def found(self, queue: str, function_id: str) -> None:
        """``function_id`` is registered: a job of ``queue`` found it."""
        if self._since and self._since.pop((queue, function_id), None) is not None:
            self._unindex((queue, function_id))
            self._gone((queue, function_id))

    def elsewhere(self, queue: str, function_id: str) -> None:
        """Another engine sharing the store serves ``function_id``: its jobs in ``queue`` are left to it, and the
        wait for it here (if it began) starts again should that engine go.

        Example:
            >>> missing = MissingFunctions()
            >>> missing.elsewhere("q", "orders::pay")  # nothing was waiting: nothing to forget
        """
        if self._since and self._since.pop((queue, function_id), None) is not None:
            self._unindex((queue, function_id))
            self._warned.discard((queue, function_id))
            log.info("queue %s: function %s is served by another engine sharing the queue store; its jobs are left "
                     "to it", _name(queue), _name(function_id))

    def registered(self, has_function: Callable[[str], bool]) -> None:
        """The set of registered functions changed: forget those now registered (``has_function`` is asked once
        per function missing, whatever the number of queues waiting for it).

        Example:
            >>> missing, asked = MissingFunctions(), []
            >>> for queue in ("a", "b", "c"):
            ...     try:
            ...         missing.check(queue, "late::fn", QueueSettings(), now=0)
            ...     except JobNotReady:
            ...         pass
            >>> missing.registered(lambda function_id: asked.append(function_id) is None)
            >>> asked
            ['late::fn']
        """
        for function_id in [function_id for function_id in self._queues_of if has_function(function_id)]:
            for queue in self._queues_of.pop(function_id):
                del self._since[(queue, function_id)]
                self._gone((queue, function_id))

    def _unindex(self, key: tuple[str, str]) -> None:
        queues = self._queues_of.get(key[1])
        if queues is not None:
            queues.pop(key[0], None)
            if not queues:
                del self._queues_of[key[1]]

    def close(self) -> None:
        """The module stops: a count not logged yet is logged now (its timer belongs to this loop)."""
        self._crowded.close()

    def _log_crowded(self, counts: Mapping[str, int], latest: str | None) -> None:
        log.warning("queue module: functions missing for more than %d queue and function pairs at once (their jobs "
                    "wait from the earliest start the module remembers): %d more began waiting and %d more passed "
                    "missing_function_grace_ms since the last notice%s", self._limit, counts.get("waiting", 0),
                    counts.get("past_grace", 0), f" (the latest: {latest})" if latest else "")

    def _gone(self, key: tuple[str, str]) -> None:
        self._warned.discard(key)
        log.info("queue %s: function %s is registered; its waiting jobs run", _name(key[0]), _name(key[1]))


MAX_LEFT_TO_OTHERS = 64
"""(Queue, function) pairs an engine remembers as run by other engines sharing its Redis store (its claims in the
queue move past their jobs, each claim naming the queue's functions); a job of one past it is put off for a while at
each claim instead."""

MAX_SHARED_ID_CHARS = 256
"""Longest function id (and queue name) engines sharing a store tell each other about: a job of a longer one waits
out this engine's grace as with an engine alone."""

MAX_REWANTED = 64
"""Pairs an engine putting their jobs off wants again per refresh (a window moving on at each): a quarter of the 256
the engines keep, so those it adds stay among them for a few refreshes whatever their names."""

ADVERTISE_MAX_MS = 1000
"""Longest time between two refreshes of what an engine advertises: an engine lacking a function puts its jobs off
for about this long, the first time it looks, until the engines that run them have said so (two round trips to
Redis per engine and refresh)."""

SERVED_ELSEWHERE, UNKNOWN_YET = 1, 2  # RedisQueueStore.served_elsewhere's answers (0: no other engine serves it)


class OtherEngines:
    """This engine among the engines sharing a Redis queue store: every third of ``ttl_ms`` it says which of the
    (named queue, function) pairs some engine found missing it can run, its workers serving the function and it
    consuming the queue (:meth:`RedisQueueStore.advertise`), and it remembers the pairs it lacks that another live
    engine runs (:meth:`leave_to_others`), whose jobs its claims in that queue leave to that engine (:meth:`skip`)
    until no live engine runs them any more. An engine whose worker left counts its own advertisement, like
    another's, until it expires: the jobs wait at most ``ttl_ms`` more, their attempts not counted, before the grace
    begins. An engine that serves a function but does not consume the queue is no help: its jobs there wait out the
    grace as with an engine alone.

    Example:
        >>> others = OtherEngines(None, 3_000, lambda function_id: False, lambda: None, queues=["orders"])
        >>> others.refresh_ms, others.skip("orders"), others.left_to_others("orders", "orders::pay")
        (1000, (), False)
    """

    def __init__(self, store: RedisQueueStore, ttl_ms: int, has_function: Callable[[str], bool],
                 on_lost: Callable[[], None], queues: Collection[str] = (),
                 putting_off: Callable[[], list[tuple[str, str]]] = list,
                 on_elsewhere: Callable[[str, str], None] = lambda queue, function_id: None) -> None:
        self.id = uuid.uuid4().hex
        self.store = store
        self.ttl_ms = ttl_ms
        self._has_function = has_function
        self._queues = frozenset(queues)  # the named queues this engine consumes: it runs jobs of no other
        self._on_lost = on_lost  # a pair left to others is no longer run by any: its jobs are ours again
        # the pairs whose jobs this engine's claims put off in the store (their function is missing here): asked about
        # at each refresh, as they are no longer claimed (and looked up) one by one; one found run by another engine
        # is told to on_elsewhere
        self._putting_off = putting_off
        self._on_elsewhere = on_elsewhere
        self._rewant_from = 0  # where the next refresh's window of pairs wanted again starts
        self._left: dict[str, dict[str, None]] = {}  # queue -> functions left to others there
        self._left_count = 0
        self._task: asyncio.Task[None] | None = None
        self._halted = False

    @property
    def refresh_ms(self) -> int:
        """How often the advertisement is refreshed: a third of its TTL (one refresh lost does not end it), at most
        :data:`ADVERTISE_MAX_MS` (a pair first wanted waits for the engines' next refresh).

        Example:
            >>> OtherEngines(None, 10_000, bool, lambda: None).refresh_ms
            1000
        """
        return max(min(self.ttl_ms // 3, ADVERTISE_MAX_MS), 1)

    def skip(self, queue: str) -> Collection[str]:
        """The functions whose jobs in ``queue`` this engine's claims leave to the others.

        Example:
            >>> OtherEngines(None, 10_000, bool, lambda: None).skip("q")
            ()
        """
        return self._left.get(queue, ())

    async def leave_to_others(self, queue: str, function_id: str) -> int:
        """Whether another live engine runs ``function_id``'s jobs in ``queue`` (this one lacks the function):
        ``SERVED_ELSEWHERE`` (then this engine's claims there leave its jobs, within :data:`MAX_LEFT_TO_OTHERS`
        pairs), ``UNKNOWN_YET`` (one has not looked since the pair was first wanted) or ``0``."""
        if len(function_id) > MAX_SHARED_ID_CHARS or len(queue) > MAX_SHARED_ID_CHARS:
            return 0
        where = await self.store.served_elsewhere(self.id, self.ttl_ms, queue, function_id)
        # A worker that registered the function here during the lookup: registered() ran before this add, and
        # this engine's own advertisement (of the worker before) answers "served": left, its jobs waited for good.
        if where == SERVED_ELSEWHERE and self._left_count < MAX_LEFT_TO_OTHERS \
                and function_id not in self._left.get(queue, ()) and not self._has_function(function_id):
            self._left.setdefault(queue, {})[function_id] = None
            self._left_count += 1
        return where

    def left_to_others(self, queue: str, function_id: str) -> bool:
        """Whether this engine's claims leave ``function_id``'s jobs in ``queue`` to other engines.

        Example:
            >>> OtherEngines(None, 10_000, bool, lambda: None).left_to_others("q", "orders::pay")
            False
        """
        return function_id in self._left.get(queue, ())

    def _forget(self, pairs: list[tuple[str, str]]) -> None:
        for queue, function_id in pairs:
            functions = self._left.get(queue)
            if functions is not None and functions.pop(function_id, 0) is None:
                self._left_count -= 1
                if not functions:
                    del self._left[queue]

    def registered(self, has_function: Callable[[str], bool]) -> None:
        """Functions registered here are run here again."""
        self._forget([(queue, function_id) for queue, functions in self._left.items() for function_id in functions
                      if has_function(function_id)])

    async def start(self) -> None:
        """Advertise now, then every :attr:`refresh_ms`: once this returns, the other engines count this one live
        (one claiming a job meanwhile took itself for alone, and began its grace at once). A store slow to answer
        holds the start up for at most :data:`ADVERTISE_MAX_MS`; the next refresh tries again."""
        try:
            await asyncio.wait_for(self._refresh_logged(), ADVERTISE_MAX_MS / 1000)
        except TimeoutError:
            log.debug("queue module: the served functions were not advertised within %d ms of the start",
                      ADVERTISE_MAX_MS)
        if not self._halted:  # a stop came during the first advertisement
            self._task = asyncio.get_running_loop().create_task(self._advertise(), name="queue-served-functions")

    async def refresh(self) -> None:
        """Say which wanted pairs this engine runs; forget the pairs left to others none runs now."""
        read_ms, wanted = await self.store.wanted()
        left = [(queue, function_id) for queue, functions in self._left.items() for function_id in functions]
        known = set(left)
        waiting = [(queue, function_id) for queue, function_id in dict.fromkeys(self._putting_off())
                   if (queue, function_id) not in known and len(queue) <= MAX_SHARED_ID_CHARS
                   and len(function_id) <= MAX_SHARED_ID_CHARS and not self._has_function(function_id)]
        runs = [(queue, function_id) for queue, function_id in wanted
                if queue in self._queues and self._has_function(function_id)]
        # wanted again: a window of them, moving on at each refresh (all of them at once, past the 256 the engines
        # keep, pushed each other out by name and one sorting low was never wanted: 37.7 s of a 40 s grace)
        start = self._rewant_from % len(waiting) if waiting else 0
        window = (waiting[start:] + waiting[:start])[:MAX_REWANTED]
        self._rewant_from = start + len(window)
        chosen = set(window)
        waiting = [pair for pair in waiting if pair not in chosen] + window
        still = await self.store.advertise(self.id, read_ms, runs, left + waiting, ttl_ms=self.ttl_ms,
                                           waiting=len(window))
        # Pairs this engine runs again are its own (a registration missed while a lookup was under way, or its
        # own advertisement taken for another's), whatever the store says: each refresh gives them back.
        lost = [pair for pair, served in zip(left, still[:len(left)], strict=True)
                if not served or self._has_function(pair[1])]
        self._forget(lost)
        if lost:
            self._on_lost()
        for (queue, function_id), served in zip(waiting, still[len(left):], strict=True):
            if served and not self._has_function(function_id):
                if self._left_count < MAX_LEFT_TO_OTHERS and function_id not in self._left.get(queue, ()):
                    self._left.setdefault(queue, {})[function_id] = None
                    self._left_count += 1
                self._on_elsewhere(queue, function_id)

    async def _refresh_logged(self) -> None:
        try:
            await self.refresh()
        except Exception as exc:  # the consumers meet (and report) a store that fails; tried again next time
            log.debug("queue module: the served functions could not be advertised: %s", exc)

    async def _advertise(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_ms / 1000)
            await self._refresh_logged()

    def halt(self) -> None:
        """Stop advertising, now: a stop whose time has run out never runs :meth:`stop` (``wait_for`` with no time
        left cancels it before it starts), and the refresh kept the stopped engine live in the store for good."""
        self._halted = True
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """Stop advertising and leave the live engines (what this engine advertised expires with its TTL)."""
        self.halt()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self.store.leave(self.id, self.ttl_ms)


MAX_PAGE_ARG = 2**53 - 1
"""Largest ``offset`` or ``limit`` of a dead-letter page: Redis takes 64-bit indexes only, and a larger one failed
there with Redis's own error instead of naming the argument."""


#: The deepest a dead letter's job data nests in a page of ``engine::queue::dlq_messages``: the page's frame, result,
#: list, letter and job put it 5 levels deeper.
DLQ_LISTED_DEPTH: Final = MAX_JSON_DEPTH - 5


def _listed(job_id: str, letter: dict[str, Any]) -> dict[str, Any]:
    """A dead letter as a DLQ page lists it: its job's data left out (``null``, with ``data_omitted`` saying why)
    when nested deeper than :data:`DLQ_LISTED_DEPTH`, which no frame could carry in a page. Before, one such letter
    made its whole page unreadable to every worker (``serialization_error``). The letter itself is unchanged: a
    redrive runs its job with all of its data.

    Example:
        >>> _listed("j", {"job": {"data": [[1]]}, "error": "e"})["job"]
        {'data': [[1]]}
    """
    data = letter["job"].get("data")
    if isinstance(data, dict | list) and not fits_within(data, DLQ_LISTED_DEPTH):
        letter["job"] = {**letter["job"], "data": None}
        letter["data_omitted"] = (f"the job's data nests deeper than {DLQ_LISTED_DEPTH} levels, more than a page "
                                  "of dead letters carries; the letter keeps it, and a redrive runs the job with it")
    return {"id": job_id, **letter}


def _int_arg(function_id: str, data: dict[str, Any], key: str, default: int) -> int:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_PAGE_ARG:
        raise EngineError("deserialization_error", f"Failed to deserialize input for {function_id}: bad {key}")
    return value


class QueueModule(EngineModule):
    """Engine module for named queues, topic queues and their dead-letter queues."""

    name: ClassVar[str] = "queue"
    class_names: ClassVar[tuple[str, ...]] = ("modules::queue::QueueModule",)

    def __init__(self, services: EngineServices, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(services, config)
        self.settings = QueueModuleSettings.parse(self.config)
        self.settings.warn_ignored()
        self.store: QueueStore = MemoryQueueStore()
        self._named: dict[str, QueueConsumer] = {}
        self._topics: dict[str, _Topic] = {}
        self._topic_of_trigger: dict[str, str] = {}
        # topics with a subscriber here: the others (len(_topics) minus these) are bounded by max_unsubscribed_topics
        self._subscribed: set[str] = set()
        # worker id (or NO_WORKER) -> the topics in _topics made for it: counted where an entry is made and where
        # one is forgotten, the only two places _topics gains or loses one, so a count never outlives its topics
        self._made_for: dict[str, int] = {}
        # the register of each trigger id waiting for its topic (at max_topics, room is made first): a later
        # register or an unregister of the id meanwhile supersedes it, so the one the engine handed last is the one
        # that runs (before, an earlier register finishing last overwrote a later one: the engine listed B's trigger
        # while A's ran, 10 of 10 rounds)
        self._awaiting_topic: dict[str, TriggerInfo] = {}
        self._next_reclaim = 0.0
        self._reclaim_from = 0
        # Topics that went idle here since a sweep last looked at them (an ordered set): looked at on the next
        # need for room even between round-robin sweeps, so a topic that could make room is not refused for one.
        self._went_idle: dict[str, None] = {}
        # Settings of forgotten FIFO topics (at most max_topics, oldest dropped first): a topic made anew by an
        # enqueue while its subscriber is away (a worker reconnecting) must stamp its jobs with the FIFO group as the
        # kept topic did, or they land in lanes of their own and run all at once when the subscriber is back.
        self._forgotten_fifo: OrderedDict[str, QueueSettings] = OrderedDict()
        # The sweep under way, if any: a call needing room meanwhile waits for the room it makes.
        self._sweep: asyncio.Future[None] | None = None
        self._eviction_check: asyncio.Task[None] | None = None
        self.bridge: BridgeQueue | None = None
        # Set when the stop begins: enqueues, redrives, discards and new topics are refused from then on, and the
        # stop waits for those under way (bounded) before it closes the store, so none is cut short by the close.
        self._stopping = False
        self._store_ops = 0
        self._no_store_ops = asyncio.Event()
        self._no_store_ops.set()
        # One for the store all consumers share: an outage is a line, not one per queue and poll.
        self._store_failures = StoreFailures(log)
        self._missing = MissingFunctions()
        self._busy = LossLog(self._log_busy, BUSY_LOG_INTERVAL_S)
        self._unsent_results = LossLog(self._log_unsent_results, BUSY_LOG_INTERVAL_S)
        self._busy_since = BusyFunctions()
        # (queue, function) -> its jobs' calls under way here: token -> when it began (monotonic ms)
        self._running: dict[tuple[str, str], dict[int, int]] = {}
        self._call_tokens = itertools.count()
        self._others: OtherEngines | None = None

    async def start(self) -> None:
        """Open the store, start one consumer per configured queue, register functions and ``queue``."""
        self.store = open_store(self.settings)
        await self.store.prepare()  # a store that is down fails the start in one line naming it, not every enqueue
        if isinstance(self.settings.store_adapter[1], RedisAdapterSettings):
            self._eviction_check = asyncio.get_running_loop().create_task(self._warn_if_evicting(),
                                                                          name="queue-eviction-check")
        bridge_url = self.settings.bridge_url
        if bridge_url is not None:
            self.bridge = BridgeQueue(self.services, bridge_url)
            self.bridge.start()
        from .redis_store import RedisQueueStore

        if self.settings.queue_configs and isinstance(self.store, RedisQueueStore):
            self._others = OtherEngines(self.store, self.settings.served_functions_ttl_ms,
                                        self.services.has_function, self._wake_named, self.settings.queue_configs,
                                        putting_off=self._putting_off, on_elsewhere=self._served_elsewhere)
        others = self._others
        for name, queue_settings in self.settings.queue_configs.items():
            skip: Callable[[], Collection[str]] = tuple if others is None else functools.partial(others.skip, name)
            consumer = QueueConsumer(self.store, NAMED_PREFIX + name, queue_settings,
                                     lambda job, name=name: self._run_named(name, job),  # type: ignore[misc]
                                     stop_timeout_ms=self.settings.stop_timeout_ms,
                                     store_failures=self._store_failures, skip=skip,
                                     look_for=functools.partial(self._put_off_look, name),
                                     poll_idle=self._store_shared)
            self._named[name] = consumer
            consumer.start()
        if self._others is not None:
            await self._others.start()
        if self._named:
            self.services.add_functions_listener(self._functions_changed)
        functions: list[tuple[str, BuiltinHandler, str]] = [
            ("enqueue", self._enqueue_topic, "Enqueue data on a topic; one subscriber gets each job"),
            ("iii::queue::redrive", self._redrive, "Move every dead letter of a queue back to it"),
            ("iii::queue::redrive_message", self._redrive_message, "Move one dead letter back to its queue"),
            ("iii::queue::discard_message", self._discard_message, "Delete one dead letter"),
            ("engine::queue::list_topics", self._list_topics, "Named queues and topics"),
            ("engine::queue::topic_stats", self._topic_stats, "Job counts of one queue or topic"),
            ("engine::queue::dlq_topics", self._dlq_topics, "Queues and topics with dead letters"),
            ("engine::queue::dlq_messages", self._dlq_messages, "A page of a dead-letter queue"),
        ]
        for function_id, handler, description in functions:
            self.services.register_function(BuiltinFunction(function_id, handler, description=description))
        self.services.register_trigger_type("queue", "Consume jobs enqueued on a topic (one subscriber each)", self)
        self.services.serve_named_queues(self)

    async def health(self) -> dict[str, dict[str, Any]]:
        """``queue``: whether the store answers now; ``queue_bridge`` (with a ``bridge_url``): whether the remote
        engine answers over the link now."""
        if self.bridge is None:
            return {"queue": await probe(self.store.ping(), adapter=type(self.store).__name__)}
        store, bridge = await asyncio.gather(probe(self.store.ping(), adapter=type(self.store).__name__),
                                             link_health(self.bridge.link))
        return {"queue": store, "queue_bridge": bridge}

    async def stop(self) -> None:
        """Stop every consumer (jobs whose handler finished are stored as done, retried or dead; those still running
        go back to the store), let store operations under way end, then close the store; the whole stop waits at
        most ``stop_timeout_ms``."""
        self._stopping = True
        self.services.serve_named_queues(None)
        if self._eviction_check is not None:
            self._eviction_check.cancel()
        if self._others is not None:
            self._others.halt()
        loop = asyncio.get_running_loop()
        # one bound for the whole stop, not one per step: the sweep, the consumers and the store operations share it
        deadline = loop.time() + self.settings.stop_timeout_ms / 1000
        if self._sweep is not None:  # it stops the consumers of the topics it forgets
            await asyncio.wait({self._sweep}, timeout=max(0.0, deadline - loop.time()))
        consumers = [*self._named.values(), *(t.consumer for t in self._topics.values())]
        await asyncio.gather(*(consumer.stop(deadline) for consumer in consumers))
        if self._others is not None:
            try:
                await asyncio.wait_for(self._others.stop(), max(0.0, deadline - loop.time()))
            except Exception as exc:  # its entry then expires with its TTL
                log.debug("queue module: could not leave the engines sharing the store: %r", exc)
        if self._store_ops:
            try:
                await asyncio.wait_for(self._no_store_ops.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                log.warning("queue module: %d store operation(s) (enqueue, redrive, discard, stats) still under way "
                            "after the stop's %d ms; closing the store under them", self._store_ops,
                            self.settings.stop_timeout_ms)
        if isinstance(self.store, MemoryQueueStore):
            _tell_memory_loss(self.store)
        if self.bridge is not None:
            await close_store(self.bridge.close(), "the queue module's bridge link")
        await close_store(self.store.close(), f"the queue module's store ({type(self.store).__name__})")
        self._store_failures.close()
        self._missing.close()
        self._busy.close()

    async def _warn_if_evicting(self) -> None:
        """Say at start when Redis may evict keys, or keeps jobs on disk in snapshots only or not at all: an evicting
        ``maxmemory-policy``, or a restart of a Redis without an append-only file (with snapshots only: the jobs
        since the last), deletes queued jobs without a word to anyone, the losses the module cannot see or report."""
        from .redis_store import RedisQueueStore

        if not isinstance(self.store, RedisQueueStore):
            return
        if (policy := await self.store.eviction_policy()) is not None:
            log.warning("queue module: Redis's maxmemory-policy is %r: when Redis reaches maxmemory it may delete "
                        "queued jobs silently; set maxmemory-policy noeviction (then a full Redis fails the enqueue "
                        "with enqueue_error)", policy)
        if (gap := await self.store.persistence_gap()) is not None:
            log.warning("queue module: %s", gap)

    @contextmanager
    def _store_op(self, code: str, what: str) -> Iterator[None]:
        """Count a store operation (a write, or a read for the stats and dead-letter functions) the stop must let
        end; refused with ``code`` once the stop has begun (a read after the close would open the store again)."""
        if self._stopping:
            raise EngineError(code, f"{what}: the queue module is stopping")
        self._store_ops += 1
        self._no_store_ops.clear()
        try:
            yield
        finally:
            self._store_ops -= 1
            if not self._store_ops:
                self._no_store_ops.set()

    async def enqueue(self, queue_name: str, function_id: str, data: Any) -> str:
        """Accept a job for named queue ``queue_name``; returns its receipt id (also its job id).

        Raises ``EngineError("enqueue_error", …)`` for an unknown queue or a FIFO payload without its group.

        Example:
            >>> # await engine.module("queue").enqueue("default", "orders::process", {"id": 1})
        """
        consumer = self._named.get(queue_name)
        if consumer is None:
            raise EngineError("enqueue_error", f"Queue {_name(queue_name)} not found")
        if self._stopping:
            raise EngineError("enqueue_error", f"Queue '{queue_name}': the queue module is stopping")
        group: str | None = None
        field_name = consumer.settings.message_group_field
        if consumer.settings.fifo and field_name is not None:
            if not isinstance(data, dict) or field_name not in data:
                raise EngineError(
                    "enqueue_error",
                    f"Queue '{queue_name}' is FIFO and requires message_group_field '{field_name}' in the payload,"
                    " but it was not found",
                )
            value = data[field_name]
            if value is None:
                raise EngineError(
                    "enqueue_error", f"Queue '{queue_name}': message_group_field '{field_name}' must not be null"
                )
            group = value if isinstance(value, str) else dumps(value)
        if self.bridge is not None:
            return await self.bridge.enqueue_named(queue_name, function_id, data)
        job = Job.new(consumer.queue, function_id, data, group)
        limit = consumer.settings.max_jobs
        try:
            with self._store_op("enqueue_error", f"Queue '{queue_name}'"):
                stored = await self.store.push(consumer.queue, job, max_jobs=limit)
        except EngineError:
            raise
        except StoreFull as full:
            raise _no_room(queue_name, "queue", full) from None
        except Exception as exc:
            raise _push_failed(f"Queue '{queue_name}'", job.id, exc) from exc
        if not stored:
            raise EngineError("enqueue_error", _full(queue_name, "queue", limit))
        consumer.wake()
        return job.id

    # -- the `queue` trigger type ---------------------------------------------------------------------------

    async def register(self, trigger: TriggerInfo) -> None:
        """Subscribe ``trigger.function_id`` to its topic.

        Raises:
            EngineError: ``invalid_trigger_config`` naming what is wrong: the config is not an object, its ``topic``
                is missing, empty or not a string, its ``condition_function_id`` not a string, or the topic has the
                name of one of the module's named queues (before, the first three were registered and listed,
                subscribing nothing, with a warning in the engine's log alone; a topic named after a named queue
                had dead letters no console function could reach, the named queue answering for the name).
        """
        config = check_trigger_config(trigger, "queue trigger", ("topic", "condition_function_id"))
        topic = config.get("topic")
        if not isinstance(topic, str) or not topic:  # (a topic of another type was refused above)
            raise EngineError("invalid_trigger_config", f"queue trigger {trigger.id}: 'topic' must be a non-empty "
                                                        f"string")
        if self.bridge is not None:  # (topics live on the remote, its named queues too)
            await self.unregister(trigger)
            await self.bridge.subscribe(trigger, topic)
            return
        if topic in self._named:
            raise EngineError("invalid_trigger_config", f"queue trigger {trigger.id}: topic {_name(topic)} "
                                                        f"has the name of a named queue (queue_configs); give the "
                                                        f"topic a name of its own")
        # The topic first: a new one past max_topics is refused, and the engine then keeps the trigger's earlier
        # registration, so its subscription must still be there.
        self._awaiting_topic[trigger.id] = trigger
        try:
            # counted against the worker that registered the trigger (a trigger on another worker's function used
            # up that worker's share: one worker's 2,500 triggers naming another's function refused its topics)
            maker = trigger_registrant() or NO_WORKER
            entry = await self._topic(topic, subscribing=True, maker=maker)
        finally:
            superseded = self._awaiting_topic.get(trigger.id) is not trigger
            if not superseded:
                del self._awaiting_topic[trigger.id]
        if superseded:
            return
        await self.unregister(trigger)
        if not entry.subscribers:
            # The first subscriber's queue_config shapes the topic queue, within the module's caps: a worker asking
            # concurrency 10**9 had 60,000 jobs in flight to it at once, the engine growing by 193 MB.
            capped: list[str] = []
            entry.consumer.settings = self.settings.topic_settings(config.get("queue_config"), capped)
            if capped and not entry.capped_logged:
                entry.capped_logged = True
                log.warning("queue topic %s: the queue_config of trigger %s (function %s) asked past the module's "
                            "caps (max_topic_concurrency, max_topic_retries, max_topic_backoff_ms): %s", _name(topic),
                            _name(trigger.id), _name(trigger.function_id), ", ".join(capped))
            self.store.set_unsubscribed(entry.consumer.queue, False)
        first = not entry.subscribers
        entry.subscribers[trigger.id] = trigger
        entry.trigger_makers[trigger.id] = maker
        _count(entry.maker_triggers, maker, 1)
        self._follow_subscribers(entry)
        self._subscribed.add(topic)
        self._topic_of_trigger[trigger.id] = topic
        entry.consumer.wake()
        if first:
            # kept in the store, for an engine that makes the topic by an enqueue before any subscriber registers
            # there (restarted with its producers first, or sharing the store) to stamp jobs for the FIFO lane
            try:
                await self.store.set_topic_fifo(entry.consumer.queue, entry.consumer.settings.fifo)
            except Exception as exc:
                log.warning("queue topic %s: could not keep its type (%s) in the store: %s: %s", _name(topic),
                            entry.consumer.settings.type, type(exc).__name__, clip_text(str(exc)))

    async def unregister(self, trigger: TriggerInfo) -> None:
        """Remove the subscription of ``trigger.id``; its topic's jobs wait for another subscriber."""
        self._awaiting_topic.pop(trigger.id, None)
        if self.bridge is not None:
            self.bridge.unsubscribe(trigger.id)
        topic = self._topic_of_trigger.pop(trigger.id, None)
        if topic is not None:
            entry = self._topics[topic]
            entry.subscribers.pop(trigger.id, None)
            maker = entry.trigger_makers.pop(trigger.id, None)
            if maker is not None:
                _count(entry.maker_triggers, maker, -1)
                self._follow_subscribers(entry)
            if not entry.subscribers:
                self.store.set_unsubscribed(entry.consumer.queue, True)
                self._subscribed.discard(topic)
            self._maybe_idle(topic, entry)

    def _maybe_idle(self, topic: str, entry: _Topic) -> None:
        """``topic`` may have nothing left to keep it (a subscriber left, a job finished, a letter went)."""
        if self._topics.get(topic) is entry and entry.unused():
            self._went_idle[topic] = None

    async def _topic(self, topic: str, *, subscribing: bool = False, maker: str = NO_WORKER) -> _Topic:
        """``topic``'s entry, made when new (``subscribing``: for a ``queue`` trigger, else for an enqueue, which
        may make only ``max_unsubscribed_topics`` topics nobody subscribes to), then counted against ``maker`` (a
        worker id, or :data:`NO_WORKER`), which may have at most ``max_topics_per_worker`` of them."""
        entry = self._topics.get(topic)
        if entry is None:
            self._refuse_new_topic_when_stopping(topic)
        if entry is None and self._past_share(maker):
            await self._reclaim_unused()
            entry = self._topics.get(topic)
            if entry is None:
                self._refuse_past_share(topic, maker)
        if entry is None and not subscribing and self._unsubscribed_topics() >= self.settings.max_unsubscribed_topics:
            await self._reclaim_unused()
            entry = self._topics.get(topic)
            if entry is None and self._unsubscribed_topics() >= self.settings.max_unsubscribed_topics:
                # made-up topics, which any worker may enqueue to, must leave room for those triggers subscribe to
                limit = self.settings.max_unsubscribed_topics
                raise EngineError("enqueue_error", f"Topic '{topic}' refused: the queue module keeps {limit} topics "
                                                   f"with no subscriber (max_unsubscribed_topics {limit}), each "
                                                   f"holding jobs")
        if entry is None and len(self._topics) >= self.settings.max_topics:
            await self._reclaim_unused()
            entry = self._topics.get(topic)  # the sweep waited on the store: another call may have made it
            if entry is None and len(self._topics) >= self.settings.max_topics:
                # every topic keeps a consumer task: without a bound, enqueues to made-up topics grow the engine
                limit = self.settings.max_topics
                reason = (f"the queue module keeps {limit} topics (max_topics {limit}), each with jobs or "
                          "subscribers")
                raise EngineError("enqueue_error", f"Topic '{topic}' refused: {reason}")
        if entry is None:
            self._refuse_new_topic_when_stopping(topic)  # the stop may have begun during the sweep
            self._refuse_past_share(topic, maker)  # other calls may have made topics for it during the sweeps
            holder: list[_Topic] = []
            settings = self._forgotten_fifo.pop(topic, None) or self.settings.topic_settings()
            consumer = QueueConsumer(
                self.store,
                TOPIC_PREFIX + topic,
                settings,
                lambda job: self._run_topic(topic, job),
                # this entry's subscribers, not the dict's: a reclaimed topic's stopping consumer never claims
                # for a new topic of the same name
                can_claim=lambda: bool(holder[0].subscribers),
                on_idle=lambda: self._maybe_idle(topic, holder[0]),
                stop_timeout_ms=self.settings.stop_timeout_ms,
                store_failures=self._store_failures,
                poll_idle=self._store_shared,
            )
            entry = self._topics[topic] = _Topic(consumer, maker=maker)
            _count(self._made_for, maker, 1)
            holder.append(entry)
            consumer.start()
        return entry

    @property
    def _store_shared(self) -> bool:
        """Whether anything but this engine changes the store (a store that does not say is taken for shared)."""
        return bool(getattr(self.store, "shared", True))

    def _follow_subscribers(self, entry: _Topic) -> None:
        """Move ``entry``'s count to a worker whose trigger subscribes to it when the worker it counts against has
        none there: a worker reconnecting (a new id) registers its triggers again, and the topics they keep must
        count against it, not against the id gone (each reconnect gave a worker a new share on top of the topics it
        kept); a topic an enqueue made counts against its consumer, not its producer."""
        if entry.maker_triggers and entry.maker not in entry.maker_triggers:
            _count(self._made_for, entry.maker, -1)
            entry.maker = next(iter(entry.maker_triggers))
            _count(self._made_for, entry.maker, 1)

    def _past_share(self, maker: str) -> bool:
        """Whether ``maker`` has its ``max_topics_per_worker`` already (a share of all of ``max_topics`` is left to
        that bound, whose refusal says more). A hard share: letting a worker past it while a share stayed free (so one
        worker alone could take all but a share) let two workers take every topic, the second taking the share left
        free (40 topics, shares of 10: 30, 10 and 0 for a third worker, and the engine's own enqueues refused)."""
        share = self.settings.topics_per_worker
        return share < self.settings.max_topics and self._made_for.get(maker, 0) >= share

    def _refuse_past_share(self, topic: str, maker: str) -> None:
        """Refuse a new ``topic`` for ``maker`` when it has its ``max_topics_per_worker`` already."""
        if not self._past_share(maker):
            return
        made, share = self._made_for[maker], self.settings.topics_per_worker
        whose = f"worker {maker} made {made} of the module's topics, its" if maker else \
            f"the engine's own triggers and enqueues made {made} topics, their"
        raise EngineError("enqueue_error", f"Topic {_name(topic)} refused: {whose} share (max_topics_per_worker "
                                           f"{share}; a worker that needs more topics needs it raised); a topic "
                                           "counts until it has no subscriber, no job and no dead letter")

    def _unsubscribed_topics(self) -> int:
        return len(self._topics) - len(self._subscribed)

    def _refuse_new_topic_when_stopping(self, topic: str) -> None:
        if self._stopping:  # its consumer would outlive the stop
            raise EngineError("enqueue_error", f"Topic '{topic}' refused: the queue module is stopping")

    async def _reclaim_unused(self) -> None:
        """Forget topics nobody uses any more (no subscriber, no job in the store, dead letters included), so a
        module at ``max_topics`` takes new topics again instead of refusing them until a restart. Their
        consumers stop; a later enqueue or subscription makes the topic anew."""
        if self._sweep is not None:
            await asyncio.shield(self._sweep)
            return
        self._sweep = asyncio.get_running_loop().create_future()
        try:
            await self._sweep_once()
        finally:
            self._sweep.set_result(None)
            self._sweep = None

    async def _sweep_once(self) -> None:
        went_idle = self._went_idle
        batch = list(itertools.islice(went_idle, RECLAIM_BATCH))  # each looked at once per time it went idle
        for name in batch:
            del went_idle[name]
        now = time.monotonic()
        if now >= self._next_reclaim:  # changes this engine does not see (another engine on a shared store)
            self._next_reclaim = now + RECLAIM_INTERVAL_S
            names = list(self._topics)
            start = self._reclaim_from % len(names) if names else 0
            turn = (names[start:] + names[:start])[:RECLAIM_BATCH]
            self._reclaim_from = start + len(turn)
            seen = set(batch)
            batch += [name for name in turn if name not in seen]
        gone: list[QueueConsumer] = []
        for name in batch:
            entry = self._topics.get(name)
            if entry is None or not entry.unused():
                continue
            pushes = entry.pushes
            counts = await self.store.counts(entry.consumer.queue)
            if counts.waiting or counts.active or counts.delayed or counts.dlq:
                continue
            # Still unused after waiting on the store, and no enqueue began meanwhile (one may have begun and
            # stored its job after the counts were read).
            if self._topics.get(name) is entry and entry.unused() and entry.pushes == pushes:
                del self._topics[name]
                _count(self._made_for, entry.maker, -1)
                self._subscribed.discard(name)
                went_idle.pop(name, None)
                gone.append(entry.consumer)
                if entry.consumer.settings.fifo:
                    self._forgotten_fifo[name] = entry.consumer.settings
                    if len(self._forgotten_fifo) > self.settings.max_topics:
                        self._forgotten_fifo.popitem(last=False)
        for consumer in gone:
            await consumer.stop()
            if consumer.queue[len(TOPIC_PREFIX):] not in self._topics:  # not made anew meanwhile
                await self.store.forget(consumer.queue)
        if gone:
            log.info("queue module: forgot %d unused topics to make room under max_topics %d", len(gone),
                     self.settings.max_topics)

    # -- running jobs -----------------------------------------------------------------------------------------

    async def _run_named(self, name: str, job: Job) -> None:
        function_id = job.function_id
        if function_id is None:
            raise EngineError("invalid_job", f"job {job.id} has no function id")
        if not self.services.has_function(function_id):
            if self._others is not None:
                await self._leave_to_others(name, function_id)
            self._missing.check(name, function_id, self._named[name].settings, monotonic_ms())
        self._missing.found(name, function_id)
        await self._invoke_job(name, function_id, job.data, self._named[name].settings)

    def _put_off_look(self, name: str, function_id: str, now: int) -> int | None:
        """Until when queue ``name``'s store puts off the jobs of ``function_id`` at its claims (see
        :class:`QueueConsumer`): while no worker here serves it, its grace runs, and no other engine is known to."""
        if self.services.has_function(function_id) or (
                self._others is not None and self._others.left_to_others(name, function_id)):
            return None
        mono = monotonic_ms()
        look = self._missing.look(name, function_id, self._named[name].settings, mono)
        return None if look is None else self._missing.on_wall(look, now, mono)

    def _served_elsewhere(self, name: str, function_id: str) -> None:
        """Another engine sharing the store runs ``function_id``'s jobs in queue ``name``, whose store this engine
        had them put off in: they are left to it from now on."""
        self._missing.elsewhere(name, function_id)
        consumer = self._named.get(name)
        if consumer is not None:
            consumer.left_to_others(function_id)

    def _putting_off(self) -> list[tuple[str, str]]:
        return [(name, function_id) for name, consumer in self._named.items()
                for function_id in consumer.putting_off]

    async def _leave_to_others(self, name: str, function_id: str) -> None:
        """Put the job off, its attempt not counted and this engine's wait for the function not begun, while
        another live engine sharing the store runs ``function_id``'s jobs in queue ``name`` (or may: it has not
        looked yet); return when none does. Without it an engine lacking the function spent the attempts of jobs
        the other engine could run and, past its grace, dead-lettered them."""
        assert self._others is not None
        settings = self._named[name].settings
        try:
            where = await self._others.leave_to_others(name, function_id)
        except Exception as exc:  # the store fails: the job's own steps meet it too
            log.debug("queue %s: could not ask which engines serve %s: %r", _name(name), _name(function_id), exc)
            return
        if where == SERVED_ELSEWHERE:
            self._missing.elsewhere(name, function_id)
            # back in the queue at once for the engine serving it, which this engine's claims now leave it to; past
            # MAX_LEFT_TO_OTHERS functions, the job comes back here after a while instead of at once
            left = self._others.left_to_others(name, function_id)
            delay = 0 if left else min(max(settings.backoff_ms, 1), MISSING_FUNCTION_CHECK_MAX_MS)
            raise JobNotReady(function_id, delay_ms=delay)
        if where == UNKNOWN_YET:
            raise JobNotReady(function_id, delay_ms=self._others.refresh_ms, waits_for=function_id)

    def _wake_named(self) -> None:
        for consumer in self._named.values():
            consumer.wake()

    def _functions_changed(self) -> None:
        self._missing.registered(self.services.has_function)
        if self._others is not None:
            self._others.registered(self.services.has_function)
        # their jobs waiting for a function now registered run at once (a topic's: for its condition's function)
        for consumer in [*self._named.values(), *(entry.consumer for entry in self._topics.values())]:
            consumer.functions_changed(self.services.has_function)

    async def _run_topic(self, topic: str, job: Job) -> None:
        entry = self._topics[topic]
        subscribers = list(entry.subscribers.values())
        if not subscribers:
            raise EngineError("no_subscriber", f"no subscriber for topic job {job.id}")
        trigger = subscribers[next(entry.turn) % len(subscribers)]
        config = trigger.config if isinstance(trigger.config, dict) else {}
        condition, settings = config.get("condition_function_id"), entry.consumer.settings
        if isinstance(condition, str) and condition:
            if not self.services.has_function(condition):
                # a condition nobody serves has not decided: the job waits for it as a named queue's job waits for
                # its function (missing_function_grace_ms), then fails its attempt; it was skipped, done and never
                # run, when the condition's worker was away (a restart, a job whose condition call never reached it)
                self._missing.check(topic, condition, settings, monotonic_ms())
            self._missing.found(topic, condition)
        try:
            with self._put_off_if_busy(topic, str(condition), settings):
                passed = await self.services.condition_passes(condition, job.data, wait_if_busy=False)
        except CallNotSent as exc:
            # the condition did not decide: skipping the job (as for a condition that failed) lost it unrun
            raise self._not_sent(str(condition), exc, settings) from None
        if passed:
            await self._invoke_job(topic, trigger.function_id, job.data, settings)

    async def _invoke_job(self, queue: str, function_id: str, data: Any, settings: QueueSettings) -> None:
        with self._put_off_if_busy(queue, function_id, settings):
            try:
                await self.services.invoke(function_id, data)
            except CallNotSent as exc:
                raise self._not_sent(function_id, exc, settings) from None
            except EngineError as exc:
                if exc.code != RESULT_NOT_SENT:
                    raise
                # the handler ran to its end; only its result, which a queue drops anyway, could not be sent: the
                # job is done (before, it ran again up to max_retries and ended in the DLQ, its work done each time)
                self._unsent_results.lost("done", f"{_name(queue)}: {_name(function_id)} ({clip_text(exc.message)})")

    def _not_sent(self, function_id: str, exc: CallNotSent, settings: QueueSettings) -> JobNotReady:
        """How a job is put off whose call (to ``function_id``, the job's function or its condition) never reached
        its worker, which left while the frame waited for room in its queue: nothing ran, so no attempt is spent.
        Before, each was a failed attempt, and with one attempt allowed a job that never ran was dead-lettered.

        Tried again at once when another worker serves the function already (a rolling deploy's new version);
        else when a worker registers it, or after :data:`NOT_SENT_RECHECK_MS` (not the backoff: nothing failed).
        The wait is for the worker that left, which still serves the function until its connection's clean-up
        ends: every call routed to it meanwhile fails at once (with ``backoff_ms`` 0, a busy loop of about 40 tries
        per job), and a standby worker it shadowed takes over at that clean-up without any registration to wake
        the job (with the backoff as the wait, such jobs waited all of it, 10 s, a worker serving them). A function
        that is then missing begins its grace as any other.
        """
        owner = self.services.function_owner(function_id)
        if owner is None:
            return JobNotReady(function_id, delay_ms=NOT_SENT_RECHECK_MS, waits_for=function_id)
        if owner != exc.worker_id:
            return JobNotReady(function_id, delay_ms=0)
        # (not woken by registrations: the function is registered, to the worker that left, so every registration
        # of any function would bring the job back to fail again at once, about 20 tries per registration)
        return JobNotReady(function_id, delay_ms=NOT_SENT_RECHECK_MS)

    @contextmanager
    def _put_off_if_busy(self, queue: str, function_id: str, settings: QueueSettings) -> Iterator[None]:
        """A job whose worker refused it (or its condition) for being busy (our SDK's ``worker_busy``: nothing ran)
        is put off, its attempt not counted, until the spell has gone ``missing_function_grace_ms`` without
        progress (see :class:`BusyFunctions`): before, a busy spell spent the attempts of jobs that never ran and
        dead-lettered them (and a busy condition counted as "skip": the job was done, never run)."""
        key, token = (queue, function_id), next(self._call_tokens)
        calls = self._running.setdefault(key, {})
        calls[token] = monotonic_ms()
        try:
            yield
        except EngineError as exc:
            if exc.code != WORKER_BUSY:
                self._busy_since.ran(queue, function_id)
                raise
            now = monotonic_ms()
            # progress: another job of the function has been under way long enough to be running on the worker (a
            # refusal comes back at once; counting every call under way, overlapping refusals kept a worker that
            # ran nothing out of the dead-letter queue for good)
            progress = any(at <= now - BUSY_PROGRESS_MS for other, at in calls.items() if other != token)
            delay = self._busy_since.put_off(queue, function_id, settings, now, progress=progress)
            if delay is None:
                raise
            self._busy.lost("put_off", f"{_name(queue)}: {_name(function_id)}")
            raise JobNotReady(function_id, delay_ms=delay) from None
        else:
            self._busy_since.ran(queue, function_id)
        finally:
            del calls[token]
            if not calls:  # (while this call is under way, its dict stays the key's)
                del self._running[key]

    @staticmethod
    def _log_unsent_results(counts: Mapping[str, int], latest: str | None) -> None:
        log.warning("queue module: %d job(s) done whose handler's result could not be sent (result_not_sent: no JSON "
                    "form, or over the engine's message size limit); not run again%s", counts.get("done", 0),
                    f" (the latest: {latest})" if latest else "")

    @staticmethod
    def _log_busy(counts: Mapping[str, int], latest: str | None) -> None:
        log.warning("queue module: %d job(s) put off, not run, because their worker was busy (worker_busy: it runs "
                    "as many invocations as its max_invocations allows); tried again later, their attempts not "
                    "counted until missing_function_grace_ms%s", counts.get("put_off", 0),
                    f" (the latest: {latest})" if latest else "")

    # -- built-in functions ----------------------------------------------------------------------------------

    async def _enqueue_topic(self, data: Any, ctx: InvocationContext) -> None:
        if not isinstance(data, dict):
            raise EngineError("deserialization_error", "Failed to deserialize input for enqueue: expected an object")
        topic = data.get("topic")
        if not isinstance(topic, str) or not topic:
            raise EngineError("topic_not_set", "Topic is not set")
        if self._stopping:
            raise EngineError("enqueue_error", f"Topic '{topic}': the queue module is stopping")
        if self.bridge is not None:
            await self.bridge.enqueue_topic(topic, data.get("data"))
            return
        if topic in self._named:  # no queue trigger may subscribe to it (see register): its jobs would reach nobody
            raise EngineError("enqueue_error", f"Topic {_name(topic)} has the name of a named queue (queue_configs): "
                                               f"to queue a call of a function on it, use the enqueue action")
        entry = await self._topic(topic, maker=ctx.caller_worker_id or NO_WORKER)
        limit = entry.consumer.settings.max_jobs
        job: Job | None = None
        entry.pushing += 1
        entry.pushes += 1
        try:
            with self._store_op("enqueue_error", f"Topic '{topic}'"):
                await self._kept_fifo(entry)
                group = "" if entry.consumer.settings.fifo else None
                job = Job.new(entry.consumer.queue, None, data.get("data"), group)
                stored = await self.store.push(entry.consumer.queue, job, max_jobs=limit,
                                               unsubscribed=not entry.subscribers)
        except StoreFull as full:
            raise _no_room(topic, "topic", full) from None
        except EngineError:
            raise
        except Exception as exc:
            if job is None:  # the store failed before the job was made: it was never pushed
                raise EngineError("enqueue_error", f"Topic '{topic}': the job was not enqueued: "
                                                   f"{type(exc).__name__}: {clip_text(str(exc))}") from exc
            raise _push_failed(f"Topic '{topic}'", job.id, exc) from exc
        finally:
            entry.pushing -= 1
        if not stored:
            raise EngineError("enqueue_error", _full(topic, "topic", limit))
        entry.consumer.wake()

    async def _kept_fifo(self, entry: _Topic) -> None:
        """A topic with no subscriber here takes the type its subscriber kept in the store (another engine's, or
        this one's before a restart), read at most once a second per topic, either way: a subscriber that changed
        the type elsewhere changes it here (a topic once read FIFO kept one lane for good, its jobs waiting behind a
        hung one after the subscriber went standard). Enqueues arriving while the read is under way wait for its
        answer (they stamped their jobs standard before, and ran at once, out of order). A subscriber here sets
        the type; a store that cannot tell (``None``: in memory) changes nothing."""
        if entry.subscribers:
            return
        read = entry.fifo_read
        if read is None or read.done():
            now = time.monotonic()
            if now - entry.fifo_read_at < FIFO_READ_INTERVAL_S:
                return
            entry.fifo_read_at = now
            read = entry.fifo_read = asyncio.get_running_loop().create_task(
                self.store.topic_fifo(entry.consumer.queue))
        fifo = await asyncio.shield(read)
        if fifo is None or entry.subscribers or fifo == entry.consumer.settings.fifo:
            return
        entry.consumer.settings = self.settings.topic_settings({"type": "fifo"} if fifo else None)

    async def _redrive_within(self, function_id: str, name: str, consumer: QueueConsumer,
                              message_id: str | None) -> int:
        """Move dead letters back while the queue has room (``max_jobs`` bounds redriven jobs as enqueued ones)."""
        limit = consumer.settings.max_jobs
        what = "redrive DLQ" if function_id == "iii::queue::redrive" else "handle DLQ message"
        try:
            with self._store_op("redrive_failed", f"Failed to {what} for queue '{name}'"):
                return await self.store.redrive(consumer.queue, message_id, max_jobs=limit)
        except QueueFull as full:
            kind = "queue" if self._named.get(name) is consumer else "topic"
            raise EngineError("redrive_failed", f"Failed to {what} for queue '{name}': {_full(name, kind, limit)}; "
                                                f"{full.moved} moved, the rest stay in the DLQ") from None
        finally:
            consumer.wake()

    def _resolve(self, function_id: str, data: Any, key: str) -> tuple[str, QueueConsumer]:
        name = _text_arg(function_id, data, key)
        if self.bridge is not None:  # the dead letters live on the remote
            action = "redrive DLQ" if function_id == "iii::queue::redrive" else "handle DLQ message"
            raise EngineError("redrive_failed", f"Failed to {action} for queue '{name}': {NO_DLQ}")
        consumer = self._named.get(name)
        if consumer is None and name in self._topics:
            consumer = self._topics[name].consumer
        if consumer is None:
            raise EngineError("queue_not_found", f"Queue {_name(name)} not found")
        return name, consumer

    async def _redrive(self, data: Any, ctx: InvocationContext) -> dict[str, Any]:
        """``{queue}`` → ``{queue, redriven}``."""
        name, consumer = self._resolve("iii::queue::redrive", data, "queue")
        moved = await self._redrive_within("iii::queue::redrive", name, consumer, None)
        return {"queue": name, "redriven": moved}

    async def _redrive_message(self, data: Any, ctx: InvocationContext) -> dict[str, Any]:
        """``{queue, message_id}`` → ``{queue, message_id, redriven: 0|1}``."""
        name, consumer = self._resolve("iii::queue::redrive_message", data, "queue")
        message_id = _text_arg("iii::queue::redrive_message", data, "message_id")
        moved = await self._redrive_within("iii::queue::redrive_message", name, consumer, message_id)
        return {"queue": name, "message_id": message_id, "redriven": moved}

    async def _discard_message(self, data: Any, ctx: InvocationContext) -> dict[str, Any]:
        """``{queue, message_id}`` → ``{queue, message_id, redriven: 0|1}`` (the count of discarded letters)."""
        name, consumer = self._resolve("iii::queue::discard_message", data, "queue")
        message_id = _text_arg("iii::queue::discard_message", data, "message_id")
        with self._store_op("redrive_failed", f"Failed to handle DLQ message for queue '{name}'"):
            discarded = await self.store.discard(consumer.queue, message_id)
        entry = self._topics.get(name)
        if discarded and entry is not None and entry.consumer is consumer:
            self._maybe_idle(name, entry)
        return {"queue": name, "message_id": message_id, "redriven": discarded}

    def _all(self) -> list[tuple[str, str, QueueConsumer]]:
        named = [(name, "queue", c) for name, c in self._named.items()]
        return named + [(name, "topic", t.consumer) for name, t in self._topics.items()]

    async def _list_topics(self, data: Any, ctx: InvocationContext) -> dict[str, Any]:
        """→ ``{"topics": [{"topic", "kind": "queue"|"topic", "type": "standard"|"fifo", "subscribers"}]}``."""
        return {
            "topics": [
                {
                    "topic": name,
                    "kind": kind,
                    "type": "fifo" if c.settings.fifo else "standard",
                    "subscribers": len(self._topics[name].subscribers) if kind == "topic" else None,
                }
                for name, kind, c in self._all()
            ]
        }

    async def _topic_stats(self, data: Any, ctx: InvocationContext) -> dict[str, Any]:
        """``{topic}`` → ``{topic, waiting, active, delayed, dlq}``."""
        name, consumer = self._resolve("engine::queue::topic_stats", data, "topic")
        with self._store_op(_STOPPED, f"Topic stats for '{name}'"):
            counts = await self.store.counts(consumer.queue)
        return {
            "topic": name,
            "waiting": counts.waiting,
            "active": counts.active,
            "delayed": counts.delayed,
            "dlq": counts.dlq,
        }

    async def _dlq_topics(self, data: Any, ctx: InvocationContext) -> dict[str, Any]:
        """→ ``{"topics": [{"topic", "count"}]}`` for every queue or topic with dead letters."""
        out = []
        with self._store_op(_STOPPED, "Dead-letter topics"):
            for name, _, consumer in self._all():
                count = (await self.store.counts(consumer.queue)).dlq
                if count:
                    out.append({"topic": name, "count": count})
        return {"topics": out}

    async def _dlq_messages(self, data: Any, ctx: InvocationContext) -> dict[str, Any]:
        """``{topic, offset?=0, limit?=50}`` → ``{topic, total, offset, limit, messages}``.

        Each message is ``{id, job, error, failed_at}``.
        """
        function_id = "engine::queue::dlq_messages"
        name, consumer = self._resolve(function_id, data, "topic")
        offset, limit = _int_arg(function_id, data, "offset", 0), _int_arg(function_id, data, "limit", 50)
        with self._store_op(_STOPPED, f"Dead letters of '{name}'"):
            letters = await self.store.dlq_page(consumer.queue, offset, limit)
            total = (await self.store.counts(consumer.queue)).dlq
        messages = [_listed(letter.job.id, letter.as_dict()) for letter in letters]
        return {"topic": name, "total": total, "offset": offset, "limit": limit, "messages": messages}
