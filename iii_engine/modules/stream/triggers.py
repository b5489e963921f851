"""The ``stream``, ``stream:join`` and ``stream:leave`` trigger types (docs/reference/payloads.md#stream-events).

``stream`` triggers need a ``stream_name`` (a config without one is rejected, docs/protocol.md#stream-improvements
ST8) and may filter on
``group_id`` / ``item_id`` (empty = any) and a ``condition_function_id``. Each matching handler of a change event
is called in a task of its own; results are ignored and errors only logged.

``stream:join`` / ``stream:leave`` fire for every join/leave unless their config names a ``stream_name``,
``group_id`` or ``condition_function_id`` (ST7, ours). Join handlers are awaited in order and any answer with
``"unauthorized": true`` refuses the join (a join trigger of a function nobody serves refuses every join: fail
closed). Leave handlers (nobody waits for them) each run in a task of their own, as state triggers do.

Example:
    >>> matches_stream_trigger({"stream_name": "s", "group_id": ""}, {"streamName": "s", "groupId": "g", "id": None})
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.iii_types import TriggerInfo
from iii.protocol.worker_session import clip_text

from ..base import EngineError
from ..trigger_set import TriggerRunner, TriggerSet, check_trigger_config, trigger_config, within_callee_shares
from .inputs import reserved_name

__all__ = ["JoinLeaveTriggers", "StreamTriggers", "TriggerRunner", "matches_stream_trigger", "refuse_reserved"]


def matches_stream_trigger(config: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Whether a ``stream`` trigger config selects ``event`` (an event wrapper,
    docs/reference/payloads.md#stream-events).

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


def refuse_reserved(trigger: TriggerInfo, kind: str, stream_name: str) -> None:
    """``invalid_trigger_config`` for a trigger naming a stream name the engine keeps for its own data
    (:func:`~.inputs.reserved_name`): its changes and joins never reach a stream trigger.

    Example:
        >>> refuse_reserved(TriggerInfo(id="t", trigger_type="stream", function_id="f"), "stream trigger",
        ...                 "__iii_state")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        iii_engine.modules.base.EngineError: invalid_trigger_config: stream trigger t: stream name '__iii_state' is \
reserved: ...
    """
    refusal = reserved_name(stream_name)
    if refusal is not None:
        raise EngineError("invalid_trigger_config", f"{kind} {trigger.id}: {refusal}")


class StreamTriggers(TriggerSet):
    """Registrator of the ``stream`` trigger type and dispatcher of change events to it.

    Example:
        >>> StreamTriggers.matches({"stream_name": "s"}, {"streamName": "s", "groupId": "g", "id": None})
        True
    """

    kind = "stream trigger"

    @staticmethod
    def matches(config: Mapping[str, Any], payload: Mapping[str, Any]) -> bool:
        """:func:`matches_stream_trigger`."""
        return matches_stream_trigger(config, payload)

    async def register(self, trigger: TriggerInfo) -> None:
        """Store ``trigger``; a config without a string ``stream_name`` is refused (ST8), and so is a filter that is
        not a string (a numeric ``group_id`` read as absent got every group's changes)."""
        config = check_trigger_config(trigger, self.kind,
                                      ("stream_name", "group_id", "item_id", "condition_function_id"))
        name = config.get("stream_name")
        if not isinstance(name, str) or not name:
            raise EngineError("invalid_trigger_config",
                              f"stream trigger {trigger.id} needs a non-empty string 'stream_name' in its config")
        refuse_reserved(trigger, self.kind, name)
        await super().register(trigger)


class JoinFailed(Exception):
    """A ``stream:join`` handler did not decide (it failed, was refused busy, or is gone): the join is refused."""


class JoinLeaveTriggers(TriggerSet):
    """Registrator of ``stream:join`` or ``stream:leave``; :meth:`authorize` awaits a join's matching handlers in
    order, :meth:`run_detached` runs a leave's each in a task of its own.

    Example:
        >>> JoinLeaveTriggers.refuses({"unauthorized": True}), JoinLeaveTriggers.refuses({"unauthorized": "yes"})
        (True, False)
    """

    kind = "stream:join/leave trigger"

    @staticmethod
    def refuses(answer: Any) -> bool:
        """Whether a join handler's answer refuses the join (only a literal ``true`` counts)."""
        return isinstance(answer, Mapping) and answer.get("unauthorized") is True

    @staticmethod
    def matches(config: Mapping[str, Any], payload: Mapping[str, Any]) -> bool:
        """Whether a join/leave config selects ``payload`` (absent or empty ``stream_name``/``group_id`` = any)."""
        name, group = config.get("stream_name"), config.get("group_id")
        return (not name or name == payload.get("stream_name")) and (not group or group == payload.get("group_id"))

    async def register(self, trigger: TriggerInfo) -> None:
        """Store ``trigger``; a filter that is not a string is refused, naming it, and so is a reserved
        ``stream_name`` (no join of one is let through)."""
        config = check_trigger_config(trigger, self.kind, ("stream_name", "group_id", "condition_function_id"))
        refuse_reserved(trigger, self.kind, config.get("stream_name") or "")
        await super().register(trigger)

    async def authorize(self, payload: Mapping[str, Any]) -> bool:
        """Call a join's matching handlers in order: ``False`` as soon as one refuses, else ``True``; failing
        closed: a handler (or its condition) that fails, is refused busy or
        is gone raises :class:`JoinFailed` naming it, rather than counting as "allowed" (a failed handler let
        clients join and sync groups it would have refused: a ``ctx["user"]`` on a missing context gave any client
        another user's data). A condition's literal ``false`` still means the handler does not apply."""
        for trigger in self.matching(payload):
            condition = trigger_config(trigger).get("condition_function_id")
            called = "condition"
            try:
                if isinstance(condition, str) and condition and \
                        await self.services.invoke_when_free(condition, payload) is False:
                    continue
                called = "handler"
                answer = await self.services.invoke_when_free(trigger.function_id, payload)
            except EngineError as exc:
                failed = f"{called} {clip_text(str(condition) if called == 'condition' else trigger.function_id)}"
                self.note_failure(trigger, failed, exc)
                # the client is told the code, not the error's text, which may hold what it must not see (the log
                # has it)
                raise JoinFailed(f"the {failed} of stream:join trigger {clip_text(trigger.id)} failed "
                                 f"({clip_text(exc.code)}); join refused") from None
            if self.refuses(answer):
                return False
        return True

    def run_detached(self, payload: Mapping[str, Any]) -> None:
        """Call the matching handlers of a leave (on disconnect: nobody waits for it), each in a task of its own
        holding one slot of ``max_fired_calls`` and a place in its callee worker's ``max_fired_calls_per_worker``
        (:meth:`TriggerSet._run_each`). With no room now it waits for some, in turn, at most
        ``fire_wait_timeout_ms`` (then it is refused, counted and logged): skipping it at once broke "every join
        heard gets exactly one leave" whenever the engine was merely busy. Calls past their callee's share, of a
        function nobody serves, or of built-ins past one share are left out before the take, counted and logged
        (:func:`~..trigger_set.within_callee_shares`).

        Why: one task called the handlers in turn, holding a slot for every matching trigger: 40 catch-all leave
        triggers of ``ghost::nobody`` (``max_fired_calls`` 40) made every leave wait for 41 slots and be refused,
        another worker's leave handler hearing 0 of 3 leaves; and one leave handler that never answered held up
        every handler after it (another worker's heard its leave only once the hung worker left)."""
        matching = within_callee_shares(self.services, self.matching(payload), tell_producer=False)
        if matching:
            slots = self.services.fired_calls.try_take(len(matching))
            if slots is not None:
                self._run_each(matching, payload, slots)
            else:
                self.spawn(self._run_when_room(matching, payload))

    async def _run_when_room(self, matching: list[TriggerInfo], payload: Mapping[str, Any]) -> None:
        try:
            slots = await self.services.fired_calls.take(len(matching), f"{self.kind} handlers", "handlers")
        except EngineError:
            return  # refused: FiredCalls counted and logged it
        self._run_each(matching, payload, slots)  # at once: no await between taking the slots and handing them
