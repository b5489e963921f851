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
is not registered waits for it (checked every ``backoff_ms``) instead of burning its attempts, so jobs survive
workers reconnecting after an engine restart; the console functions' result shapes are ours (documented on each
function).

Example (engine configuration):
    >>> QueueModule.class_names
    ('modules::queue::QueueModule',)
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.iii_types import TriggerInfo
from iii.protocol.worker_session import clip_text
from iii.wire import LOG_CLIP, clip, dumps

from ...closing import close_store
from ...settings import RedisAdapterSettings
from ..base import BuiltinFunction, BuiltinHandler, EngineError, EngineModule, EngineServices, InvocationContext
from ..bridge.queue import NO_DLQ, BridgeQueue
from .consumer import JobNotReady, QueueConsumer
from .settings import QueueModuleSettings, QueueSettings
from .store import Job, MemoryQueueStore, QueueFull, QueueStore, StoreFull

log = logging.getLogger(__name__)

NAMED_PREFIX = "__fn_queue::"
TOPIC_PREFIX = "__topic::"
_STOPPED = "invocation_stopped"  # a stats or dead-letter read refused once the module is stopping


def _unconfirmed(what: str, job_id: str, exc: Exception) -> EngineError:
    """A push whose outcome is unknown: a connection lost after it was sent may have stored the job, and then it
    runs; the caller is told so, with the job id (its receipt), not that it failed."""
    return EngineError("enqueue_error", f"{what}: the store did not confirm job {job_id}: {clip_text(str(exc))} "
                                        "(if it reached the store, it will run)")


def open_store(settings: QueueModuleSettings) -> QueueStore:
    """The job store the settings' ``adapter`` names (with the Bridge adapter the jobs live on the remote, and
    this store stays empty).

    Example:
        >>> type(open_store(QueueModuleSettings())).__name__
        'MemoryQueueStore'
    """
    adapter = settings.store_adapter[1]
    if isinstance(adapter, RedisAdapterSettings):
        from .redis_store import RedisQueueStore

        return RedisQueueStore(adapter.redis_url, key_prefix=adapter.key_prefix)
    return MemoryQueueStore(max_bytes=settings.max_memory_bytes)


RECLAIM_INTERVAL_S = 1.0
"""At most one round-robin sweep for idle topics per this many seconds: a sweep reads the store once per topic it
looks at. Topics this engine saw go idle (last subscriber gone, last running job finished, a dead letter
discarded) are looked at on the next need for room whatever the time, each once per such event."""

RECLAIM_BATCH = 256
"""Topics one sweep looks at: a sweep's cost stays bounded however many topics there are."""


@dataclass
class _Topic:
    consumer: QueueConsumer
    subscribers: dict[str, TriggerInfo] = field(default_factory=dict)
    turn: itertools.count[int] = field(default_factory=itertools.count)
    #: enqueues between finding this topic and storing their job: a sweep must not drop it under them
    pushing: int = 0
    #: enqueues begun here so far: one that began and ended while a sweep read the store changed what it read
    pushes: int = 0

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
    """Why an enqueue to ``name`` was refused by the in-memory store's byte bound, naming the setting."""
    what = "Queue" if kind == "queue" else "Topic"
    return EngineError("enqueue_error", f"{what} '{name}': a job of {full.size} bytes does not fit: the in-memory "
                                        f"queue store holds {full.used} of its {full.limit} bytes of jobs and dead "
                                        "letters (max_memory_bytes)")


MAX_PAGE_ARG = 2**53 - 1
"""Largest ``offset`` or ``limit`` of a dead-letter page: Redis takes 64-bit indexes only, and a larger one failed
there with Redis's own error instead of naming the argument."""


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
        self.store: QueueStore = MemoryQueueStore()
        self._named: dict[str, QueueConsumer] = {}
        self._topics: dict[str, _Topic] = {}
        self._topic_of_trigger: dict[str, str] = {}
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

    async def start(self) -> None:
        """Open the store, start one consumer per configured queue, register functions and ``queue``."""
        self.store = open_store(self.settings)
        if isinstance(self.settings.store_adapter[1], RedisAdapterSettings):
            self._eviction_check = asyncio.get_running_loop().create_task(self._warn_if_evicting(),
                                                                          name="queue-eviction-check")
        bridge_url = self.settings.bridge_url
        if bridge_url is not None:
            self.bridge = BridgeQueue(self.services, bridge_url)
            self.bridge.start()
        for name, queue_settings in self.settings.queue_configs.items():
            consumer = QueueConsumer(self.store, NAMED_PREFIX + name, queue_settings, self._run_named,
                                     stop_timeout_ms=self.settings.stop_timeout_ms)
            self._named[name] = consumer
            consumer.start()
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

    async def stop(self) -> None:
        """Stop every consumer (jobs whose handler finished are stored as done, retried or dead; those still running
        go back to the store), let store operations under way end, then close the store; the whole stop waits at
        most ``stop_timeout_ms``."""
        self._stopping = True
        self.services.serve_named_queues(None)
        if self._eviction_check is not None:
            self._eviction_check.cancel()
        loop = asyncio.get_running_loop()
        # one bound for the whole stop, not one per step: the sweep, the consumers and the store operations share it
        deadline = loop.time() + self.settings.stop_timeout_ms / 1000
        if self._sweep is not None:  # it stops the consumers of the topics it forgets
            await asyncio.wait({self._sweep}, timeout=max(0.0, deadline - loop.time()))
        consumers = [*self._named.values(), *(t.consumer for t in self._topics.values())]
        await asyncio.gather(*(consumer.stop(deadline) for consumer in consumers))
        if self._store_ops:
            try:
                await asyncio.wait_for(self._no_store_ops.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                log.warning("queue module: %d store operation(s) (enqueue, redrive, discard, stats) still under way "
                            "after the stop's %d ms; closing the store under them", self._store_ops,
                            self.settings.stop_timeout_ms)
        if self.bridge is not None:
            await close_store(self.bridge.close(), "the queue module's bridge link")
        await close_store(self.store.close(), f"the queue module's store ({type(self.store).__name__})")

    async def _warn_if_evicting(self) -> None:
        """Say at start when Redis may evict keys: an evicting ``maxmemory-policy`` deletes queued jobs without a
        word to anyone, the one loss the module cannot see or report."""
        from .redis_store import RedisQueueStore

        if isinstance(self.store, RedisQueueStore) and (policy := await self.store.eviction_policy()) is not None:
            log.warning("queue module: Redis's maxmemory-policy is %r: when Redis reaches maxmemory it may delete "
                        "queued jobs silently; set maxmemory-policy noeviction (then a full Redis fails the enqueue "
                        "with enqueue_error)", policy)

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
            raise _unconfirmed(f"Queue '{queue_name}'", job.id, exc) from exc
        if not stored:
            raise EngineError("enqueue_error", _full(queue_name, "queue", limit))
        consumer.wake()
        return job.id

    # -- the `queue` trigger type ---------------------------------------------------------------------------

    async def register(self, trigger: TriggerInfo) -> None:
        """Subscribe ``trigger.function_id`` to its topic (empty topic: warning, nothing subscribed)."""
        config = trigger.config if isinstance(trigger.config, dict) else {}
        topic = config.get("topic")
        if not isinstance(topic, str) or not topic:
            await self.unregister(trigger)
            log.warning("queue trigger %s has no topic; nothing subscribed", trigger.id)
            return
        if self.bridge is not None:
            await self.unregister(trigger)
            await self.bridge.subscribe(trigger, topic)
            return
        # The topic first: a new one past max_topics is refused, and the engine then keeps the trigger's earlier
        # registration, so its subscription must still be there.
        entry = await self._topic(topic)
        await self.unregister(trigger)
        if not entry.subscribers:
            # The first subscriber's queue_config shapes the topic queue.
            entry.consumer.settings = QueueSettings.from_topic(config.get("queue_config"),
                                                               self.settings.max_topic_jobs)
        entry.subscribers[trigger.id] = trigger
        self._topic_of_trigger[trigger.id] = topic
        entry.consumer.wake()

    async def unregister(self, trigger: TriggerInfo) -> None:
        """Remove the subscription of ``trigger.id``; its topic's jobs wait for another subscriber."""
        if self.bridge is not None:
            self.bridge.unsubscribe(trigger.id)
        topic = self._topic_of_trigger.pop(trigger.id, None)
        if topic is not None:
            entry = self._topics[topic]
            entry.subscribers.pop(trigger.id, None)
            self._maybe_idle(topic, entry)

    def _maybe_idle(self, topic: str, entry: _Topic) -> None:
        """``topic`` may have nothing left to keep it (a subscriber left, a job finished, a letter went)."""
        if self._topics.get(topic) is entry and entry.unused():
            self._went_idle[topic] = None

    async def _topic(self, topic: str) -> _Topic:
        entry = self._topics.get(topic)
        if entry is None:
            self._refuse_new_topic_when_stopping(topic)
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
            holder: list[_Topic] = []
            settings = self._forgotten_fifo.pop(topic, None) or QueueSettings(max_jobs=self.settings.max_topic_jobs)
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
            )
            entry = self._topics[topic] = _Topic(consumer)
            holder.append(entry)
            consumer.start()
        return entry

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

    async def _run_named(self, job: Job) -> None:
        if job.function_id is None:
            raise EngineError("invalid_job", f"job {job.id} has no function id")
        if not self.services.has_function(job.function_id):
            raise JobNotReady(job.function_id)
        await self.services.invoke(job.function_id, job.data)

    async def _run_topic(self, topic: str, job: Job) -> None:
        entry = self._topics[topic]
        subscribers = list(entry.subscribers.values())
        if not subscribers:
            raise EngineError("no_subscriber", f"no subscriber for topic job {job.id}")
        trigger = subscribers[next(entry.turn) % len(subscribers)]
        config = trigger.config if isinstance(trigger.config, dict) else {}
        if await self.services.condition_passes(config.get("condition_function_id"), job.data):
            await self.services.invoke(trigger.function_id, job.data)

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
        entry = await self._topic(topic)
        group = "" if entry.consumer.settings.fifo else None
        job = Job.new(entry.consumer.queue, None, data.get("data"), group)
        limit = entry.consumer.settings.max_jobs
        entry.pushing += 1
        entry.pushes += 1
        try:
            with self._store_op("enqueue_error", f"Topic '{topic}'"):
                stored = await self.store.push(entry.consumer.queue, job, max_jobs=limit)
        except StoreFull as full:
            raise _no_room(topic, "topic", full) from None
        except EngineError:
            raise
        except Exception as exc:
            raise _unconfirmed(f"Topic '{topic}'", job.id, exc) from exc
        finally:
            entry.pushing -= 1
        if not stored:
            raise EngineError("enqueue_error", _full(topic, "topic", limit))
        entry.consumer.wake()

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
        messages = [{"id": letter.job.id, **letter.as_dict()} for letter in letters]
        return {"topic": name, "total": total, "offset": offset, "limit": limit, "messages": messages}
