"""Settings of the queue module (docs/reference/payloads.md#queues-enqueue-and-the-enqueue-action): ``queue_configs``
(one entry per named queue) and ``adapter``.

Adapters: ``modules::queue::BuiltinQueueAdapter`` (default, jobs in memory), ``modules::queue::RedisAdapter``
(``redis_url``, our ``key_prefix``) and ``modules::queue::adapters::Bridge`` (``bridge_url``). Unknown keys are
logged and ignored.

Example:
    >>> QueueModuleSettings.parse({"queue_configs": {"payment": {"type": "fifo"}}})
    Traceback (most recent call last):
    ...
    iii_engine.settings.ConfigError: queue_configs.payment: a fifo queue needs a 'message_group_field'
    >>> QueueModuleSettings.parse({"queue_configs": {"default": {"max_retries": 0}}})
    Traceback (most recent call last):
    ...
    iii_engine.settings.ConfigError: queue_configs.default.max_retries: must be >= 1, got 0
    >>> QueueModuleSettings.parse({"queue_configs": {"orders": {"message_group_field": "customer"}}}).queue_configs[
    ...     "orders"].fifo  # kept, as production keeps it, with a warning: a standard queue never reads it
    False
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import cached_property
from typing import Any, ClassVar, Literal, Self

from pydantic import model_validator

from ...settings import (
    AdapterSpec,
    ConfigError,
    Field,
    NonEmpty,
    NoSettings,
    RedisAdapterSettings,
    Settings,
    UnknownKeys,
    pick_adapter,
)
from .. import bridge as _bridge  # noqa: F401 - the package before its modules (CPython gh-83065)
from ..bridge.settings import BridgeAdapterSettings

__all__ = ["BRIDGE_ADAPTER", "BUILTIN_ADAPTER", "REDIS_ADAPTER", "QueueModuleSettings", "QueueSettings"]

log = logging.getLogger(__name__)

BUILTIN_ADAPTER = "modules::queue::BuiltinQueueAdapter"
DEFAULT_MAX_JOBS = 100_000
DEFAULT_MAX_MEMORY_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_TOPICS = 10_000
DEFAULT_MAX_UNSUBSCRIBED_TOPIC_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_TOPIC_CONCURRENCY = 100
DEFAULT_MAX_TOPIC_RETRIES = 10
DEFAULT_MAX_TOPIC_BACKOFF_MS = 60_000
DEFAULT_STOP_TIMEOUT_MS = 5000
DEFAULT_MISSING_FUNCTION_GRACE_MS = 60_000
DEFAULT_SERVED_FUNCTIONS_TTL_MS = 10_000
MAX_SERVED_FUNCTIONS_TTL_MS = 300_000
"""Longest ``served_functions_ttl_ms``: an engine that crashed is taken for live this long, and the jobs it was the
one to run wait for it, their grace not started (a day's TTL held them a day, unlogged). Refreshes come every second
at most, so a longer TTL buys nothing."""
DEFAULT_STORE_RETRY_MAX_MS = 5000
"""Longest wait between two polls of a store that keeps failing (``store_retry_max_ms``): a store that is down
is polled about once per this by each consumer, and a store back up is seen within it (an enqueue that reaches it
wakes its queue's consumer at once)."""
DEFAULT_IDLE_POLL_MAX_MS = 1000
"""Longest wait between two polls of an idle queue on a shared store (``idle_poll_max_ms``): another engine's push is
seen within it."""
DEFAULT_MAX_UNSUBSCRIBED_TOPICS = 1000
"""Topics with no subscriber the module keeps (``max_unsubscribed_topics``)."""
MIN_DEFAULT_TOPICS_PER_WORKER = 100
"""The least ``max_topics_per_worker`` defaults to (a quarter of ``max_topics`` otherwise): under a small
``max_topics`` a quarter is a handful of topics, and one worker then could not use the few a test or a small
deployment sets (every one of them when ``max_topics`` is this or less)."""
MISSING_FUNCTION_CHECK_MAX_MS = 5000
"""Longest wait between two looks at a job whose function is not registered (unless ``backoff_ms`` is longer).
A worker registering the function gets its jobs at once (the consumer is told, and makes them due); only jobs past
the 4,096 put-off lanes a consumer remembers wait for their look, within this."""
REDIS_ADAPTER = "modules::queue::RedisAdapter"
BRIDGE_ADAPTER = "modules::queue::adapters::Bridge"


class QueueSettings(Settings):
    """One queue's settings; ``poll_interval_ms``, ``lease_ms`` (Redis crash recovery) and ``max_jobs`` are ours.

    ``max_jobs``: jobs the queue holds waiting, delayed or running (dead letters not counted); an enqueue past it
    fails with ``enqueue_error`` naming the queue and the setting, so a producer faster than its consumers meets
    an error instead of growing the store without end.

    ``missing_function_grace_ms`` (named queues): how long the jobs of a function nobody has registered wait for a
    worker to register it (a worker reconnecting after an engine restart, or starting after it), their attempts not
    counted; checked again after as long as the function has been missing (at least ``backoff_ms``, at most
    :data:`MISSING_FUNCTION_CHECK_MAX_MS` or ``backoff_ms`` if larger), so waiting jobs cost little. Past it their
    attempts fail with ``function_not_found`` naming the function, and after ``max_retries`` they are in the
    dead-letter queue (redrive them once the function is there). ``0`` fails them at once, as production does.

    ``store_retry_max_ms``: while polls of the store fail (Redis down), the longest wait before the next poll
    (:meth:`store_retry_ms`) doubles from ``poll_interval_ms`` up to this (a cap never below ``poll_interval_ms``),
    and each wait is a random 50-100 % of that longest so consumers do not poll in step: the first wait after a
    failure is 50-100 % of ``poll_interval_ms``, so shorter than it may be. The first poll that succeeds brings the
    longest back to ``poll_interval_ms``. Without it
    every consumer polled a store that was down at ``poll_interval_ms`` (10 per second each by default).

    Example:
        >>> QueueSettings().backoff_for(3)
        4000
        >>> QueueSettings().missing_function_grace_ms
        60000
    """

    unknown_keys: ClassVar[UnknownKeys] = "warn"
    label: ClassVar[str] = "queue_configs entry"

    type: Literal["standard", "fifo"] = "standard"
    message_group_field: NonEmpty | None = None
    max_retries: int = Field(3, ge=1)
    concurrency: int = Field(10, ge=1)
    backoff_ms: int = Field(1000, ge=0)
    poll_interval_ms: int = Field(100, ge=1)
    lease_ms: int = Field(60_000, ge=1)
    max_jobs: int = Field(DEFAULT_MAX_JOBS, ge=1)
    missing_function_grace_ms: int = Field(DEFAULT_MISSING_FUNCTION_GRACE_MS, ge=0)
    store_retry_max_ms: int = Field(DEFAULT_STORE_RETRY_MAX_MS, ge=1)
    #: with a store other engines share (Redis), the longest wait between two polls of an idle queue: each poll that
    #: finds nothing doubles the wait from ``poll_interval_ms`` up to this, and a push, subscription or redrive on
    #: this engine (or a job found) brings it back; a push by another engine is seen within it. The in-memory store
    #: is never polled idle (every change to it wakes its consumer). Before, each of 1,000 idle topics on Redis
    #: polled every ``poll_interval_ms``: 0.72 of a core and 10,700 Redis commands a second
    idle_poll_max_ms: int = Field(DEFAULT_IDLE_POLL_MAX_MS, ge=1)

    def idle_poll_ms(self, idle_polls: int) -> int:
        """Wait before the next poll of an idle queue after ``idle_polls`` polls in a row found nothing:
        ``poll_interval_ms`` doubled per poll past the first, at most ``idle_poll_max_ms`` (never below
        ``poll_interval_ms``).

        Example:
            >>> [QueueSettings(poll_interval_ms=100, idle_poll_max_ms=500).idle_poll_ms(n) for n in (0, 1, 2, 3, 9)]
            [100, 100, 200, 400, 500]
        """
        if idle_polls <= 1:
            return self.poll_interval_ms
        return min(self.poll_interval_ms << min(idle_polls - 1, 32), max(self.idle_poll_max_ms, self.poll_interval_ms))

    @property
    def fifo(self) -> bool:
        """Strict order per message group."""
        return self.type == "fifo"

    def backoff_for(self, attempts: int) -> int:
        """Delay before the next try after ``attempts`` failed attempts: ``backoff_ms * 2**(attempts - 1)``."""
        return int(self.backoff_ms * 2 ** max(attempts - 1, 0))

    @property
    def store_retry_cap_ms(self) -> int:
        """The longest wait between two polls of a failing store: ``store_retry_max_ms``, never below
        ``poll_interval_ms``.

        Example:
            >>> QueueSettings(poll_interval_ms=100, store_retry_max_ms=50).store_retry_cap_ms
            100
        """
        return max(self.store_retry_max_ms, self.poll_interval_ms)

    def store_retry_ms(self, failures: int) -> int:
        """Longest wait before the next poll after ``failures`` failed polls in a row: ``poll_interval_ms`` doubled
        per failure past the first, at most ``store_retry_max_ms`` (never below ``poll_interval_ms``).

        Example:
            >>> [QueueSettings(poll_interval_ms=100, store_retry_max_ms=500).store_retry_ms(n) for n in (1, 2, 3, 9)]
            [100, 200, 400, 500]
        """
        if failures < 1:
            raise ValueError(f"failures must be >= 1, got {failures}")
        cap = self.store_retry_cap_ms
        # the exponent is bounded: a store down for days must not build a number with thousands of digits
        return min(self.poll_interval_ms << min(failures - 1, 32), cap)

    @classmethod
    def from_topic(cls, queue_config: Any, max_jobs: int = DEFAULT_MAX_JOBS, caps: Mapping[str, int] | None = None,
                   clamped: list[str] | None = None) -> QueueSettings:
        """Settings from a ``queue`` trigger's camelCase ``queue_config`` (worker input: bad values are defaults);
        ``max_jobs`` is the module's ``max_topic_jobs``, never the worker's. ``caps`` (field name → most allowed:
        the module's ``max_topic_*``) bound the worker's values and the defaults alike; each worker's value cut to
        its cap is told in ``clamped`` as ``"<key> <asked> → <cap>"``.

        Example:
            >>> QueueSettings.from_topic({"type": "fifo", "maxRetries": 2}).max_retries
            2
            >>> told: list[str] = []
            >>> QueueSettings.from_topic({"concurrency": 10**9}, caps={"concurrency": 100}, clamped=told).concurrency
            100
            >>> told
            ['concurrency 1000000000 → 100']
        """
        cfg = queue_config if isinstance(queue_config, dict) else {}
        picked = {name: (key, cfg.get(key)) for name, key in
                  (("max_retries", "maxRetries"), ("concurrency", "concurrency"), ("backoff_ms", "backoffDelayMs"))}
        usable: dict[str, Any] = {name: value for name, (_, value) in picked.items()
                                  if isinstance(value, int) and not isinstance(value, bool) and value > 0}
        for name, cap in (caps or {}).items():
            asked = usable.get(name, cls.model_fields[name].default)
            if asked > cap:
                usable[name] = cap
                if name in picked and picked[name][1] == asked and clamped is not None:
                    clamped.append(f"{picked[name][0]} {asked} → {cap}")
        return cls(type="fifo" if cfg.get("type") == "fifo" else "standard", max_jobs=max_jobs, **usable)


class QueueModuleSettings(Settings):
    """The queue module's settings."""

    unknown_keys: ClassVar[UnknownKeys] = "warn"
    label: ClassVar[str] = "queue settings"

    queue_configs: dict[str, QueueSettings] = Field(default_factory=dict)
    #: topics the module keeps (each has a consumer); an enqueue to, or a trigger on, a new topic past it fails
    max_topics: int = Field(DEFAULT_MAX_TOPICS, ge=1)
    #: topics with no subscriber on this engine the module keeps (within ``max_topics``): an enqueue making a new topic
    #: past it fails with ``enqueue_error`` naming it, so enqueues to made-up topics, which any worker may send,
    #: leave room for the topics a ``queue`` trigger subscribes to (before, one worker's 10,000 made-up topics took
    #: every one of ``max_topics`` and the next worker's trigger and enqueues were refused until a restart)
    max_unsubscribed_topics: int = Field(DEFAULT_MAX_UNSUBSCRIBED_TOPICS, ge=1)
    #: topics the module keeps made for one worker (default :attr:`topics_per_worker`: a quarter of ``max_topics``,
    #: at least 100, at most all of them; never above ``max_topics``): a topic that did not exist counts against the
    #: worker that registered the ``queue`` trigger subscribing to it, or the worker whose enqueue sent to it (the
    #: engine's own triggers and enqueues share one such share), and moves to a worker whose trigger subscribes to it
    #: whenever the one it counts against has none there (a worker reconnecting, or a topic's consumer after its
    #: producer), until it is forgotten (no subscriber, no job, no dead letter), also after that worker left; past
    #: it that worker's next new topic fails with ``enqueue_error`` naming it (a worker that needs more raises it).
    #: Topics of ``queue_configs`` are named queues and never count.
    max_topics_per_worker: int | None = Field(None, ge=1)
    #: ``max_jobs`` of every topic (a topic has no ``queue_configs`` entry, and its subscribers may not raise it)
    max_topic_jobs: int = Field(DEFAULT_MAX_JOBS, ge=1)
    #: UTF-8 bytes of JSON the in-memory store (``BuiltinQueueAdapter``) keeps for the jobs and dead letters of every
    #: queue and topic together; an enqueue past it fails with ``enqueue_error`` naming it (``max_jobs`` counts
    #: jobs, and 100,000 jobs of up to 4 MiB each are 400 GB). Redis keeps its own jobs: its ``maxmemory`` bounds them
    max_memory_bytes: int = Field(DEFAULT_MAX_MEMORY_BYTES, ge=1)
    #: bytes every topic's jobs and dead letters take together (default: half of ``max_memory_bytes``), counted as
    #: ``max_memory_bytes`` counts them in memory, as their JSON in Redis; an enqueue to a topic past it fails with
    #: ``enqueue_error`` naming it, so enqueues to made-up topics, which any worker may send, leave the named queues
    #: the rest (before, one worker's topic jobs filled the store and the named queues' enqueues failed until a
    #: restart)
    max_topic_bytes: int | None = Field(None, ge=1)
    #: bytes the jobs and dead letters of the topics with no subscriber take together, in the in-memory store (engines
    #: sharing a Redis store do not know each other's subscribers); an enqueue to such a topic past it fails with
    #: ``enqueue_error`` naming it, so jobs nobody takes leave room to the topics someone consumes
    max_unsubscribed_topic_bytes: int = Field(DEFAULT_MAX_UNSUBSCRIBED_TOPIC_BYTES, ge=1)
    #: the most a topic's subscriber may ask in its ``queue_config``: ``concurrency`` (jobs running at once, each
    #: held in the engine), ``maxRetries`` and ``backoffDelayMs`` (with more, a failing job cycled for ever before
    #: reaching the DLQ); larger asks are cut to these, logged once per topic
    max_topic_concurrency: int = Field(DEFAULT_MAX_TOPIC_CONCURRENCY, ge=1)
    max_topic_retries: int = Field(DEFAULT_MAX_TOPIC_RETRIES, ge=1)
    max_topic_backoff_ms: int = Field(DEFAULT_MAX_TOPIC_BACKOFF_MS, ge=0)
    #: how long a stop waits for the store to finish (done, retry, dead letter) the jobs whose handler ended and to
    #: take back those still running; a job it has not by then stays active until its ``lease_ms`` runs out
    stop_timeout_ms: int = Field(DEFAULT_STOP_TIMEOUT_MS, ge=1)
    #: with the Redis adapter, how long the (named queue, function) pairs this engine runs (its workers serve the
    #: function, it consumes the queue) stay advertised to the other engines sharing the store (refreshed every
    #: third of it): an engine lacking a function leaves its jobs in a queue to another live engine running that
    #: pair, its own ``missing_function_grace_ms`` applying only once none does; an engine that crashed stops
    #: counting after its own TTL, whatever the others' are (at most :data:`MAX_SERVED_FUNCTIONS_TTL_MS`)
    served_functions_ttl_ms: int = Field(DEFAULT_SERVED_FUNCTIONS_TTL_MS, ge=30, le=MAX_SERVED_FUNCTIONS_TTL_MS)
    adapter: AdapterSpec | None = None

    @property
    def topic_bytes(self) -> int:
        """``max_topic_bytes``, or half of ``max_memory_bytes`` when unset.

        Example:
            >>> QueueModuleSettings().topic_bytes == 128 * 1024 * 1024
            True
        """
        return self.max_topic_bytes or max(self.max_memory_bytes // 2, 1)

    @property
    def topics_per_worker(self) -> int:
        """``max_topics_per_worker``, or when unset a quarter of ``max_topics``, at least
        :data:`MIN_DEFAULT_TOPICS_PER_WORKER` (all of ``max_topics`` when fewer).

        Example:
            >>> [QueueModuleSettings(max_topics=n).topics_per_worker for n in (10_000, 1_000, 2)]
            [2500, 250, 2]
        """
        return self.max_topics_per_worker or min(max(self.max_topics // 4, MIN_DEFAULT_TOPICS_PER_WORKER),
                                                 self.max_topics)

    @property
    def topic_caps(self) -> dict[str, int]:
        """The caps of a topic's settings a subscriber may ask (``QueueSettings`` field → most allowed)."""
        return {"concurrency": self.max_topic_concurrency, "max_retries": self.max_topic_retries,
                "backoff_ms": self.max_topic_backoff_ms}

    def topic_settings(self, queue_config: Any = None, clamped: list[str] | None = None) -> QueueSettings:
        """A topic's settings from its first subscriber's ``queue_config`` (``None``: a topic made by an enqueue),
        within ``max_topic_jobs`` and the caps (see :meth:`QueueSettings.from_topic`).

        Example:
            >>> QueueModuleSettings(max_topic_concurrency=4).topic_settings().concurrency
            4
        """
        return QueueSettings.from_topic(queue_config, self.max_topic_jobs, self.topic_caps, clamped)

    @classmethod
    def _rename(cls, data: Mapping[str, Any]) -> Mapping[str, Any]:
        # ``name:`` with nothing under it (YAML null) is a queue with the defaults
        configs = data.get("queue_configs")
        if isinstance(configs, Mapping):
            return {**data, "queue_configs": {name: {} if cfg is None else cfg for name, cfg in configs.items()}}
        return {k: v for k, v in data.items() if k != "queue_configs"} if configs is None else data

    @cached_property
    def store_adapter(self) -> tuple[str, Settings]:
        """The adapter class and its settings."""
        return pick_adapter(self.adapter, BUILTIN_ADAPTER, {
            BUILTIN_ADAPTER: NoSettings, REDIS_ADAPTER: RedisAdapterSettings, BRIDGE_ADAPTER: BridgeAdapterSettings})

    @property
    def bridge_url(self) -> str | None:
        """The remote engine when the adapter is the Bridge."""
        adapter = self.store_adapter[1]
        return adapter.bridge_url if isinstance(adapter, BridgeAdapterSettings) else None

    def warn_ignored(self) -> None:
        """Log a warning for each named standard queue given a ``message_group_field``: only a fifo queue reads it,
        and its jobs ran at once, in no order, with no word of why. Production's engine takes such a configuration
        (it ignores the field), so it is not refused (it was, for a while).

        Example:
            >>> QueueModuleSettings.parse({"queue_configs": {"o": {"message_group_field": "c"}}}).warn_ignored()
        """
        for name, queue in self.queue_configs.items():
            if not queue.fifo and queue.message_group_field is not None:
                log.warning("queue_configs.%s: message_group_field %r is read only by a fifo queue (type: fifo): this "
                            "standard queue ignores it and runs a group's jobs at once, in no order", name,
                            queue.message_group_field)

    @model_validator(mode="after")
    def _checked(self) -> Self:
        for name, queue in self.queue_configs.items():
            if queue.fifo and queue.message_group_field is None:
                raise ConfigError("a fifo queue needs a 'message_group_field'", f"queue_configs.{name}")
        if self.max_topics_per_worker is not None and self.max_topics_per_worker > self.max_topics:
            raise ConfigError(f"must be <= max_topics ({self.max_topics}), got {self.max_topics_per_worker}",
                              "max_topics_per_worker")
        self.store_adapter  # noqa: B018 - validates the adapter's config now, not when the store opens
        return self
