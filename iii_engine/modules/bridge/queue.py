"""The queue module's ``Bridge`` adapter (``adapter: {class: modules::queue::adapters::Bridge, config:
{bridge_url}}``): jobs are enqueued on, and consumed through, a remote engine's queue module.

- ``enqueue {topic, data}`` on this engine calls the remote's ``enqueue`` and waits for its answer, so a
  failure (remote down, no queue module there) reaches the caller; nothing is parked to run later.
- Each ``queue`` trigger registered here becomes, on the remote, a function ``queue::bridge::on_message::<uuid>``
  with a ``queue`` trigger on the same topic and ``queue_config``. A delivery runs the trigger's
  ``condition_function_id`` (a literal ``false`` answers ``null``) and then its function here; an error goes back
  to the remote, whose retry and dead-letter policy applies.
- An ``enqueue`` action on a named queue is checked against this engine's own ``queue_configs`` (unknown queue,
  FIFO group field), then sent to the remote with the same action; the remote's receipt id is returned and its
  errors answer ``enqueue_error``.
- Dead-letter operations fail: the dead letters live on the remote.

Example:
    >>> BRIDGE_QUEUE_ADAPTER
    'modules::queue::adapters::Bridge'
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.iii_types import TriggerActionEnqueue, TriggerInfo
from iii.triggers import Trigger

from ..base import EngineError, EngineServices
from .link import BridgeCallError, BridgeLink

__all__ = ["BRIDGE_QUEUE_ADAPTER", "NO_DLQ", "BridgeQueue"]

BRIDGE_QUEUE_ADAPTER: Final = "modules::queue::adapters::Bridge"
NO_DLQ: Final = "Bridge queue adapter does not support DLQ operations"


class BridgeQueue:
    """Topic enqueues, ``queue`` subscriptions and named-queue enqueues served by the remote engine."""

    def __init__(self, services: EngineServices, url: str) -> None:
        self.services = services
        self.link = BridgeLink(url, role="queue")
        self._subscriptions: dict[str, tuple[Trigger, Callable[[], None]]] = {}

    def start(self) -> None:
        """Start connecting (never waits)."""
        self.link.start()

    async def close(self) -> None:
        """Close the link."""
        await self.link.close()

    async def enqueue_topic(self, topic: str, data: Any) -> None:
        """``enqueue {topic, data}`` on the remote; ``enqueue_error`` naming the remote when it fails."""
        try:
            await self.link.call("enqueue", {"topic": topic, "data": data})
        except BridgeCallError as exc:
            raise EngineError("enqueue_error", f"Failed to enqueue on topic '{topic}' via bridge: {exc}") from None

    async def enqueue_named(self, queue: str, function_id: str, data: Any) -> str:
        """Send ``function_id`` with action ``enqueue {queue}`` to the remote; its receipt id."""
        try:
            receipt = await self.link.call(function_id, data, action=TriggerActionEnqueue(queue=queue))
        except BridgeCallError as exc:
            raise EngineError("enqueue_error", f"Queue '{queue}': could not enqueue via bridge: {exc}") from None
        if isinstance(receipt, Mapping) and isinstance(receipt.get("messageReceiptId"), str):
            return str(receipt["messageReceiptId"])
        raise EngineError("enqueue_error", f"Queue '{queue}': the remote answered {receipt!r:.200} instead of a "
                          "messageReceiptId")

    async def subscribe(self, trigger: TriggerInfo, topic: str) -> None:
        """Mirror a ``queue`` trigger of this engine on the remote (replaces an earlier one of the same id)."""
        self.unsubscribe(trigger.id)
        function_id = f"queue::bridge::on_message::{uuid.uuid4()}"
        config = trigger.config if isinstance(trigger.config, dict) else {}
        condition = config.get("condition_function_id")

        async def deliver(data: Any) -> Any:
            if condition:
                if await self.services.invoke(condition, data) is False:
                    return None
            return await self.services.invoke(trigger.function_id, data)

        # The subscriber's queue_config (retries, backoff, concurrency, FIFO) shapes the topic where the jobs run:
        # left out, the remote's defaults applied (a handler asked to run once ran three times, four at once).
        remote_config: dict[str, Any] = {"topic": topic}
        if "queue_config" in config:
            remote_config["queue_config"] = config["queue_config"]
        withdraw = self.link.register_function(function_id, deliver)
        remote = self.link.register_trigger("queue", function_id, remote_config)
        self._subscriptions[trigger.id] = (remote, withdraw)

    def unsubscribe(self, trigger_id: str) -> None:
        """Remove the remote trigger and function of a front trigger (no-op when unknown)."""
        entry = self._subscriptions.pop(trigger_id, None)
        if entry is not None:
            entry[0].unregister()
            entry[1]()
