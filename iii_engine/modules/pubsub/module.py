"""PubSub (docs/reference/payloads.md#pubsub-publish): the ``publish`` function and the ``subscribe`` trigger type.

Every subscriber of a topic gets the raw ``data``: fan-out, fire-and-forget, no retries (but a delivery its worker
refused unrun for being busy is asked again: docs/protocol.md M11). With the
``modules::pubsub::RedisAdapter`` store (see :mod:`~iii_engine.modules.pubsub.bus`), each engine delivers what
it receives to its own subscribers, so publishers and subscribers may sit on different engines. A
``condition_function_id`` in a trigger config is honoured (ours).

Each delivery to a subscriber is a trigger-fired call, counted against the engine's ``max_fired_calls`` from the
publish until the subscriber's outcome (or its condition's ``false``) is in. A publish takes the room for every
subscriber of the topic at once (less those past their worker's share of it, which are left out, counted and told
to the publisher), waiting its turn when there is none: a publisher faster than its subscribers is
slowed to their pace instead of growing the engine, and a publish whose wait runs out (``fire_wait_timeout_ms``)
fails with ``fire_limit``, having reached none of them. Messages from Redis (published on another engine) wait the
same way and, when the wait runs out, are dropped, counted and logged.

Example (engine configuration):
    >>> PubSubModule.class_names
    ('modules::pubsub::PubSubModule',)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.iii_types import TriggerInfo

from ...limits import HeldTasks
from ..base import BuiltinFunction, EngineError, EngineModule, EngineServices, FiredSlots, InvocationContext
from ..trigger_set import check_trigger_config, shared_payload, within_callee_shares
from .bus import LocalBus, PubSubBus, open_bus
from .settings import PubSubSettings

log = logging.getLogger(__name__)


class _Abandoned(Exception):
    """The register subscribing a topic for others waiting on it was cancelled: one of them subscribes instead."""


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
        # per topic with subscribers: the outcome of its SUBSCRIBE (pending while Redis has not confirmed it)
        self._subscribed: dict[str, asyncio.Future[None]] = {}
        # condition checks, each holding its subscriber's max_fired_calls slot
        self._checks = HeldTasks()

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

    async def health(self) -> dict[str, dict[str, Any]]:
        """``pubsub``: the bus's component (Redis: whether it answers a ``PING`` and the subscriber connection is
        up; messages published while it is down never reach this engine)."""
        return {"pubsub": await self._bus.health()}

    async def stop(self) -> None:
        """Close the bus and drop pending condition checks (their slots are given back)."""
        await self._bus.close()  # first: no message from it starts a check once they are being closed
        await self._checks.close()

    async def register(self, trigger: TriggerInfo) -> None:
        """Subscribe ``trigger.function_id`` to the topic of its config (no or empty topic: warning only; a topic
        or condition that is not a string: refused)."""
        check_trigger_config(trigger, "subscribe trigger", ("topic", "condition_function_id"))
        topic = _topic_of(trigger.config)
        # The old subscription is replaced before anything waits: a register of the same id arriving during a wait
        # (an UNSUBSCRIBE on Redis) stored the trigger under its topic, and this one then under another; unregister
        # removed one of them, and the other got every message of its topic for good.
        gone = self._forget(trigger.id)
        if not topic:
            log.warning("subscribe trigger %s has no topic; nothing subscribed", trigger.id)
            if gone is not None:
                await self._bus.unsubscribe(gone)
            return
        subscribers = self._subscribers.setdefault(topic, {})
        subscribers[trigger.id] = trigger
        self._topic_of_trigger[trigger.id] = topic
        try:
            if gone is not None and gone != topic:
                await self._bus.unsubscribe(gone)
                if subscribers.get(trigger.id) is not trigger:
                    # A later register or unregister of the id came during the UNSUBSCRIBE and replaced this one
                    # (and unsubscribed its topic, then without a subscriber): subscribing now left the topic
                    # subscribed in Redis with no trigger here, renewed at every reconnection (270 channels after
                    # 8 s of 10 workers re-registering 3 ids).
                    return
            while (live := self._subscribed.get(topic)) is not None:
                # Subscribed, or being subscribed for another trigger: this one stands or falls with it. Before,
                # it was registered at once, and kept with no subscription at all when that SUBSCRIBE failed.
                try:
                    await asyncio.shield(live)
                    return
                except _Abandoned:
                    # Its register was cancelled (and the bus withdrew the topic): before, this one failed with
                    # "CancelledError()" though Redis was fine. It subscribes itself, unless it left meanwhile.
                    if subscribers.get(trigger.id) is not trigger:
                        return
            live = self._subscribed[topic] = asyncio.get_running_loop().create_future()
            try:
                await self._bus.subscribe(topic)
            except BaseException as exc:
                if self._subscribed.get(topic) is live:
                    del self._subscribed[topic]  # the next register of the topic tries again
                failure: Exception
                if isinstance(exc, asyncio.CancelledError):
                    failure = _Abandoned()  # not a failure of the subscription: a waiting register takes over
                elif isinstance(exc, EngineError):
                    failure = exc
                else:
                    failure = EngineError("subscribe_failed", f"Subscribing to topic {topic!r:.200} failed: "
                                                              f"{exc!r:.200}")
                live.set_exception(failure)
                live.exception()  # retrieved: no waiter is a normal case, not an "exception never retrieved"
                raise
            live.set_result(None)
        except BaseException as exc:
            # The engine does not keep a trigger whose register failed, so neither may we: kept, it would get
            # messages no listing shows, never be unregistered, and make the next subscriber of the topic skip
            # the SUBSCRIBE (the topic looked subscribed already), so that one would get nothing.
            if self._topic_of_trigger.get(trigger.id) == topic and subscribers.get(trigger.id) is trigger:
                del self._topic_of_trigger[trigger.id]
                del subscribers[trigger.id]
                if not subscribers and self._subscribers.get(topic) is subscribers:
                    del self._subscribers[topic]
            elif isinstance(exc, Exception):
                # A later register or unregister of the id replaced this one while its SUBSCRIBE was pending (and
                # withdrew it, when the topic was left without a subscriber): the engine keeps that later call's
                # outcome, so this one has nothing to report. Before, it waited out the 10 s and reported
                # subscribe_failed with Redis healthy.
                return
            raise

    async def unregister(self, trigger: TriggerInfo) -> None:
        """Remove the subscription of ``trigger.id``."""
        topic = self._forget(trigger.id)
        if topic is not None:
            await self._bus.unsubscribe(topic)

    def _forget(self, trigger_id: str) -> str | None:
        """Remove the subscription of ``trigger_id`` here (nothing waits); its topic if no subscriber is left (for
        the bus to unsubscribe)."""
        topic = self._topic_of_trigger.pop(trigger_id, None)
        if topic is None:
            return None
        subscribers = self._subscribers.get(topic, {})
        subscribers.pop(trigger_id, None)
        if subscribers:
            return None
        self._subscribers.pop(topic, None)
        self._subscribed.pop(topic, None)
        return topic

    async def _publish(self, data: Any, ctx: InvocationContext) -> None:
        if not isinstance(data, dict):
            raise EngineError("deserialization_error", "Failed to deserialize input for publish: expected an object")
        topic = data.get("topic")
        if not isinstance(topic, str) or not topic:
            raise EngineError("topic_not_set", "Topic is not set")
        await self._bus.publish(topic, data.get("data"))

    async def _deliver(self, topic: str, data: Any) -> None:
        """Fire every subscriber of ``topic``, once the engine has room for all of them (see the module).

        Not for subscribers past their worker's ``max_fired_calls_per_worker``: they are not called and take no
        room (counted, logged, and told to the publisher: :func:`~..trigger_set.within_callee_shares`). Before, the
        take was for every subscriber, and one worker's 10,001 subscriptions to a topic made every publish to it
        fail at once with ``fire_limit``, the other subscribers reached by none.

        Raises:
            EngineError: ``fire_limit``: no room in time; no subscriber was reached.
        """
        subscribers = self._subscribers.get(topic)
        if not subscribers:
            return
        triggers = within_callee_shares(self.services, list(subscribers.values()), tell_producer=True)
        if not triggers:
            return
        fired = self.services.fired_calls
        hold = fired.try_take(len(triggers))
        if hold is None:
            hold = await fired.take(len(triggers), f"publish to topic {topic!r:.200}", "subscribers")
            # The wait can be long: a subscriber that left meanwhile gets nothing, and its slot goes back.
            current = self._subscribers.get(topic) or {}
            staying = [trigger for trigger in triggers if current.get(trigger.id) is trigger]
            if len(staying) < len(triggers):
                hold.release(len(triggers) - len(staying))
                triggers = staying
        # each subscriber's call (or its condition check, then its call) gets one slot of the hold, bytes and all
        shared = shared_payload(data, len(triggers))
        for trigger in triggers:
            condition = trigger.config.get("condition_function_id") if isinstance(trigger.config, dict) else None
            if condition is None:
                self.services.fire(trigger.function_id, shared, taken=hold.one())
                continue
            one = hold.one()
            self._checks.spawn(self._fire_if(condition, topic, trigger, shared, one), one)

    async def _fire_if(self, condition: str, topic: str, trigger: TriggerInfo, data: Any, slot: FiredSlots) -> None:
        # the slot taken for this subscriber covers its condition too, and goes with the call when it passes
        passed = False
        try:
            passed = await self.services.condition_passes(condition, data, hold_place=True)
            # A subscriber unregistered while its condition ran gets nothing: its unregister has returned.
            passed = passed and (self._subscribers.get(topic) or {}).get(trigger.id) is trigger
        finally:
            if passed:
                self.services.fire(trigger.function_id, data, taken=slot)
            else:
                slot.release()
