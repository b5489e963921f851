"""The ``stream``, ``stream:join`` and ``stream:leave`` trigger types (protocol/streams.md §6.5).

``stream`` triggers need a ``stream_name`` (a config without one is rejected, PROTOCOL §9.3 ST8) and may filter on
``group_id`` / ``item_id`` (empty = any) and a ``condition_function_id``. Each change event gets one task that
calls the matching handlers one after another; results are ignored and errors only logged.

``stream:join`` / ``stream:leave`` fire for every join/leave unless their config names a ``stream_name``,
``group_id`` or ``condition_function_id`` (ST7, ours). Join handlers are awaited in order and any answer with
``"unauthorized": true`` refuses the join.

Example:
    >>> matches_stream_trigger({"stream_name": "s", "group_id": ""}, {"streamName": "s", "groupId": "g", "id": None})
    True
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from iii.iii_types import TriggerInfo

from .base import EngineError, EngineServices

__all__ = ["JoinLeaveTriggers", "StreamTriggers", "TriggerRunner", "matches_stream_trigger"]


def _config(trigger: TriggerInfo) -> Mapping[str, Any]:
    return trigger.config if isinstance(trigger.config, Mapping) else {}


def matches_stream_trigger(config: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Whether a ``stream`` trigger config selects ``event`` (a §6.5 wrapper).

    Example:
        >>> matches_stream_trigger({"stream_name": "s", "item_id": "x"}, {"streamName": "s", "groupId": "g", "id": "y"})
        False
    """
    if config.get("stream_name") != event.get("streamName"):
        return False
    group = config.get("group_id")
    if group and group != event.get("groupId"):
        return False
    item = config.get("item_id")
    return not item or item == event.get("id")


class TriggerRunner:
    """Spawns trigger tasks and calls handlers behind their condition function; shared by stream and state.

    Example:
        >>> TriggerRunner.__name__
        'TriggerRunner'
    """

    def __init__(self, services: EngineServices) -> None:
        self.services = services
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` in a task that :meth:`close` cancels."""
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Cancel the running trigger tasks."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def call(self, trigger: TriggerInfo, payload: Any) -> Any:
        """Run one handler if its condition passes; ``None`` when skipped or failed (logged)."""
        condition = _config(trigger).get("condition_function_id")
        if not await self.services.condition_passes(condition if isinstance(condition, str) else None, payload):
            return None
        try:
            return await self.services.invoke(trigger.function_id, payload)
        except EngineError as exc:
            self.services.log.warning("trigger %s: %s failed: %s: %s", trigger.id, trigger.function_id, exc.code,
                                      exc.message)
            return None


class StreamTriggers(TriggerRunner):
    """Registrator of the ``stream`` trigger type and dispatcher of change events to it.

    Example:
        >>> StreamTriggers.__name__
        'StreamTriggers'
    """

    def __init__(self, services: EngineServices) -> None:
        super().__init__(services)
        self._triggers: dict[str, TriggerInfo] = {}

    async def register(self, trigger: TriggerInfo) -> None:
        """Store ``trigger``; a config without a string ``stream_name`` is refused (ST8)."""
        name = _config(trigger).get("stream_name")
        if not isinstance(name, str) or not name:
            raise EngineError("invalid_trigger_config",
                              f"stream trigger {trigger.id} needs a non-empty string 'stream_name' in its config")
        self._triggers[trigger.id] = trigger

    async def unregister(self, trigger: TriggerInfo) -> None:
        """Forget ``trigger``."""
        self._triggers.pop(trigger.id, None)

    def dispatch(self, event: Mapping[str, Any]) -> None:
        """Spawn one task calling every matching handler in turn (not awaited by the caller)."""
        matching = [t for t in self._triggers.values() if matches_stream_trigger(_config(t), event)]
        if matching:
            self.spawn(self._run(matching, event))

    async def _run(self, triggers: list[TriggerInfo], event: Mapping[str, Any]) -> None:
        for trigger in triggers:
            await self.call(trigger, event)


class JoinLeaveTriggers(TriggerRunner):
    """Registrator of ``stream:join`` or ``stream:leave``; :meth:`run` awaits the matching handlers in order.

    Example:
        >>> JoinLeaveTriggers.refuses({"unauthorized": True}), JoinLeaveTriggers.refuses({"unauthorized": "yes"})
        (True, False)
    """

    def __init__(self, services: EngineServices) -> None:
        super().__init__(services)
        self._triggers: dict[str, TriggerInfo] = {}

    async def register(self, trigger: TriggerInfo) -> None:
        """Store ``trigger`` (any config; filters are optional)."""
        self._triggers[trigger.id] = trigger

    async def unregister(self, trigger: TriggerInfo) -> None:
        """Forget ``trigger``."""
        self._triggers.pop(trigger.id, None)

    @staticmethod
    def refuses(answer: Any) -> bool:
        """Whether a join handler's answer refuses the join (only a literal ``true`` counts)."""
        return isinstance(answer, Mapping) and answer.get("unauthorized") is True

    def _matching(self, payload: Mapping[str, Any]) -> list[TriggerInfo]:
        out = []
        for trigger in self._triggers.values():
            config = _config(trigger)
            name, group = config.get("stream_name"), config.get("group_id")
            if name and name != payload.get("stream_name"):
                continue
            if group and group != payload.get("group_id"):
                continue
            out.append(trigger)
        return out

    async def run(self, payload: Mapping[str, Any]) -> bool:
        """Call the matching handlers in order; ``False`` as soon as one refuses (join), else ``True``."""
        for trigger in self._matching(payload):
            if self.refuses(await self.call(trigger, payload)):
                return False
        return True

    def run_detached(self, payload: Mapping[str, Any]) -> None:
        """:meth:`run` in a task of its own (leave on disconnect: nobody waits for it)."""
        if self._matching(payload):
            self.spawn(self.run(payload))
