"""The ``stream::*`` built-in functions (docs/reference/payloads.md#streams-stream-6.4,
docs/protocol.md#stream-improvements).

Each of get/set/delete/list/list_groups/update first looks for a worker function ``stream::<op>(<stream_name>)``
and otherwise uses the engine's own store. After a change the engine spawns the ``stream`` triggers and the event
reaches the store's pub/sub (where the client socket picks it up) before the reply: a store write publishes its
own event in the same step (the store is opened with ``publish_events``), a custom stream's change is published
by the engine. Store updates through one engine take a per-item lock (ST11), so concurrent updates of one item
queue here instead of racing in the store's optimistic retry loop.

Ours: ``stream::update`` on a custom stream without ``stream::update(NAME)`` composes custom get → ops → custom
set under a per-item lock (ST1); a custom delete answering ``null`` means ``{old_value: null}`` (ST2).

Ours (issue #8): the engine remembers every stream a worker has served (any ``stream::<op>(NAME)`` registered by a
worker, plus the ``custom_streams`` setting). While no worker serves such a stream, every op on it (get, set,
update, delete, list, list_groups, send and the socket's sync) fails with ``stream_unavailable`` instead of
silently using the engine's own store, whose data is not the worker's; it works again as soon as a worker
registers the stream again. ``fallback=True`` (setting ``custom_stream_fallback``) keeps production's fallback.

Ours: an answer to a worker from the engine's store (``stream::list``, ``stream::list_groups``,
``stream::list_all``) is at most the engine's ``max_message_size`` less its frame
(:class:`~iii_engine.modules.answers.AnswerBound`, shared with the state module); a larger one fails with one error
naming the group or the counts, the size and the setting, found before the answer is built. Before, a group of
40 items of 1 MB was answered whole, and 8 callers that did not read took the engine from ~90 MB to 830-1,000 MB.
A worker's answer for a custom stream came within ``max_message_size`` already and is passed on as it is. A socket
join's sync is not bounded so: the socket's own bounds hold a client that does not read.

Ours: a stream name starting with ``__iii_`` (:data:`~.inputs.RESERVED_PREFIX`) is the engine's own: every op on
one fails with its op's code (``STREAM_GET_ERROR``, ``STREAM_SET_ERROR``, ...) naming it, and ``stream::list_all``
leaves such names out. Before, with one SQL ``store_url`` for the state and stream modules, ``stream::get`` /
``stream::set`` of ``__iii_state`` read and changed the state module's items.

Example:
    >>> sorted(f.id for f in StreamFunctions.__new__(StreamFunctions).builtins())[:3]
    ['stream::delete', 'stream::get', 'stream::list']
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import weakref
from collections.abc import Iterable, Mapping
from typing import Any, Final

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.stream import (
    StreamDeleteInput,
    StreamGetInput,
    StreamListGroupsInput,
    StreamListInput,
    StreamSetInput,
)
from iii.stream_ops import Op, apply_update, op_to_wire
from iii.wire import dumps
from iii_streams import Backend
from iii_streams.errors import SEND_ROOM, StreamValueTooLargeError, check_value_bytes, json_text, utf8_size
from iii_streams.events import StreamEvent, custom_event, make_event

from ..answers import FRAME_BYTES, AnswerBound, AnswerSpec
from ..base import BuiltinFunction, EncodedResult, EngineError, EngineServices, InvocationContext
from .inputs import RESERVED_PREFIX, Fields, check_stream_name, describe, reserved_name
from .locks import KeyedLocks, store_updates_atomically
from .store import HEALTH_ITEM
from .triggers import StreamTriggers

log = logging.getLogger(__name__)


def value_limit(max_message_size: int) -> int:
    """The largest value, in UTF-8 bytes of JSON, an update may leave in the store: half of ``max_message_size``
    less the frame around an answer (:data:`~iii_engine.modules.answers.FRAME_BYTES`), as an update's answer and
    the trigger calls of its change carry the old value and the new one in one frame.

    Example:
        >>> value_limit(4 * 1024 * 1024)
        2095104
    """
    return (max_message_size - FRAME_BYTES) // 2


def too_large_value(what: str, size: int, limit: int) -> str:
    """The message of a write refused for its value's size.

    Example:
        >>> too_large_value("the updated value", 10, 4)[:64]
        'the updated value is 10 bytes of JSON, over the 4 bytes a value '
    """
    return (f"{what} is {size} bytes of JSON, over the {limit} bytes a value may take (half of the engine's "
            "max_message_size less its frame: an answer or trigger call carries the old value and the new one); "
            "nothing was changed")


class ValueBound:
    """Updates refused, with a ``ValueError`` and nothing written (no event, no trigger call), when the value they
    would leave in the store is over :attr:`limit` bytes of JSON (:func:`value_limit` of ``max_message_size``).

    The store checks it: :meth:`update` passes ``max_bytes=limit`` to ``store.update_parsed``, and the stores of
    ``iii_streams`` measure the text they write in the same atomic step as the write (memory: no await between
    read and write; Redis: the batch's compare-and-set; SQL: the transaction), against the value they replace. So
    concurrent updates of one item, through this engine or another sharing the store, can never together leave
    more than the limit, no read is added per update, and an atomic store's updates of one item still share one
    transaction (group commit). A store whose own ``update_parsed`` takes no ``max_bytes`` (a subclass's override)
    is checked here instead: the item read, the ops applied to it and the result measured, under the engine's
    item lock, before its ``update_parsed`` runs (not counting a write made meanwhile through another engine).

    Why: values grown by updates each under ``max_message_size`` (3 x 3 MB: a 9 MB value) were stored, and the
    answers and trigger calls carrying them (old and new) closed the connection of workers that read them with
    1008 (``max_outbox_bytes``: two concurrent ``state::get`` of the 9 MB value queued 18,000,288 bytes).

    Example:
        >>> import asyncio
        >>> from iii.stream_ops import parse_ops
        >>> from iii_streams import MemoryStream
        >>> ops = parse_ops([{"type": "set", "path": "a", "value": "x" * 20}])
        >>> bound = ValueBound(4096 + 20)
        >>> bound.limit
        10
        >>> asyncio.run(bound.update(KeyedLocks(), MemoryStream(), "s", "g", "i", ops))
        Traceback (most recent call last):
        ...
        ValueError: the updated value is 28 bytes of JSON, over the 10 bytes a value may take (half of the engine's \
max_message_size less its frame: an answer or trigger call carries the old value and the new one); nothing was changed
    """

    def __init__(self, max_message_size: int) -> None:
        self.limit = value_limit(max_message_size)
        self._store: object = None  # the store last seen: does its update_parsed take max_bytes, is it atomic
        self._native = self._atomic = False

    def direct(self, store: Backend) -> bool:
        """Whether :meth:`update` of ``store`` takes no engine lock (the store checks ``max_bytes`` itself and
        applies updates atomically): then no update of the engine's runs between a read and a write of its own, and
        a set or delete need not join the item's lock (``KeyedLocks.join``) either.

        Example:
            >>> from iii_streams import MemoryStream
            >>> ValueBound(1 << 20).direct(MemoryStream())
            True
        """
        if store is not self._store:  # (a module keeps one store: looked up once)
            self._native = takes_max_bytes(store.update_parsed)
            self._atomic = store_updates_atomically(store)
            self._store = store
        return self._native and self._atomic

    async def update(self, locks: KeyedLocks, store: Backend, stream_name: str, group_id: str, item_id: str,
                     ops: list[Op]) -> Any:
        """``store.update_parsed(...)`` of one item, refused over :attr:`limit` (see the class)."""
        self.direct(store)
        try:
            if self._native and self._atomic:  # the common case, no lock: KeyedLocks.update_parsed's first branch
                return await store.update_parsed(stream_name, group_id, item_id, ops, max_bytes=self.limit)
            if self._native:
                return await locks.update_parsed(store, stream_name, group_id, item_id, ops, max_bytes=self.limit)
            async with locks.hold((stream_name, group_id, item_id)):
                old = await store.get(StreamGetInput(stream_name=stream_name, group_id=group_id, item_id=item_id))
                check_value_bytes(json_text(apply_update(old, ops)[1], "the updated value"), self.limit)
                return await store.update_parsed(stream_name, group_id, item_id, ops)
        except StreamValueTooLargeError as exc:  # the store's words restated with the engine's setting
            raise ValueError(too_large_value(exc.what, exc.size, self.limit)) from None


_TAKES_MAX_BYTES: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def takes_max_bytes(update_parsed: Any) -> bool:
    """Whether a store's ``update_parsed`` (a bound method) takes the keyword ``max_bytes`` (or any keyword, to
    pass on): a subclass's own override written before the keyword existed does not. Looked up once per function.

    Example:
        >>> from iii_streams import MemoryStream
        >>> class Own(MemoryStream):
        ...     async def update_parsed(self, stream_name, group_id, item_id, ops): ...
        >>> takes_max_bytes(MemoryStream().update_parsed), takes_max_bytes(Own().update_parsed)
        (True, False)
    """
    function = getattr(update_parsed, "__func__", update_parsed)
    try:
        return _TAKES_MAX_BYTES[function]
    except (KeyError, TypeError):  # (TypeError: an object that takes no weak reference, looked up each time)
        pass
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        parameters = ()  # type: ignore[assignment]
    named = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    takes = any(p.kind is p.VAR_KEYWORD or (p.name == "max_bytes" and p.kind in named) for p in parameters)
    with contextlib.suppress(TypeError):
        _TAKES_MAX_BYTES[function] = takes
    return takes


__all__ = ["StreamFunctions", "ValueBound", "takes_max_bytes", "too_large_value", "value_limit"]

_ITEM = {"stream_name": {"type": "string"}, "group_id": {"type": "string"}, "item_id": {"type": "string"}}
CUSTOM_OPS: Final = ("get", "set", "delete", "list", "list_groups", "update")
UNAVAILABLE: Final = "stream_unavailable"
_OP_ERRORS: Final = {"get": "STREAM_GET_ERROR", "set": "STREAM_SET_ERROR", "delete": "STREAM_DELETE_ERROR",
                     "list": "STREAM_GET_GROUP_ERROR", "list_groups": "STREAM_LIST_GROUPS_ERROR",
                     "update": "STREAM_UPDATE_ERROR"}  # each custom op's error code
_LIST: Final = AnswerSpec("stream::list", "STREAM_GET_GROUP_ERROR",
                          "read its items by id (stream::get) or raise max_message_size")
_LIST_GROUPS: Final = AnswerSpec("stream::list_groups", "STREAM_LIST_GROUPS_ERROR", "raise max_message_size")
_LIST_ALL: Final = AnswerSpec("stream::list_all", "STREAM_LIST_ALL_ERROR",
                              "list one stream's groups (stream::list_groups) or raise max_message_size")
# the item the stream module's health probe reads (store_health): through a Bridge it is the remote's stream::get,
# which answers it from its store although its name is reserved (no worker's function is asked); nothing writes it
_HEALTH_KEY: Final = (HEALTH_ITEM, HEALTH_ITEM, HEALTH_ITEM)


def _schema(required: list[str], **extra: Any) -> dict[str, Any]:
    props = {k: v for k, v in _ITEM.items() if k in required}
    props.update(extra)
    return {"type": "object", "properties": props, "required": required}


def _custom_id(op: str, stream_name: str) -> str:
    return f"stream::{op}({stream_name})"


def served_stream(function_id_rest: str) -> str | None:
    """The stream name of a custom stream function id without its ``stream::`` head, else ``None``.

    Example:
        >>> served_stream("list_groups(a(b))"), served_stream("list_all"), served_stream("nope(x)")
        ('a(b)', None, None)
    """
    op, sep, rest = function_id_rest.partition("(")
    return rest[:-1] if sep and op in CUSTOM_OPS and rest.endswith(")") else None


class StreamFunctions:
    """The stream built-ins over one store; also the custom-aware reads the client socket's ``sync`` needs."""

    def __init__(self, services: EngineServices, store: Backend, triggers: StreamTriggers, *,
                 fallback: bool = False, served: Iterable[str] = (), call_timeout_s: float | None = None,
                 answers: AnswerBound | None = None) -> None:
        self.services = services
        #: the bound of a list answer to a worker from the engine's store (``max_message_size``; not the socket's sync)
        self.answers = answers or AnswerBound()
        # bounds every call to a worker's stream::<op>(NAME): a composed update holds the item's lock across two
        # of them, and the engine's own wait for an answer outlives its caller's deadline
        self.call_timeout_s = call_timeout_s
        self.store = store
        self.triggers = triggers
        self.fallback = fallback
        self._served: set[str] = set(served)  # streams a worker served: never silently the engine's store
        self._seen_stream_functions = -1
        self._locks = KeyedLocks()
        #: the bound of a value an update leaves in the engine's store (:func:`value_limit` of max_message_size)
        self.values = ValueBound(self.answers.max_message_size)
        self._following = False  # follow_registrations was called: _maybe_served may answer False

    def follow_registrations(self) -> None:
        """Learn of every custom stream a worker registers, even one gone before any call."""
        self.services.add_functions_listener(self._functions_changed)
        self._functions_changed()
        self._following = True

    def _functions_changed(self) -> None:
        # The registry indexes worker functions by service ("stream" → {"get(NAME)", …}); looking at that set
        # only when it grew keeps a registration burst of unrelated functions cheap. Called synchronously on
        # every change, so a worker that registers and vanishes at once is still seen.
        names = self.services.service_functions("stream")
        if len(names) <= self._seen_stream_functions:
            self._seen_stream_functions = len(names)
            return
        self._seen_stream_functions = len(names)
        for rest in names:
            name = served_stream(rest)
            # a reserved name is never served (every op refuses it, the health probe reads the store): not kept
            if name is not None and not name.startswith(RESERVED_PREFIX):
                self._served.add(name)

    def _no_fallback(self, stream_name: str) -> None:
        """Refuse the engine's store for a stream that a worker served, while no worker serves it."""
        if self.fallback or stream_name not in self._served:
            return
        if any(self.services.has_function(_custom_id(op, stream_name)) for op in CUSTOM_OPS):
            return  # a worker serves the stream, just not this op: production semantics (the engine's store)
        raise EngineError(UNAVAILABLE, f"stream {stream_name!r} is served by a worker (create_stream) and its "
                          "serving worker is gone; refusing the engine's own store, which does not hold its data "
                          "(it works again when a worker registers the stream; custom_stream_fallback: true "
                          "restores the fallback)")

    def builtins(self) -> list[BuiltinFunction]:
        """Every ``stream::*`` built-in, ready to register."""
        item = ["stream_name", "group_id", "item_id"]
        return [
            BuiltinFunction("stream::get", self.get, "Get a stream item (no result when missing)",
                            request_format=_schema(item)),
            BuiltinFunction("stream::set", self.set, "Set a stream item; returns {old_value, new_value}",
                            request_format=_schema([*item, "data"], data={})),
            BuiltinFunction("stream::delete", self.delete, "Delete a stream item; returns {old_value}",
                            request_format=_schema(item)),
            BuiltinFunction("stream::list", self.list_items, "The values of every item of a group",
                            request_format=_schema(["stream_name", "group_id"])),
            BuiltinFunction("stream::list_groups", self.list_groups, "The group ids of a stream",
                            request_format=_schema(["stream_name"])),
            BuiltinFunction("stream::update", self.update, "Apply update ops atomically; returns {old_value, "
                            "new_value}", request_format=_schema([*item, "ops"], ops={"type": "array"})),
            BuiltinFunction("stream::send", self.send, "Send a custom event to a stream's subscribers",
                            request_format=_schema(["stream_name", "group_id", "type"], id={"type": "string"},
                                                   type={"type": "string"}, data={})),
            BuiltinFunction("stream::list_all", self.list_all, "Every stream of the engine's store with its groups"),
        ]

    # -- plumbing ---------------------------------------------------------------------------------------------

    def _maybe_served(self, stream_name: str) -> bool:
        """Whether ``stream_name`` may have worker functions or was served by a worker (else neither
        :meth:`_custom` nor :meth:`_no_fallback` can apply to it: the per-update path skips their three
        function-id lookups). Exact: every worker-registered ``stream::<op>(NAME)`` is in the engine's ``stream``
        service index, and a stream in ``_served`` is always checked in full. Always ``True`` until
        :meth:`follow_registrations` (services that do not follow registrations get the full checks).

        Example:
            >>> class NoWorkerStreams:
            ...     def service_functions(self, service_id: str) -> frozenset[str]:
            ...         return frozenset()
            >>> api = StreamFunctions.__new__(StreamFunctions)
            >>> api.services = NoWorkerStreams()  # type: ignore[assignment]
            >>> api._served, api._following = {"kept"}, True
            >>> api._maybe_served("s"), api._maybe_served("kept")
            (False, True)
        """
        return (not self._following or stream_name in self._served
                or bool(self.services.service_functions("stream")))

    def _custom(self, op: str, stream_name: str) -> str | None:
        """The worker's ``stream::<op>(stream_name)`` to call, else ``None``. A reserved name raises the op's
        error: its callers refuse it first (the health item's read goes to the store), and a new caller that did
        not would let a worker's ``stream::<op>(__iii_…)`` answer for the engine's own data (a test pins it)."""
        check_stream_name(stream_name, _OP_ERRORS[op])
        function_id = _custom_id(op, stream_name)
        if not self.services.has_function(function_id):
            return None
        self._served.add(stream_name)  # also for engines without a registration listener
        return function_id

    async def _call(self, function_id: str, payload: Any) -> Any:
        """A worker's custom stream function's answer, within ``custom_call_timeout_ms``."""
        return await self.services.invoke(function_id, payload, timeout_s=self.call_timeout_s)

    async def _invoke(self, function_id: str, payload: Any, code: str, action: str) -> Any:
        try:
            return await self._call(function_id, payload)
        except EngineError as exc:
            # A write the worker was sent and did not answer in time may be applied all the same (it was read as
            # failed: 241 of 300 such sets were applied, their change events never sent)
            unknown = ("; the worker may have applied it, or may still: no change event goes out for it (stream::get "
                       "shows the item as it is)") if exc.code == "invocation_timeout" else ""
            raise EngineError(code, f"Failed to {action} value: Failed to invoke function: {exc.message}"
                                    f"{unknown}") from None

    @staticmethod
    def _result(function_id: str, result: Any, code: str, *, required: str | None) -> Any:
        """``result[key]`` of a custom answer checked like production (``JSON_ERROR`` when malformed)."""
        if result is None:
            raise EngineError(code, "Function returned no result")
        if not isinstance(result, Mapping):
            raise EngineError("JSON_ERROR", f"Failed to parse the result of {function_id}: invalid type: "
                              f"{describe(result)}, expected a JSON object")
        if required is not None and required not in result:
            raise EngineError("JSON_ERROR", f"Failed to parse the result of {function_id}: missing field `{required}`")
        return result

    @staticmethod
    def _storable(value: Any, what: str, code: str, *, limit: int | None = None) -> None:
        """Refuse, before a worker's custom stream is asked to write it, a value the stores refuse (nested past
        :data:`~iii_streams.errors.MAX_VALUE_DEPTH`): its change event could not be written for any subscriber;
        and one over ``limit`` bytes of JSON (a composed update's result, :func:`value_limit`)."""
        try:
            text = json_text(value, what)
        except (ValueError, TypeError) as exc:  # (TypeError: an in-process caller's value with no JSON form)
            raise EngineError(code, str(exc)) from None
        if limit is not None and (size := utf8_size(text)) > limit:
            raise EngineError(code, too_large_value(what, size, limit))

    @classmethod
    def _sendable(cls, function_id: str, value: Any, what: str, code: str) -> None:
        """Refuse a custom stream's answer whose value no change event can carry (:meth:`_storable`'s rule): the
        worker made the change, but its event could be written for no subscriber and no trigger, so none goes out,
        and the caller is told."""
        try:
            cls._storable(value, what, code)
        except EngineError as exc:
            raise EngineError(code, f"{function_id} answered a change whose event cannot be sent, so none went out "
                                    f"(the worker's stream keeps the change): {exc.message}") from None

    async def _fire(self, event: StreamEvent, function_id: str, outcome: str = "done") -> None:
        """Hand ``event`` to its triggers, waiting for room among the engine's fired calls (``max_fired_calls``)
        like any producer that is itself a call; ``fire_limit`` names the call and what became of its change."""
        if self.triggers.has_triggers():  # no trigger: nothing to wait for (the common case, one per write)
            what = f"{function_id} of {event['streamName']!r}/{event['groupId']!r}/{event['id']!r} ({outcome})"
            await self.triggers.deliver(event, what)

    async def _emit(self, event: StreamEvent, function_id: str) -> None:
        """Publish a change made outside the store (a custom stream's, or a store that publishes nothing), then
        hand it to its triggers. Published first, as a store write's event goes out with the write: the change
        is made, so its subscribers see it at once and in order, even while its triggers wait for room or fail
        with ``fire_limit``."""
        try:
            await self.store.publish(event)
        except Exception as exc:  # production only logs a failed publish of a change event
            log.warning("stream event for %s/%s/%s not published: %r", event["streamName"],
                                      event["groupId"], event["id"], exc)
        await self._fire(event, function_id)

    async def _changed(self, function_id: str, s: str, g: str, i: str, old: Any, new: Any, *,
                       stored: bool = False) -> dict[str, Any]:
        if stored and self.store.publish_events:
            # the store already published it with the write; no trigger: no event to build (one per update)
            if self.triggers.has_triggers():
                await self._fire(make_event(s, g, i, "create" if old is None else "update", new), function_id)
        else:
            await self._emit(make_event(s, g, i, "create" if old is None else "update", new), function_id)
        return {"old_value": old, "new_value": new}

    # -- reads --------------------------------------------------------------------------------------------------

    def sync_source(self, stream_name: str, item_id: str | None) -> str:
        """What a socket join's sync read of ``stream_name`` calls (for its error messages): a worker's function
        id, else the engine's store.

        Example:
            >>> class NoWorkers:
            ...     def has_function(self, function_id: str) -> bool:
            ...         return False
            >>> api = StreamFunctions.__new__(StreamFunctions)
            >>> api.services = NoWorkers()  # type: ignore[assignment]
            >>> api.sync_source("s", None)
            "the engine's store"
        """
        function_id = _custom_id("list" if item_id is None else "get", stream_name)
        return function_id if self.services.has_function(function_id) else "the engine's store"

    async def read_item(self, stream_name: str, group_id: str, item_id: str) -> Any:
        """``stream::get`` without input parsing (custom-aware)."""
        custom = self._custom("get", stream_name)
        if custom is not None:
            return await self._call(
                custom, {"stream_name": stream_name, "group_id": group_id, "item_id": item_id})
        self._no_fallback(stream_name)
        return await self._store_get(stream_name, group_id, item_id)

    async def _store_get(self, stream_name: str, group_id: str, item_id: str) -> Any:
        """The engine's store's item."""
        try:
            return await self.store.get(StreamGetInput(stream_name=stream_name, group_id=group_id, item_id=item_id))
        except Exception as exc:
            raise EngineError("STREAM_GET_ERROR", str(exc)) from None

    async def read_group(self, stream_name: str, group_id: str) -> Any:
        """``stream::list`` without input parsing (custom-aware)."""
        custom = self._custom("list", stream_name)
        if custom is not None:
            return await self._call(custom, {"stream_name": stream_name, "group_id": group_id})
        self._no_fallback(stream_name)
        try:
            return await self.store.list(StreamListInput(stream_name=stream_name, group_id=group_id))
        except Exception as exc:
            raise EngineError("STREAM_GET_GROUP_ERROR", str(exc)) from None

    async def read_group_text(self, stream_name: str, group_id: str) -> str:
        """:meth:`read_group` as JSON text, for the socket's sync: the engine's store hands over the items' stored
        texts without decoding each (:meth:`iii_streams.Backend.list_text`); a worker's answer is encoded. Not bounded
        by ``max_message_size``: the socket's own bounds hold a client that does not read (its slow-client timers,
        ``client_queue_bytes``), and a sync bigger than them reaches a client that keeps reading."""
        return (await self._group_text(stream_name, group_id, None, _LIST, bounded=False)).json

    async def _group_text(self, stream_name: str, group_id: str, ctx: InvocationContext | None,
                          spec: AnswerSpec, *, bounded: bool = True) -> EncodedResult:
        if self._custom("list", stream_name) is not None:
            return EncodedResult(dumps(await self.read_group(stream_name, group_id)))
        self._no_fallback(stream_name)
        # the store finds the group's size before it builds the text (SQL in the database, Redis in a script)
        return await self.answers.list_text(self.store, StreamListInput(stream_name=stream_name, group_id=group_id),
                                            ctx, spec, f"group {group_id!r} of stream {stream_name!r}",
                                            bounded=bounded)

    async def get(self, data: Any, ctx: InvocationContext) -> Any:
        """``stream::get``."""
        f = Fields("stream::get", data)
        s, g, i = f.text("stream_name"), f.text("group_id"), f.text("item_id")
        if (s, g, i) == _HEALTH_KEY:
            # A Bridge front's health probe: the store's own item, never a worker's stream::get(__iii_health) (every
            # other op refuses the name first). Before 11b46974 such a worker answered the probe, and once it left
            # every probe failed as "served by a worker that is gone".
            return await self._store_get(s, g, i)
        return await self.read_item(check_stream_name(s, "STREAM_GET_ERROR"), g, i)

    async def list_items(self, data: Any, ctx: InvocationContext) -> Any:
        """``stream::list``: a worker's answer, else the engine's store's bounded by :attr:`answers`."""
        f = Fields("stream::list", data)
        stream_name, group_id = check_stream_name(f.text("stream_name"), "STREAM_GET_GROUP_ERROR"), f.text("group_id")
        if self._custom("list", stream_name) is not None:
            return await self.read_group(stream_name, group_id)
        return await self._group_text(stream_name, group_id, ctx, _LIST)

    async def list_groups(self, data: Any, ctx: InvocationContext) -> Any:
        """``stream::list_groups``: a worker's answer, else the engine's store's bounded by :attr:`answers`."""
        name = check_stream_name(Fields("stream::list_groups", data).text("stream_name"), "STREAM_LIST_GROUPS_ERROR")
        custom = self._custom("list_groups", name)
        if custom is not None:
            return await self._call(custom, {"stream_name": name})
        self._no_fallback(name)
        try:
            groups = await self.store.list_groups(StreamListGroupsInput(stream_name=name))
        except Exception as exc:
            raise EngineError("STREAM_LIST_GROUPS_ERROR", str(exc)) from None
        return self.answers.names(groups, ctx, _LIST_GROUPS, f"the list of {len(groups)} groups of stream {name!r}")

    async def list_all(self, data: Any, ctx: InvocationContext) -> Any:
        """``stream::list_all``: the store only; custom streams are invisible (as in production), and so are the
        engine's own (:func:`~.inputs.reserved_name`). Bounded by :attr:`answers`."""
        try:
            streams = [(name, groups) for name, groups in await self.store.list_all() if reserved_name(name) is None]
        except Exception as exc:
            raise EngineError("STREAM_LIST_ALL_ERROR", str(exc)) from None

        def answer() -> dict[str, Any]:
            entries = [{"id": name, "groups": groups} for name, groups in streams]
            return {"stream": entries, "count": len(entries)}

        # the names' characters: no answer is built for a list far over the budget
        at_least = sum(len(name) + sum(map(len, groups)) for name, groups in streams)
        groups = sum(len(groups) for _, groups in streams)
        return self.answers.json(answer, at_least, ctx, _LIST_ALL,
                                 f"the list of {len(streams)} streams and {groups} groups")

    # -- writes -------------------------------------------------------------------------------------------------

    async def set(self, data: Any, ctx: InvocationContext) -> Any:
        """``stream::set``."""
        f = Fields("stream::set", data)
        s, g, i, value = f.text("stream_name"), f.text("group_id"), f.text("item_id"), f.value("data")
        check_stream_name(s, "STREAM_SET_ERROR")
        custom = self._custom("set", s)
        if custom is not None:
            self._storable(value, "data", "STREAM_SET_ERROR")
            payload = {"stream_name": s, "group_id": g, "item_id": i, "data": value}
            async with self._locks.join((s, g, i)):  # after a composed update in flight, not inside it
                answer = self._result(custom, await self._invoke(custom, payload, "STREAM_SET_ERROR", "set"),
                                      "STREAM_SET_ERROR", required="new_value")
            self._sendable(custom, answer["new_value"], "new_value", "STREAM_SET_ERROR")
            return await self._changed("stream::set", s, g, i, answer.get("old_value"), answer["new_value"])
        self._no_fallback(s)
        try:
            result = await self.store.set(StreamSetInput(stream_name=s, group_id=g, item_id=i, data=value))
        except Exception as exc:
            raise EngineError("STREAM_SET_ERROR", str(exc)) from None
        return await self._changed("stream::set", s, g, i, None if result is None else result.old_value, value,
                                   stored=True)

    async def delete(self, data: Any, ctx: InvocationContext) -> Any:
        """``stream::delete``; a delete event only when something was removed."""
        f = Fields("stream::delete", data)
        s, g, i = f.text("stream_name"), f.text("group_id"), f.text("item_id")
        check_stream_name(s, "STREAM_DELETE_ERROR")
        custom = self._custom("delete", s)
        if custom is not None:
            async with self._locks.join((s, g, i)):  # after a composed update in flight, not inside it
                answer = await self._invoke(custom, {"stream_name": s, "group_id": g, "item_id": i},
                                            "STREAM_DELETE_ERROR", "delete")
            old = None if answer is None else self._result(custom, answer, "STREAM_DELETE_ERROR",
                                                           required=None).get("old_value")
            self._sendable(custom, old, "old_value", "STREAM_DELETE_ERROR")
        else:
            self._no_fallback(s)
            try:
                old = (await self.store.delete(StreamDeleteInput(stream_name=s, group_id=g, item_id=i))).old_value
            except Exception as exc:
                raise EngineError("STREAM_DELETE_ERROR", str(exc)) from None
        if old is not None:
            if custom is None and self.store.publish_events:
                if self.triggers.has_triggers():  # no trigger: no event to build
                    await self._fire(make_event(s, g, i, "delete", old), "stream::delete")
            else:
                await self._emit(make_event(s, g, i, "delete", old), "stream::delete")
        return {"old_value": old}

    async def update(self, data: Any, ctx: InvocationContext) -> Any:
        """``stream::update``: custom ``update(NAME)``, else composed on custom get/set (ST1), else the store."""
        f = Fields("stream::update", data)
        s, g, i = f.text("stream_name"), f.text("group_id"), f.text("item_id")
        ops = f.ops()
        check_stream_name(s, "STREAM_UPDATE_ERROR")
        if self._maybe_served(s):
            custom = self._custom("update", s)
            if custom is not None:
                # the ops as validated, in their wire form: a root merge without ``path`` (accepted here) must
                # reach the worker with ``path: ""``, which SDK models require
                payload = {"stream_name": s, "group_id": g, "item_id": i, "ops": [op_to_wire(op) for op in ops]}
                answer = self._result(custom, await self._invoke(custom, payload, "STREAM_UPDATE_ERROR", "update"),
                                      "STREAM_UPDATE_ERROR", required="new_value")
                self._sendable(custom, answer["new_value"], "new_value", "STREAM_UPDATE_ERROR")
                return await self._changed("stream::update", s, g, i, answer.get("old_value"), answer["new_value"])
            get_id, set_id = self._custom("get", s), self._custom("set", s)
            if get_id is not None and set_id is not None:
                return await self._compose(s, g, i, ops, get_id, set_id)
            self._no_fallback(s)
        try:  # the ops are already validated: the store takes them with the fields, no input model built
            result = await self.values.update(self._locks, self.store, s, g, i, ops)
        except Exception as exc:
            raise EngineError("STREAM_UPDATE_ERROR", str(exc)) from None
        if result is None:
            raise EngineError("STREAM_UPDATE_ERROR", f"{type(self.store).__name__}.update returned no result")
        return await self._changed("stream::update", s, g, i, result.old_value, result.new_value, stored=True)

    async def _compose(self, s: str, g: str, i: str, ops: list[Op], get_id: str, set_id: str) -> Any:
        key = {"stream_name": s, "group_id": g, "item_id": i}
        async with self._locks.hold((s, g, i)):
            old = await self._invoke(get_id, key, "STREAM_UPDATE_ERROR", "update")
            # the answer holds the old value: one its caller could not be sent is refused before anything changes
            self._storable(old, "the item's current value", "STREAM_UPDATE_ERROR")
            old, new = apply_update(old, ops)
            self._storable(new, "the updated value", "STREAM_UPDATE_ERROR",
                           limit=self.values.limit)
            # the custom set function itself, not the stream::set built-in, so only one event goes out
            await self._invoke(set_id, {**key, "data": new}, "STREAM_UPDATE_ERROR", "update")
        return await self._changed("stream::update", s, g, i, old, new)

    async def send(self, data: Any, ctx: InvocationContext) -> None:
        """``stream::send``: a custom event to triggers and socket subscribers; nothing is stored."""
        f = Fields("stream::send", data)
        s, g, item = f.text("stream_name"), f.text("group_id"), f.optional_text("id")
        value = f.value("data", required=False)
        check_stream_name(s, "STREAM_SEND_ERROR")
        try:  # before its triggers are called: the store's own check comes after them
            json_text(value, "data", room=SEND_ROOM)
        except ValueError as exc:
            raise EngineError("STREAM_SEND_ERROR", str(exc)) from None
        event = custom_event(s, g, item, f.text("type"), value)
        self._no_fallback(s)  # its subscribers follow the worker's store, not the engine's
        await self._fire(event, "stream::send", "not sent")
        try:
            await self.store.publish(event)
        except Exception as exc:
            raise EngineError("STREAM_SEND_ERROR", str(exc)) from None
