"""PubSub (modules.md §7.5): the ``publish`` function and the ``subscribe`` trigger type.

Every subscriber of a topic gets the raw ``data``: fan-out, fire-and-forget, no retries. With the
``modules::pubsub::RedisAdapter`` store, ``publish`` does a Redis ``PUBLISH`` on a channel named exactly the topic
(payload = JSON of ``data``), and each engine delivers what it receives to its own subscribers, so publishers
and subscribers may sit on different engines. A ``condition_function_id`` in a trigger config is honoured (ours).

Example (engine configuration):
    >>> PubSubModule.class_names
    ('modules::pubsub::PubSubModule',)
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from iii.iii_types import TriggerInfo
from iii.wire import dumps, loads

from .adapter_config import adapter_choice
from .base import BuiltinFunction, EngineError, EngineModule, EngineServices, InvocationContext

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

LOCAL_ADAPTER = "modules::pubsub::LocalAdapter"
REDIS_ADAPTER = "modules::pubsub::RedisAdapter"

Deliver = Callable[[str, Any], Awaitable[None]]


class PubSubBus(Protocol):
    """Carries published messages to the engines that subscribe to their topic."""

    async def start(self, deliver: Deliver) -> None:
        """Begin delivering received messages to ``deliver(topic, data)``."""

    async def publish(self, topic: str, data: Any) -> None:
        """Send ``data`` to every subscriber of ``topic``."""

    async def subscribe(self, topic: str) -> None:
        """Receive ``topic`` from now on (returns once the subscription is active)."""

    async def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic``."""

    async def close(self) -> None:
        """Release connections."""


class LocalBus:
    """In-process bus: publishing delivers straight to this engine's subscribers.

    Example:
        >>> LocalBus().__class__.__name__
        'LocalBus'
    """

    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    async def start(self, deliver: Deliver) -> None:
        """See :class:`PubSubBus`."""
        self._deliver = deliver

    async def publish(self, topic: str, data: Any) -> None:
        """See :class:`PubSubBus`."""
        if self._deliver is not None:
            await self._deliver(topic, data)

    async def subscribe(self, topic: str) -> None:
        """Nothing to do: every local topic is delivered."""

    async def unsubscribe(self, topic: str) -> None:
        """Nothing to do."""

    async def close(self) -> None:
        """Nothing to release."""


class RedisBus:
    """Redis ``PUBLISH``/``SUBSCRIBE`` bus, wire-compatible with the production RedisAdapter.

    Example:
        >>> bus = RedisBus("redis://127.0.0.1:6379/0")  # doctest: +SKIP
    """

    def __init__(self, redis_url: str) -> None:
        from redis.asyncio import Redis

        self._redis: Redis = Redis.from_url(redis_url)
        self._pubsub: PubSub = self._redis.pubsub()
        self._reader: asyncio.Task[None] | None = None
        self._deliver: Deliver | None = None
        # Futures completed when Redis confirms a SUBSCRIBE, so subscribe() returns only once it is live.
        self._confirm: dict[str, list[asyncio.Future[None]]] = {}
        self._closing = False

    async def start(self, deliver: Deliver) -> None:
        """See :class:`PubSubBus`."""
        self._deliver = deliver
        # A private channel opens the connection so the reader can run before any topic is subscribed.
        await self._pubsub.subscribe(f"__iii_pubsub_idle:{uuid.uuid4()}")
        self._reader = asyncio.create_task(self._read(), name="pubsub-redis-reader")

    async def publish(self, topic: str, data: Any) -> None:
        """See :class:`PubSubBus`."""
        await self._redis.publish(topic, dumps(data))

    async def subscribe(self, topic: str) -> None:
        """See :class:`PubSubBus`."""
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._confirm.setdefault(topic, []).append(confirmed)
        await self._pubsub.subscribe(topic)
        await asyncio.wait_for(confirmed, timeout=10)

    async def unsubscribe(self, topic: str) -> None:
        """See :class:`PubSubBus`."""
        await self._pubsub.unsubscribe(topic)

    async def close(self) -> None:
        """Stop the reader and close both connections."""
        # The flag ends the reader even if the client library swallows the cancellation.
        self._closing = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._redis.aclose()

    async def _read(self) -> None:
        while not self._closing:
            message = await self._pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            channel = message["channel"]
            topic = channel.decode() if isinstance(channel, bytes) else str(channel)
            if message["type"] == "subscribe":
                for waiter in self._confirm.pop(topic, []):
                    if not waiter.done():
                        waiter.set_result(None)
            elif message["type"] == "message" and self._deliver is not None:
                try:
                    data = loads(message["data"])
                except ValueError:
                    continue
                await self._deliver(topic, data)


def open_bus(config: Mapping[str, Any]) -> PubSubBus:
    """Build the bus named by the module config's ``adapter``.

    Example:
        >>> type(open_bus({})).__name__
        'LocalBus'
    """
    adapter = adapter_choice(config, LOCAL_ADAPTER)
    if adapter.class_name == LOCAL_ADAPTER:
        return LocalBus()
    if adapter.class_name == REDIS_ADAPTER:
        return RedisBus(adapter.redis_url())
    raise ValueError(
        f"unknown pubsub adapter class {adapter.class_name!r} (expected {LOCAL_ADAPTER} or {REDIS_ADAPTER})")


def _topic_of(config: Any) -> str:
    topic = config.get("topic") if isinstance(config, dict) else None
    return topic if isinstance(topic, str) else ""


class PubSubModule(EngineModule):
    """Engine module providing ``publish`` and the ``subscribe`` trigger type."""

    name: ClassVar[str] = "pubsub"
    class_names: ClassVar[tuple[str, ...]] = ("modules::pubsub::PubSubModule",)

    def __init__(self, services: EngineServices, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(services, config)
        self._bus: PubSubBus = LocalBus()
        self._subscribers: dict[str, dict[str, TriggerInfo]] = {}
        self._topic_of_trigger: dict[str, str] = {}
        self._checks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Open the bus and register ``publish`` and ``subscribe``."""
        self._bus = open_bus(self.config)
        await self._bus.start(self._deliver)
        self.services.register_function(
            BuiltinFunction(
                "publish",
                self._publish,
                description="Publish data to every subscriber of a topic",
                request_format={
                    "type": "object",
                    "properties": {"topic": {"type": "string"}, "data": {}},
                    "required": ["topic"],
                },
            )
        )
        self.services.register_trigger_type("subscribe", "Receive every message published to a topic", self)

    async def stop(self) -> None:
        """Close the bus and drop pending condition checks."""
        for task in list(self._checks):
            task.cancel()
        await self._bus.close()

    async def register(self, trigger: TriggerInfo) -> None:
        """Subscribe ``trigger.function_id`` to the topic of its config (empty topic: warning only)."""
        topic = _topic_of(trigger.config)
        await self.unregister(trigger)
        if not topic:
            self.services.log.warning("subscribe trigger %s has no topic; nothing subscribed", trigger.id)
            return
        subscribers = self._subscribers.setdefault(topic, {})
        subscribers[trigger.id] = trigger
        self._topic_of_trigger[trigger.id] = topic
        if len(subscribers) == 1:
            await self._bus.subscribe(topic)

    async def unregister(self, trigger: TriggerInfo) -> None:
        """Remove the subscription of ``trigger.id``."""
        topic = self._topic_of_trigger.pop(trigger.id, None)
        if topic is None:
            return
        subscribers = self._subscribers.get(topic, {})
        subscribers.pop(trigger.id, None)
        if not subscribers:
            self._subscribers.pop(topic, None)
            await self._bus.unsubscribe(topic)

    async def _publish(self, data: Any, ctx: InvocationContext) -> None:
        if not isinstance(data, dict):
            raise EngineError("deserialization_error", "Failed to deserialize input for publish: expected an object")
        topic = data.get("topic")
        if not isinstance(topic, str) or not topic:
            raise EngineError("topic_not_set", "Topic is not set")
        await self._bus.publish(topic, data.get("data"))

    async def _deliver(self, topic: str, data: Any) -> None:
        for trigger in list(self._subscribers.get(topic, {}).values()):
            condition = trigger.config.get("condition_function_id") if isinstance(trigger.config, dict) else None
            if condition is None:
                self.services.fire(trigger.function_id, data)
                continue
            task = asyncio.create_task(self._fire_if(condition, trigger.function_id, data))
            self._checks.add(task)
            task.add_done_callback(self._checks.discard)

    async def _fire_if(self, condition: str, function_id: str, data: Any) -> None:
        if await self.services.condition_passes(condition, data):
            self.services.fire(function_id, data)
