"""State module (``modules::state::StateModule``, docs/reference/payloads.md#state-state): ``state::*`` key/value
functions and the
``state`` trigger type, kept in an ``iii_streams`` backend like the stream module's.

Items live in the module's own store with the scope as group and the key as item id. In Redis that is the
production layout, hash ``state:<scope>``, field = key, value = compact JSON (so our engine and a production engine
can share state); memory and SQL stores keep it under the stream name :data:`STATE_STREAM`. Settings
(:class:`~iii_engine.modules.stream.settings.StateSettings`): ``adapter {class, config}`` with the production
classes ``modules::state::adapters::KvStore`` / ``RedisAdapter`` / ``Bridge`` or our ``store_url``.

Ours (docs/protocol.md#module-improvements M1): ``state::delete`` is one atomic store delete and ``state:deleted``
fires only when
something was removed.

Ours: a ``state::list`` / ``state::list_groups`` answer is at most the engine's ``max_message_size`` (less the
frame around it); a larger one fails with ``LIST_ERROR`` / ``LIST_GROUPS_ERROR`` naming the scope, the size and
the setting, found before the answer is built (:meth:`iii_streams.Backend.list_text` with ``max_bytes``). Before,
a scope of 150 items of 1 MB was answered with one 150 MB frame built in 4-8.6 s of the event loop, and 8 callers
that did not read took the engine from 203 MB to 4,973 MB. An answer that fits is the same list as production's.

Ours: a value is at most half of ``max_message_size`` less a frame (:class:`~iii_engine.modules.stream.api.ValueBound`):
a set or an update that would store more fails with ``SET_ERROR`` / ``UPDATE_ERROR`` and changes nothing, as the
answers and trigger calls carry the old value and the new one (an update's bound is checked by the store, in the
same atomic step as its write). Before, three updates of 3 MB built a 9 MB value and two concurrent ``state::get``
of it closed the reader with 1008. A ``null`` value is stored, as production does; it reads as a missing key (see
docs/reference/payloads.md).

``state`` triggers fire for writes made through this engine only: a write through another engine sharing the
store (Redis) fires that engine's triggers, not these (the store's change feed carries no ``old_value``).

Example:
    >>> state_event("state:created", "s", "k", None, 1)
    {'type': 'state', 'event_type': 'state:created', 'scope': 's', 'key': 'k', 'old_value': None, 'new_value': 1}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final, Protocol

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.iii_types import TriggerInfo
from iii.stream import (
    StreamDeleteInput,
    StreamGetInput,
    StreamListGroupsInput,
    StreamListInput,
    StreamSetInput,
)
from iii_streams import Backend
from iii_streams.errors import json_size

from ...closing import close_store
from .. import stream as _stream  # noqa: F401 - the package before its modules (CPython gh-83065)
from ..answers import AnswerBound, AnswerSpec, ConfiguredServices
from ..base import BuiltinFunction, EncodedResult, EngineError, EngineModule, InvocationContext
from ..stream.api import ValueBound, too_large_value
from ..stream.inputs import Fields
from ..stream.locks import KeyedLocks
from ..stream.settings import StateSettings
from ..stream.store import open_module_store, prepare_module_store, store_health
from ..trigger_set import TriggerSet, check_trigger_config

__all__ = ["STATE_STREAM", "StateCore", "StateModule", "StateTriggers", "state_event"]

STATE_STREAM: Final = "__iii_state"
_BY_KEY: Final = "read it by key (state::get) or raise max_message_size"
_LIST: Final = AnswerSpec("state::list", "LIST_ERROR", _BY_KEY)
_LIST_GROUPS: Final = AnswerSpec("state::list_groups", "LIST_GROUPS_ERROR", _BY_KEY)


def state_event(event_type: str, scope: str, key: str, old: Any, new: Any) -> dict[str, Any]:
    """The payload ``state`` triggers receive."""
    return {"type": "state", "event_type": event_type, "scope": scope, "key": key, "old_value": old,
            "new_value": new}


class StateTriggers(TriggerSet):
    """Registrator of the ``state`` trigger type (filters ``scope``, ``key``, ``condition_function_id``).

    Example:
        >>> StateTriggers.matches({"scope": "s"}, state_event("state:deleted", "s", "k", 1, None))
        True
    """

    kind = "state trigger"

    @staticmethod
    def matches(config: Any, payload: Mapping[str, Any]) -> bool:
        """Whether a trigger config selects ``payload`` (absent or empty filter = any)."""
        config = config if isinstance(config, Mapping) else {}
        scope, key = config.get("scope"), config.get("key")
        return (not scope or scope == payload["scope"]) and (not key or key == payload["key"])

    async def register(self, trigger: TriggerInfo) -> None:
        """Store ``trigger``; a config whose filters or condition are not strings is refused."""
        check_trigger_config(trigger, self.kind, ("scope", "key", "condition_function_id"))
        await super().register(trigger)


def _as_field(message: str, field: str) -> str:
    """A store's refusal of a value, naming the caller's ``field``: stores name what they were given ``data``, the
    field of a stream item; ``state::set`` takes it as ``value`` (or ``data``).

    Example:
        >>> _as_field("data nests deeper than 125 levels", "value")
        'value nests deeper than 125 levels'
    """
    return field + message[4:] if message.startswith("data ") else message


def _changed(old: Any) -> str:
    return "state:created" if old is None else "state:updated"


def _written(function_id: str, scope: str, key: str) -> str:
    """The producer a ``fire_limit`` error names: the change is made, only its triggers were not fired."""
    return f"{function_id} of {scope!r}/{key!r} (done)"


class StateCore(ConfiguredServices, Protocol):
    """What the module needs beyond :class:`~iii_engine.modules.base.EngineServices`: the engine's configuration
    (its ``max_message_size`` bounds a list answer)."""


class StateModule(EngineModule):
    """``state::set/get/delete/update/list/list_groups`` and the ``state`` trigger type.

    Example:
        >>> StateModule.class_names
        ('modules::state::StateModule',)
    """

    name: ClassVar[str] = "state"
    class_names: ClassVar[tuple[str, ...]] = ("modules::state::StateModule",)

    def __init__(self, services: StateCore, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(services, config)
        self.core = services
        #: the largest list answer, in bytes of its frame (the engine's max_message_size, read at start)
        self.answers = AnswerBound()
        #: the bound of a stored value (set or updated), half of max_message_size less a frame (read at start)
        self.values = ValueBound(self.answers.max_message_size)
        self.settings = StateSettings.parse(self.config)
        self.store: Backend | None = None
        self.triggers = StateTriggers(services)
        self._locks = KeyedLocks()  # updates of one key queue here rather than retry in the store (ST11)

    def _store(self) -> Backend:
        if self.store is None:
            raise EngineError("internal_error", "the state module is not started")
        return self.store

    async def start(self) -> None:
        """Open the store and register the functions and the trigger type."""
        self.answers = AnswerBound(self.core.config.max_message_size)
        self.values = ValueBound(self.core.config.max_message_size)
        self.store = await prepare_module_store("state", open_module_store("state", self.settings))
        scope_key = {"type": "object", "properties": {"scope": {"type": "string"}, "key": {"type": "string"}},
                     "required": ["scope", "key"]}
        for function_id, handler, description in (
            ("state::set", self._set, "Set a value; returns {old_value, new_value}"),
            ("state::get", self._get, "Get a value (null when missing)"),
            ("state::delete", self._delete, "Delete a value; returns the old value"),
            ("state::update", self._update, "Apply update ops atomically; returns {old_value, new_value}"),
            ("state::list", self._list, "The values of a scope"),
            ("state::list_groups", self._list_groups, "Every scope: {groups: [...]}"),
        ):
            fmt = scope_key if function_id not in ("state::list", "state::list_groups") else None
            self.services.register_function(BuiltinFunction(function_id, handler, description, request_format=fmt))
        self.services.register_trigger_type("state", "State value changes", self.triggers)

    async def health(self) -> dict[str, dict[str, Any]]:
        """``state``: whether the store answers a read now (see
        :func:`~iii_engine.modules.stream.store.store_health`)."""
        return {"state": await store_health(self.store, STATE_STREAM)}

    async def stop(self) -> None:
        """Cancel trigger tasks and close the store."""
        await self.triggers.close()
        if self.store is not None:
            await close_store(self.store.aclose(), f"the state module's store ({type(self.store).__name__})")

    async def _set(self, data: Any, ctx: InvocationContext) -> Any:
        f = Fields("state::set", data)
        scope, key, value = f.text("scope"), f.text("key"), f.value("value", alias="data")
        field = "value" if "value" in f.data else "data"
        try:
            # measured on orjson's bytes (no text made): the store encodes the value again to write it
            size = json_size(value, "data")
            if size > self.values.limit:
                raise ValueError(too_large_value("data", size, self.values.limit))
            store = self._store()
            request = StreamSetInput(stream_name=STATE_STREAM, group_id=scope, item_id=key, data=value)
            if self.values.direct(store):  # no update reads and then writes in the engine: no lock to join
                result = await store.set(request)
            else:
                # not between the read and the write of an update a store's own update_parsed left to ValueBound
                async with self._locks.join((STATE_STREAM, scope, key)):
                    result = await store.set(request)
        except Exception as exc:
            raise EngineError("SET_ERROR", _as_field(str(exc), field)) from None
        old = None if result is None else result.old_value
        if self.triggers.has_triggers():  # no trigger: no payload to build
            await self.triggers.deliver(state_event(_changed(old), scope, key, old, value),
                                        _written("state::set", scope, key))
        return {"old_value": old, "new_value": value}

    async def _get(self, data: Any, ctx: InvocationContext) -> Any:
        f = Fields("state::get", data)
        try:
            return await self._store().get(
                StreamGetInput(stream_name=STATE_STREAM, group_id=f.text("scope"), item_id=f.text("key")))
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError("GET_ERROR", str(exc)) from None

    async def _delete(self, data: Any, ctx: InvocationContext) -> Any:
        f = Fields("state::delete", data)
        scope, key = f.text("scope"), f.text("key")
        try:
            result = await self._store().delete(StreamDeleteInput(stream_name=STATE_STREAM, group_id=scope,
                                                                  item_id=key))
        except Exception as exc:
            raise EngineError("DELETE_ERROR", str(exc)) from None
        old = result.old_value
        if old is not None and self.triggers.has_triggers():
            await self.triggers.deliver(state_event("state:deleted", scope, key, old, None),
                                        _written("state::delete", scope, key))
        return old

    async def _update(self, data: Any, ctx: InvocationContext) -> Any:
        f = Fields("state::update", data)
        scope, key, ops = f.text("scope"), f.text("key"), f.ops()
        try:
            result = await self.values.update(self._locks, self._store(), STATE_STREAM, scope, key, ops)
        except Exception as exc:
            raise EngineError("UPDATE_ERROR", str(exc)) from None
        if result is None:
            raise EngineError("UPDATE_ERROR", f"{type(self.store).__name__}.update returned no result")
        if self.triggers.has_triggers():
            await self.triggers.deliver(state_event(_changed(result.old_value), scope, key, result.old_value,
                                                    result.new_value), _written("state::update", scope, key))
        return {"old_value": result.old_value, "new_value": result.new_value}

    async def _list(self, data: Any, ctx: InvocationContext) -> EncodedResult:
        scope = Fields("state::list", data).text("scope")
        return await self.answers.list_text(self._store(), StreamListInput(stream_name=STATE_STREAM, group_id=scope),
                                            ctx, _LIST, f"scope {scope!r}")

    async def _list_groups(self, data: Any, ctx: InvocationContext) -> EncodedResult:
        try:
            groups = sorted(set(await self._store().list_groups(StreamListGroupsInput(stream_name=STATE_STREAM))))
        except Exception as exc:
            raise EngineError("LIST_GROUPS_ERROR", str(exc)) from None
        return self.answers.names(groups, ctx, _LIST_GROUPS, f"the list of {len(groups)} scopes",
                                  lambda names: {"groups": names})
