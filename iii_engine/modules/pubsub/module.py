"""PubSub (docs/reference/payloads.md#pubsub-publish): the ``publish`` function and the ``subscribe`` trigger type.

Every subscriber of a topic gets the raw ``data``: fan-out, fire-and-forget, no retries. With the
``modules::pubsub::RedisAdapter`` store (see :mod:`~iii_engine.modules.pubsub.bus`), each engine delivers what
it receives to its own subscribers, so publishers and subscribers may sit on different engines. A
``condition_function_id`` in a trigger config is honoured (ours).

Example (engine configuration):
    >>> PubSubModule.class_names
    ('modules::pubsub::PubSubModule',)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from iii.iii_types import TriggerInfo

from ..base import BuiltinFunction, EngineError, EngineModule, EngineServices, InvocationContext
from .bus import LocalBus, PubSubBus, open_bus
from .settings import PubSubSettings

log = logging.getLogger(__name__)


def _topic_of(config: Any) -> str:
    topic = config.get("topic") if isinstance(config, dict) else None
    return topic if isinstance(topic, str) else ""


class PubSubModule(EngineModule):
    """Engine module providing ``publish`` and the ``subscribe`` trigger type."""

    name: ClassVar[str] = "pubsub"
    class_names: ClassVar[tuple[str, ...]] = ("modules::pubsub::PubSubModule",)

    def __init__(self, services: EngineServices, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(services, config)
        self.settings = PubSubSettings.parse(self.config)
        self._bus: PubSubBus = LocalBus()
        self._subscribers: dict[str, dict[str, TriggerInfo]] = {}
        self._topic_of_trigger: dict[str, str] = {}
        self._checks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Open the bus and register ``publish`` and ``subscribe``."""
        self._bus = open_bus(self.settings)
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
            log.warning("subscribe trigger %s has no topic; nothing subscribed", trigger.id)
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
