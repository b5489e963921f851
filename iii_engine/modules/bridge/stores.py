"""The ``Bridge`` adapters of the state and stream modules: stores whose data lives on a remote engine.

``adapter: {class: modules::state::adapters::Bridge | modules::stream::adapters::Bridge, config: {bridge_url}}``
(default ``ws://localhost:49134``). The front module keeps its own input checks, triggers, error codes and client
socket; only the store calls go to the remote's ``state::*`` / ``stream::*`` functions over a
:class:`~iii_engine.modules.bridge.link.BridgeLink` of the store's own. Results are decoded into the same models
the local stores return, so the front module answers exactly as it does with a local store.

Stream events travel through the remote's pub/sub: after each successful write the store publishes the event
wrapper on topic ``stream.events`` (the remote's ``publish``), and every delivery of that topic (a remote
``subscribe`` trigger bound to ``stream::bridge::on_pub::<uuid>``) reaches this engine's socket clients. Clients
therefore see the changes of every engine bridged to the same remote, their own included, but not changes made
directly in the remote's own store; while the remote is down they see none. Two engines' writes of one item may be
applied in one order and their events arrive in the other: an item with two events close together is read back and
its clients told the stored value (:mod:`~iii_engine.modules.bridge.event_check`).

Store errors read ``Failed to <op>: Failed to <op> via bridge: <reason>`` (the module adds its code, e.g.
``SET_ERROR``); the reason names the remote URL when it is unreachable.

Example:
    >>> open_bridge_store("state", "ws://localhost:1")
    Traceback (most recent call last):
    ...
    RuntimeError: state store: a Bridge store is opened by a running engine (no event loop)
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.stream import (
    StreamDeleteInput,
    StreamDeleteResult,
    StreamGetInput,
    StreamListGroupsInput,
    StreamListInput,
    StreamSetInput,
    StreamSetResult,
    StreamUpdateInput,
    StreamUpdateResult,
)
from iii.stream_ops import op_to_wire
from iii_streams import Backend, StreamGapError
from iii_streams.events import EventHub, StreamEvent, Subscription, Watch, custom_event, make_event

from .event_check import EventChecks
from .link import BridgeCallError, BridgeLink

__all__ = ["BRIDGE_EVENTS_TOPIC", "BridgeStateStore", "BridgeStoreError", "BridgeStreamStore", "open_bridge_store"]

log = logging.getLogger(__name__)

BRIDGE_EVENTS_TOPIC: Final = "stream.events"


class BridgeStoreError(RuntimeError):
    """A store operation through the bridge failed; ``str()`` is the production-shaped message."""


def open_bridge_store(kind: str, url: str) -> Backend:
    """A started Bridge store for the ``state`` or ``stream`` module (must run inside the engine's loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(f"{kind} store: a Bridge store is opened by a running engine (no event loop)") from None
    store: _BridgeStore = BridgeStreamStore(url) if kind == "stream" else BridgeStateStore(url)
    store.start()
    return store


def _describe(value: Any) -> str:
    return "null" if value is None else type(value).__name__


class _Gap(dict[str, Any]):
    """Not an event: where it is queued, a watch's reader learns that events were missed (``reason``)."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


class _GapAware:
    """A hub subscription whose read raises :class:`StreamGapError` where the store queued a :class:`_Gap`, in
    order with the events around it; the subscription reads on after it (the stream socket then re-syncs its
    clients)."""

    def __init__(self, sub: Subscription) -> None:
        self._sub = sub

    async def get(self) -> StreamEvent:
        event = await self._sub.get()
        if isinstance(event, _Gap):
            raise StreamGapError(event.reason)
        return event

    async def close(self) -> None:
        await self._sub.close()


class _BridgeStore(Backend):
    def __init__(self, url: str, role: str) -> None:
        self.link = BridgeLink(url, role=role)
        self._hub = EventHub()

    def start(self) -> None:
        self.link.start()

    async def _call(self, function_id: str, payload: dict[str, Any], action: str) -> Any:
        try:
            return await self.link.call(function_id, payload)
        except BridgeCallError as exc:
            raise BridgeStoreError(f"Failed to {action}: Failed to {action} via bridge: {exc}") from None

    @staticmethod
    def _pair(result: Any, action: str, op: str) -> tuple[Any, Any]:
        if not isinstance(result, Mapping) or "new_value" not in result:
            raise BridgeStoreError(f"Failed to {action}: Failed to deserialize {op} result: expected an object with "
                                   f"old_value and new_value, got {_describe(result)}")
        return result.get("old_value"), result["new_value"]

    @staticmethod
    def _array(result: Any, action: str, op: str) -> builtins.list[Any]:
        if not isinstance(result, builtins.list):
            raise BridgeStoreError(f"Failed to {action}: Failed to deserialize {op} result: expected an array, "
                                   f"got {_describe(result)}")
        return result

    def watch(self, stream_name: str | None = None, group_id: str | None = None,
              item_id: str | None = None) -> Watch:
        event_filter = self._filter(stream_name, group_id, item_id)

        async def opener() -> Subscription:
            return _GapAware(self._hub.subscribe(event_filter))

        return Watch(opener, event_filter)

    async def list_all(self) -> builtins.list[tuple[str, builtins.list[str]]]:
        """Nothing: the remote has no call that lists every stream (production answers empty too)."""
        return []

    async def aclose(self) -> None:
        await self.link.close()


class BridgeStateStore(_BridgeStore):
    """The state module's store on a remote engine: group = scope, item id = key (the stream name is unused)."""

    publish_events = False

    def __init__(self, url: str) -> None:
        super().__init__(url, "state")

    async def get(self, input: StreamGetInput) -> Any:
        return await self._call("state::get", {"scope": input.group_id, "key": input.item_id}, "get value")

    async def set(self, input: StreamSetInput) -> StreamSetResult[Any]:
        result = await self._call("state::set", {"scope": input.group_id, "key": input.item_id, "value": input.data},
                                  "set value")
        old, new = self._pair(result, "set value", "set")
        return StreamSetResult[Any](old_value=old, new_value=new)

    async def delete(self, input: StreamDeleteInput) -> StreamDeleteResult:
        # the remote's state::delete answers the old value itself: one atomic call instead of get + delete
        old = await self._call("state::delete", {"scope": input.group_id, "key": input.item_id}, "delete value")
        return StreamDeleteResult(old_value=old)

    async def update(self, input: StreamUpdateInput) -> StreamUpdateResult[Any]:
        ops = [op_to_wire(op) for op in input.ops]
        result = await self._call("state::update", {"scope": input.group_id, "key": input.item_id, "ops": ops},
                                  "update value")
        old, new = self._pair(result, "update value", "update")
        return StreamUpdateResult[Any](old_value=old, new_value=new)

    async def list(self, input: StreamListInput) -> builtins.list[Any]:
        return self._array(await self._call("state::list", {"scope": input.group_id}, "list values"),
                           "list values", "list")

    async def list_groups(self, input: StreamListGroupsInput) -> builtins.list[str]:
        result = await self._call("state::list_groups", {}, "list groups")
        if not isinstance(result, Mapping) or "groups" not in result:
            raise BridgeStoreError("Failed to list groups: invalid state::list_groups response: missing 'groups' "
                                   "field")
        groups = result["groups"]
        if not isinstance(groups, builtins.list) or not all(isinstance(g, str) for g in groups):
            raise BridgeStoreError("Failed to list groups: invalid state::list_groups response: invalid 'groups' "
                                   f"field: expected an array of strings, got {groups!r:.200}")
        return groups

    async def send(self, stream_name: str, group_id: str, id: str | None, type: str, data: Any) -> None:
        raise BridgeStoreError("the state Bridge store has no event feed")

    async def publish(self, event: StreamEvent) -> None:
        raise BridgeStoreError("the state Bridge store has no event feed")


def _event(data: Any) -> StreamEvent:
    """A delivered ``stream.events`` message checked to be an event wrapper (``ValueError`` otherwise)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"Failed to deserialize stream message: expected an object, got {_describe(data)}")
    for key in ("streamName", "groupId"):
        if not isinstance(data.get(key), str):
            raise ValueError(f"Failed to deserialize stream message: missing or non-string field `{key}`")
    item_id = data.get("id")
    if item_id is not None and not isinstance(item_id, str):
        # production's wrapper has ``id: Option<String>``; passed on, a socket client got an object for an item id
        raise ValueError(f"Failed to deserialize stream message: field `id` must be a string or null, got "
                         f"{_describe(item_id)}")
    event = data.get("event")
    if not isinstance(event, Mapping):
        raise ValueError("Failed to deserialize stream message: missing field `event`")
    if not isinstance(event.get("type"), str):
        raise ValueError("Failed to deserialize stream message: missing or non-string field `event.type`")
    return dict(data)


class BridgeStreamStore(_BridgeStore):
    """The stream module's store on a remote engine, with events through the remote's ``stream.events`` topic."""

    def __init__(self, url: str) -> None:
        super().__init__(url, "stream")
        self.publish_events = True
        self.subscriber_id = f"stream::bridge::on_pub::{uuid.uuid4()}"
        self._stop_telling: Callable[[], None] | None = None  # set while started: removes the on_ready callback
        # events of two engines' writes to one item may arrive in the other order than the writes: such items are
        # read back, and the socket clients told the stored value (event_check)
        self._checks = EventChecks(self._stored, self._hub.publish)

    def start(self) -> None:
        """Connect and subscribe to the remote's ``stream.events`` (both replayed after every reconnect); a store
        already started is left as it is (its clients are told of a reconnect once, not once per start)."""
        if self._stop_telling is not None:
            return
        super().start()
        self.link.register_function(self.subscriber_id, self._delivered)
        self.link.register_trigger("subscribe", self.subscriber_id, {"topic": BRIDGE_EVENTS_TOPIC})
        # pub/sub keeps nothing for a subscriber that is away, and a restarted remote may hold other data: without
        # this a socket client kept a view that had silently stopped following the store
        self._stop_telling = self.link.on_ready(lambda: self._hub.publish(_Gap(
            f"the connection to remote engine {self.link.shown} was made again: {BRIDGE_EVENTS_TOPIC} messages sent "
            "while it was down were not delivered")))

    async def aclose(self) -> None:
        """Stop telling the clients of reconnects, then close the link."""
        stop_telling, self._stop_telling = self._stop_telling, None
        if stop_telling is not None:
            stop_telling()
        await self._checks.close()
        await super().aclose()

    async def _delivered(self, data: Any) -> None:
        event = _event(data)
        self._hub.publish(event)
        self._checks.note(event)

    async def _stored(self, key: tuple[str, str, str]) -> Any:
        stream_name, group_id, item_id = key
        return await self.get(StreamGetInput(stream_name=stream_name, group_id=group_id, item_id=item_id))

    async def _changed(self, event: StreamEvent) -> None:
        if not self.publish_events:
            return
        self._checks.published(event)
        try:
            await self.publish(event)
        except BridgeStoreError as exc:  # the write itself succeeded; production only logs a lost event too
            log.warning("stream event for %s/%s/%s not published: %s", event["streamName"], event["groupId"],
                        event["id"], exc)
            # this engine's own socket clients would never see that change: they re-sync instead
            self._hub.publish(_Gap(f"the event of a change to {event['streamName']}/{event['groupId']}/"
                                   f"{event['id']} was not published ({exc})"))

    @staticmethod
    def _key(input: StreamGetInput | StreamSetInput | StreamDeleteInput | StreamUpdateInput) -> dict[str, Any]:
        return {"stream_name": input.stream_name, "group_id": input.group_id, "item_id": input.item_id}

    async def get(self, input: StreamGetInput) -> Any:
        return await self._call("stream::get", self._key(input), "get value")

    async def set(self, input: StreamSetInput) -> StreamSetResult[Any]:
        result = await self._call("stream::set", {**self._key(input), "data": input.data}, "set value")
        old, new = self._pair(result, "set value", "set")
        await self._changed(make_event(input.stream_name, input.group_id, input.item_id,
                                       "create" if old is None else "update", new))
        return StreamSetResult[Any](old_value=old, new_value=new)

    async def delete(self, input: StreamDeleteInput) -> StreamDeleteResult:
        result = await self._call("stream::delete", self._key(input), "delete value")
        if result is not None and not isinstance(result, Mapping):
            raise BridgeStoreError("Failed to delete value: Failed to deserialize delete result: expected an "
                                   f"object with old_value, got {_describe(result)}")
        old = None if result is None else result.get("old_value")
        if old is not None:
            await self._changed(make_event(input.stream_name, input.group_id, input.item_id, "delete", old))
        return StreamDeleteResult(old_value=old)

    async def update(self, input: StreamUpdateInput) -> StreamUpdateResult[Any]:
        ops = [op_to_wire(op) for op in input.ops]
        result = await self._call("stream::update", {**self._key(input), "ops": ops}, "update value")
        old, new = self._pair(result, "update value", "update")
        await self._changed(make_event(input.stream_name, input.group_id, input.item_id,
                                       "create" if old is None else "update", new))
        return StreamUpdateResult[Any](old_value=old, new_value=new)

    async def list(self, input: StreamListInput) -> builtins.list[Any]:
        result = await self._call("stream::list", {"stream_name": input.stream_name, "group_id": input.group_id},
                                  "get group")
        return self._array(result, "get group", "list")

    async def list_groups(self, input: StreamListGroupsInput) -> builtins.list[str]:
        result = await self._call("stream::list_groups", {"stream_name": input.stream_name}, "list groups")
        groups = self._array(result, "list groups", "list_groups")
        if not all(isinstance(g, str) for g in groups):
            raise BridgeStoreError("Failed to list groups: Failed to deserialize list_groups result: expected an "
                                   "array of strings")
        return groups

    async def send(self, stream_name: str, group_id: str, id: str | None, type: str, data: Any) -> None:
        await self.publish(custom_event(stream_name, group_id, id, type, data))

    async def publish(self, event: StreamEvent) -> None:
        """Publish ``event`` on the remote's ``stream.events`` topic (it comes back to every bridged front)."""
        try:
            await self.link.call("publish", {"topic": BRIDGE_EVENTS_TOPIC, "data": event})
        except BridgeCallError as exc:
            raise BridgeStoreError(f"Failed to send event: Failed to publish event: {exc}") from None
