"""What the engine's own trigger types (``stream``, ``stream:join``/``stream:leave``, ``state``) share.

:class:`TriggerRunner` spawns trigger tasks and calls a handler behind its ``condition_function_id``;
:class:`TriggerSet` adds the registered triggers of one type, keyed by id, and the "call every trigger that
selects this payload, one after another, in a task of its own" dispatch. A trigger type only says which configs
select a payload (:meth:`TriggerSet.matches`) and, if it must, refuses configs in ``register``.

Every handler a dispatch calls is a trigger-fired call: it holds a slot of the engine's ``max_fired_calls`` from
the dispatch until its outcome is in. :meth:`TriggerSet.deliver` (a producer that is itself a call, e.g.
``state::set``) waits for the slots and fails with ``fire_limit`` when they do not come in time;
:meth:`TriggerSet.dispatch` (nobody to wait) skips and counts the calls when the slots are not free. Neither takes
slots for calls past their callee worker's ``max_fired_calls_per_worker``, for calls of a function nobody serves, nor
for built-in calls past one such share per fan-out (:func:`within_callee_shares`, shared with pub/sub's fan-out).

Example:
    >>> class Everything(TriggerSet):
    ...     @staticmethod
    ...     def matches(config, payload):
    ...         return True
    >>> Everything.matches({}, {"any": "payload"})
    True
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine, Mapping
from typing import Any, Final

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.iii_types import TriggerInfo
from iii.loss_log import BurstLog, LossLog, latest_tail
from iii.protocol.client import WORKER_BUSY
from iii.protocol.codec import Encoded
from iii.protocol.worker_session import clip_text

from ..limits import HeldTasks
from .base import EngineError, EngineServices, FiredSlots

log = logging.getLogger(__name__)

FAILURE_LOG_BURST: Final = 10
"""Failed handler calls of one trigger set logged one line each per :data:`FAILURE_LOG_INTERVAL_S`; the rest are
counted in one warning naming the latest (a handler failing on every event of a busy stream wrote 2,500 lines a
second)."""
FAILURE_LOG_INTERVAL_S: Final = 10.0
_FAILURES_NAMED: Final = 5  # triggers named in a count of failures; the rest summed

__all__ = ["BUILTIN_CALLEE", "TriggerRunner", "TriggerSet", "check_trigger_config", "trigger_config",
           "within_callee_shares"]


def trigger_config(trigger: TriggerInfo) -> Mapping[str, Any]:
    """``trigger.config`` when it is a mapping, else an empty one (a filter that is absent selects anything).

    Example:
        >>> trigger_config(TriggerInfo(id="t", trigger_type="state", function_id="f", config=None))
        {}
    """
    return trigger.config if isinstance(trigger.config, Mapping) else {}


def check_trigger_config(trigger: TriggerInfo, kind: str, text_fields: tuple[str, ...]) -> Mapping[str, Any]:
    """``trigger.config``, refused when it is neither an object nor null, or when one of ``text_fields`` is present
    (not null) but not a string: before, such a filter was read as absent (``{"scope": 0}`` got every change) or as
    one matching nothing, and a mistyped ``condition_function_id`` was ignored, all without a word.

    Raises:
        EngineError: ``invalid_trigger_config`` naming the trigger, the field and what it was.

    Example:
        >>> check_trigger_config(TriggerInfo(id="t", trigger_type="state", function_id="f", config={"scope": 0}),
        ...                      "state trigger", ("scope",))
        Traceback (most recent call last):
        ...
        iii_engine.modules.base.EngineError: invalid_trigger_config: state trigger t: 'scope' must be a string, \
got int 0
    """
    config = trigger.config
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise EngineError("invalid_trigger_config", f"{kind} {trigger.id}: config must be an object, got "
                          f"{type(config).__name__}")
    for field in text_fields:
        value = config.get(field)
        if value is not None and not isinstance(value, str):
            raise EngineError("invalid_trigger_config", f"{kind} {trigger.id}: {field!r} must be a string, got "
                              f"{type(value).__name__} {value!r:.100}")
    return config


class _NoSlot:
    """A :class:`~.base.FiredSlots` of no slot: handed to ``to_callee``, the call it returns holds a place in its
    callee worker's ``max_fired_calls_per_worker`` and nothing of ``max_fired_calls``."""

    def release(self, n: int | None = None) -> None:
        """Nothing to give back."""

    def one(self) -> _NoSlot:
        """Itself."""
        return self


_NO_SLOT: Final = _NoSlot()


BUILTIN_CALLEE: Final = "(the engine's built-in functions)"
"""The callee a fan-out's calls of built-in functions count on (:func:`within_callee_shares`): one worker's share,
for all of them together, in each fan-out."""


def shared_payload(payload: Any, calls: int) -> Any:
    """The payload to hand ``calls`` trigger-fired calls: encoded once (:class:`~iii.protocol.codec.Encoded`) when
    there is more than one, so that every worker's frame splices the same text instead of encoding it again (a
    built-in handler gets the payload itself, as before); as it is for one call, or when a frame cannot hold it (each
    call then fails as it did).

    Example:
        >>> type(shared_payload({"a": 1}, 2)).__name__, shared_payload({"a": 1}, 1)
        ('Encoded', {'a': 1})
    """
    if calls < 2:
        return payload
    try:
        return Encoded(payload)
    except (ValueError, TypeError):
        return payload


def _not_served(services: EngineServices, trigger: TriggerInfo) -> None:
    """Count ``trigger``'s call, of a function nobody serves, as a trigger-fired call of such a function is counted
    (``missing_fired``, logged rate-limited naming the function and its triggers), without taking a slot: handed
    :data:`_NO_SLOT`, ``fire`` finds nobody serving the function (just checked, with no await since) and gives
    back nothing."""
    services.fire(trigger.function_id, None, taken=_NO_SLOT)


def within_callee_shares(services: EngineServices, triggers: list[TriggerInfo], *,
                         tell_producer: bool) -> list[TriggerInfo]:
    """Of ``triggers`` (one fan-out, each to be called once), those that may take a ``max_fired_calls`` slot, in
    their order: per callee worker, only as many as it has room for in its ``max_fired_calls_per_worker`` now
    (what it holds counts). Each of the others is not made: counted in ``skipped`` and ``skipped_callee_share``
    and logged (rate-limited, naming the worker), by ``to_callee`` as for any call past its worker's share, and
    noted for the answer of the worker's call that set the fan-out off when ``tell_producer``. The share is
    counted again as each kept call is made, as before.

    A trigger of a function nobody serves takes no slot: its call is not made (it would only fail with
    ``function_not_found``), and is counted and logged as such a trigger-fired call is (``missing_fired``, a
    warning naming the function and its triggers), its condition not asked. Whether it is served is read once,
    here: a function registered after this (while a producer waits for room) is not called by this fan-out.

    The calls of built-in functions (run in the engine) count together on one share of their own
    (:data:`BUILTIN_CALLEE`), within this fan-out only: at most ``max_fired_calls_per_worker`` of them are kept,
    the others not made, counted, logged and told as above. An HTTP-invoked function (run by the engine,
    registered by a worker) counts on the share of the worker that registered it (``services.fired_callee``),
    with what that worker's functions have in flight; its calls hold no place in that share once made (the call
    itself is not counted on it), so none kept here is refused later, and every place taken here goes back.

    When the share is all of ``max_fired_calls`` (no share of its own: a worker with all of it in flight holds the
    engine's whole room), only the calls past the share within this fan-out are left out: the others wait for the
    engine's room as before, and may be made at its end.

    Why: the take was for every trigger, those whose calls were then not made too: one worker's 10,001 catch-all
    state triggers made every ``state::set`` of any worker fail at once with ``fire_limit`` (more than
    ``max_fired_calls`` 10,000 at once), none of its triggers reached; 8,000 whose worker never answered made
    every later write wait the 10 s of ``fire_wait_timeout_ms`` and fail (the victim's own trigger got 1 of 3
    writes): it asked for 8,001 slots with 2,500 held, when one call could be made. A first version kept every
    trigger of a built-in or of a function nobody serves: 41 catch-all triggers of ``ghost::nobody`` (or of
    ``engine::functions::list``) under ``max_fired_calls`` 40 made 3 of 3 writes (and publishes) fail at once
    with ``fire_limit``, the writer's own trigger getting 0 of 3. A second counted HTTP-invoked functions on that
    built-in share: another worker's 10 catch-all triggers of ``engine::functions::list`` left a worker's HTTP
    function 0 of 3 writes, and 11 workers' HTTP subscribers of one topic (``max_fired_calls`` 40) got 30 of 33
    publishes (the 11th none).

    Example:
        >>> within_callee_shares(EngineServices.__new__(EngineServices), [], tell_producer=False)
        []
    """
    if not triggers:
        return triggers
    owner_of = services.fired_callee
    if len(triggers) == 1:
        # nothing to leave out for a share: the call takes its one slot, and to_callee decides as it is made
        only = triggers[0]
        if owner_of(only.function_id) is None and not services.has_function(only.function_id):
            _not_served(services, only)
            return []
        return triggers
    fired = services.fired_calls
    stats = fired.stats()
    share = stats["max_fired_calls_per_worker"]
    whole = share >= stats["max_fired_calls"]
    kept: list[TriggerInfo] = []
    # Calls are left out by to_callee itself refusing them (counted, logged, told): each call kept holds a place
    # in its worker's share meanwhile, so a worker's share is full once this fan-out's kept calls fill what it
    # has left; the places go back before the take.
    places: list[FiredSlots] = []
    seen: dict[str, int] = {}
    try:
        for trigger in triggers:
            owner = owner_of(trigger.function_id)
            if owner is None:
                if not services.has_function(trigger.function_id):
                    _not_served(services, trigger)
                    continue
                owner = BUILTIN_CALLEE  # (no place of it is held outside this loop: its share is per fan-out)
            if whole:
                n = seen[owner] = seen.get(owner, 0) + 1
                if n <= share:
                    kept.append(trigger)
                    continue
                # past the share within this fan-out: filled with places first (what the worker holds counts)
                while (place := fired.to_callee(_NO_SLOT, owner, trigger.function_id,
                                                tell_producer=tell_producer)) is not None:
                    places.append(place)
                continue
            place = fired.to_callee(_NO_SLOT, owner, trigger.function_id, tell_producer=tell_producer)
            if place is not None:
                places.append(place)
                kept.append(trigger)
    finally:
        for place in places:
            place.release()
    return kept


class TriggerRunner:
    """Spawns trigger tasks and calls handlers behind their condition function.

    Example:
        >>> TriggerRunner.__name__
        'TriggerRunner'
    """

    #: what the calls it fires are, in the engine's warnings and errors
    kind: str = "trigger"

    def __init__(self, services: EngineServices) -> None:
        self.services = services
        self._tasks = HeldTasks()
        self._failures = BurstLog(FAILURE_LOG_BURST, FAILURE_LOG_INTERVAL_S, log.warning,
                                  LossLog(self._log_failure_counts, FAILURE_LOG_INTERVAL_S))

    def spawn(self, coro: Coroutine[Any, Any, None], slots: FiredSlots | None = None) -> None:
        """Run ``coro`` in a task that :meth:`close` cancels. ``slots``: the ``max_fired_calls`` slots it was
        handed, which it gives back itself as it goes (and :meth:`close` if it is cancelled before it ever ran)."""
        self._tasks.spawn(coro, slots)

    async def close(self) -> None:
        """Cancel the running trigger tasks; what those that never ran held is given back."""
        await self._tasks.close()
        self._failures.losses.close()

    def _log_failure_counts(self, counts: Mapping[str, int], latest: str | None) -> None:
        # by trigger, the busiest first: a trigger failing now and then is named beside one failing on every event
        ranked = sorted(counts.items(), key=lambda item: -item[1])
        shown = ", ".join(f"{n} of {kind}" for kind, n in ranked[:_FAILURES_NAMED])
        if len(ranked) > _FAILURES_NAMED:
            shown += (f" and {sum(n for _, n in ranked[_FAILURES_NAMED:])} of "
                      f"{len(ranked) - _FAILURES_NAMED} other trigger(s)")
        log.warning("%s handlers: %d more call(s) failed, not logged one by one (past %d lines per %g s): %s%s",
                    self.kind, sum(counts.values()), FAILURE_LOG_BURST, FAILURE_LOG_INTERVAL_S, shown,
                    latest_tail(latest))

    async def call(self, trigger: TriggerInfo, payload: Any) -> Any:
        """Run one handler if its condition passes; ``None`` when skipped or failed (logged)."""
        condition = trigger_config(trigger).get("condition_function_id")
        if not await self.services.condition_passes(condition if isinstance(condition, str) else None, payload):
            return None
        try:
            return await self.services.invoke_when_free(trigger.function_id, payload)
        except EngineError as exc:
            if exc.code == WORKER_BUSY:  # counted and told, rate-limited, by invoke_when_free
                return None
            self.note_failure(trigger, clip_text(trigger.function_id), exc)
            return None

    def note_failure(self, trigger: TriggerInfo, failed: str, exc: EngineError) -> None:
        """Log (burst-limited, then counted) that ``failed`` (what of ``trigger`` was called) failed with ``exc``."""
        self._failures.note(f"trigger {clip_text(trigger.id)} ({clip_text(trigger.function_id)})",
                            f"trigger {clip_text(trigger.id)}: {failed} failed: "
                            f"{clip_text(exc.code)}: {clip_text(exc.message)}")


class TriggerSet(TriggerRunner):
    """The registered triggers of one type (a :class:`~.base.TriggerTypeHandler`) and their dispatch.

    Subclasses define :meth:`matches`; ``register`` stores any config unless a subclass refuses it first.

    Example:
        >>> TriggerSet.matches({"any": "config"}, {"any": "payload"})
        True
    """

    def __init__(self, services: EngineServices) -> None:
        super().__init__(services)
        self._triggers: dict[str, TriggerInfo] = {}

    async def register(self, trigger: TriggerInfo) -> None:
        """Store ``trigger`` (replacing one with the same id)."""
        self._triggers[trigger.id] = trigger

    async def unregister(self, trigger: TriggerInfo) -> None:
        """Forget ``trigger``."""
        self._triggers.pop(trigger.id, None)

    @staticmethod
    def matches(config: Mapping[str, Any], payload: Mapping[str, Any]) -> bool:
        """Whether a trigger with ``config`` selects ``payload``; every trigger does unless a subclass says."""
        return True

    def has_triggers(self) -> bool:
        """Whether any trigger is registered: without one, a caller need not build the payload to dispatch.

        Example:
            >>> from iii_engine.modules.base import EngineServices
            >>> TriggerSet(EngineServices.__new__(EngineServices)).has_triggers()
            False
        """
        return bool(self._triggers)

    def matching(self, payload: Mapping[str, Any]) -> list[TriggerInfo]:
        """The registered triggers selecting ``payload``, in registration order."""
        return [t for t in self._triggers.values() if self.matches(trigger_config(t), payload)]

    def dispatch(self, payload: Mapping[str, Any]) -> None:
        """Spawn a task for each matching handler (not awaited by the caller), for a producer with nobody to wait:
        when ``max_fired_calls`` has no room for all of them, none is called and they are counted as skipped
        (logged). Calls past their callee worker's ``max_fired_calls_per_worker`` take no slot: not made, counted
        (:func:`within_callee_shares`)."""
        matching = within_callee_shares(self.services, self.matching(payload), tell_producer=False)
        if matching:
            fired = self.services.fired_calls
            slots = fired.try_take(len(matching))
            if slots is not None:
                self._run_each(matching, payload, slots)
            else:
                fired.skip(f"{self.kind} handlers", len(matching))

    async def deliver(self, payload: Mapping[str, Any], what: str) -> None:
        """:meth:`dispatch` for a producer that is itself a call (``what`` names it): waits for room for every
        matching handler at once, in turn with other producers; not for those past their callee worker's
        ``max_fired_calls_per_worker``: they are not called (counted and logged, :func:`within_callee_shares`), and
        the producer is not failed for them (a write is made whatever its triggers do).

        Raises:
            EngineError: ``fire_limit`` when the room did not come within ``fire_wait_timeout_ms``; no handler
                was called then.
        """
        matching = within_callee_shares(self.services, self.matching(payload), tell_producer=False)
        if matching:
            fired = self.services.fired_calls
            slots = fired.try_take(len(matching))
            if slots is None:
                slots = await fired.take(len(matching), what, f"{self.kind} handlers")
            self._run_each(matching, payload, slots)

    def _run_each(self, triggers: list[TriggerInfo], payload: Mapping[str, Any], slots: FiredSlots) -> None:
        """Each handler in a task of its own, holding one of ``slots``: before, one task called them in turn, and
        a handler that never answered held up every handler registered after it (a healthy worker's state trigger
        got 0 of 45 writes behind a hung one)."""
        one = slots.one()
        shared = shared_payload(payload, len(triggers))
        for trigger in triggers:
            self.spawn(self._run_one(trigger, shared, one), one)

    async def _run_one(self, trigger: TriggerInfo, payload: Any, slot: FiredSlots) -> None:
        # the handler runs inline in this task: whatever it takes of max_fired_calls itself (a built-in that fires
        # again) is its own, and this task gives back exactly ``slot``, and its place in its callee worker's
        # max_fired_calls_per_worker (a handler that never answered held every slot, and other workers' cron ticks
        # and publishes failed)
        held: FiredSlots = slot
        owner = self.services.function_owner(trigger.function_id)
        if owner is not None:
            call = self.services.fired_calls.to_callee(slot, owner, trigger.function_id, tell_producer=False)
            if call is None:
                return  # not made: the slot is back, the loss counted and logged
            held = call
        try:
            await self.call(trigger, payload)
        finally:
            held.release()
