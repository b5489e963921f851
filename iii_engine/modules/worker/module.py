"""The worker module (always loaded): ``engine::*`` listing functions, worker metadata, channel creation and
the ``engine::functions-available`` / ``engine::workers-available`` trigger types
(docs/protocol.md#built-in-functions, E8).

Example (input parsing of the built-ins):
    >>> _optional(dict(include_internal=True), "engine::functions::list", "include_internal", bool)
    True
    >>> _object(None, "engine::functions::list")
    Traceback (most recent call last):
    ...
    iii_engine.modules.base.EngineError: deserialization_error: Failed to deserialize input for \
engine::functions::list: expected a JSON object, got null
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Protocol, TypeVar

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.iii_types import TriggerInfo
from iii.protocol.codec import Encoded
from iii.wire import dumps

from ...channels import ChannelRelay, TooManyChannels
from ...config import EngineConfig
from ...limits import CalleeCall, FiredCalls, retained_estimate
from ...registry import Registry, TriggerEntry
from ...workers import WorkerConnection
from ..answers import AnswerBound, AnswerSpec
from ..base import (
    BuiltinFunction,
    CallUnwritable,
    EncodedResult,
    EngineError,
    EngineModule,
    EngineServices,
    FiredSlots,
    InvocationContext,
)

FUNCTIONS_AVAILABLE = "engine::functions-available"
# A worker's telemetry (language, framework, project) is kept while it is connected and counted nowhere else: an
# SDK sends a few hundred bytes; a 3.9 MB list of empty objects kept ~97 MB per connected worker.
MAX_WORKER_TELEMETRY_BYTES = 64 * 1024
# A worker's name, runtime, version and os are kept while it is connected and put in every engine::workers::list
# answer: an SDK sends a few dozen characters each ("<hostname>:<pid>", "Linux 6.1.0 (x86_64)"); unbounded, 40
# workers with four 1 MB strings took an engine from ~60 to ~216 MB and one list answer was 160 MB.
MAX_WORKER_METADATA_CHARS = 1024
_METADATA_STRINGS = ("runtime", "version", "name", "os")
WORKERS_AVAILABLE = "engine::workers-available"

T = TypeVar("T")

log = logging.getLogger(__name__)

_JSON_NAMES = {type(None): "null", bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               list: "an array", dict: "an object"}


class EngineCore(EngineServices, Protocol):
    """What the worker module needs beyond :class:`EngineServices`: the engine's own tables."""

    config: EngineConfig
    registry: Registry
    workers: dict[str, WorkerConnection]
    channels: ChannelRelay

    @property
    def fired_calls(self) -> FiredCalls:
        """The engine's bound on trigger-fired calls, with each callee's share (:meth:`FiredCalls.to_callee`)."""

    def add_functions_listener(self, listener: Callable[[], None]) -> None:
        """Be told when the function id set may have changed."""

    def add_worker_listener(self, listener: Callable[[str, str], None]) -> None:
        """Be told about worker events."""

    def emit_worker_event(self, event: str, worker_id: str) -> None:
        """Announce a worker event."""


def _json_name(value: Any) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _object(data: Any, function_id: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise EngineError("deserialization_error",
                          f"Failed to deserialize input for {function_id}: expected a JSON object, got "
                          f"{_json_name(data)}")
    return data


def _optional(data: Mapping[str, Any], function_id: str, key: str, kind: type[T]) -> T | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise EngineError("deserialization_error",
                          f"Failed to deserialize input for {function_id}: '{key}' must be "
                          f"{_JSON_NAMES.get(kind, kind.__name__)}, got {_json_name(value)}")
    return value


def _json_copy(value: Any) -> Any:
    """A copy of a JSON value's containers (the leaves are immutable)."""
    kind = type(value)
    if kind is dict:
        return {k: _json_copy(v) for k, v in value.items()}
    if kind is list:
        return [_json_copy(v) for v in value]
    return value


def _private(infos: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy of a registry listing the receiver may keep or change: the info dicts are shared by the cache, and
    their nested values (metadata, formats, trigger config) are the registry's own.

    Example:
        >>> shared = [{"id": "t", "config": {"a": [1]}}]
        >>> mine = _private(shared); mine[0]["config"]["a"].append(2); mine[0]["id"] = "x"
        >>> shared
        [{'id': 't', 'config': {'a': [1]}}]
    """
    copies = []
    for info in infos:
        mine = dict(info)
        for key, value in info.items():
            kind = type(value)
            if kind is dict or kind is list:  # most values are strings or None: copied with the dict
                mine[key] = _json_copy(value)
        copies.append(mine)
    return copies


def _for_caller(infos: list[dict[str, Any]], ctx: InvocationContext) -> list[dict[str, Any]]:
    """A listing for the caller of a built-in: a worker gets it encoded on the spot, so the shared dicts do;
    an in-process caller (no worker id) gets the result object itself, so a private copy."""
    return infos if ctx.caller_worker_id is not None else _private(infos)


def _schema(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                              "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


_OWED_RETRY_S = 1.0
PUSHES_PER_WORKER: Final = 4
"""Functions-available pushes in flight to one worker at most, whatever its number of triggers: each may hold a frame
of the whole list until the worker's queue takes it. Counted per worker only (not against ``max_fired_bytes``):
charged there, five workers that never answer took all of it, and every other producer's payload larger than what
was left failed with ``fire_limit``, every other listener untold. The others are owed and retried every second."""
_REGISTER = "engine::workers::register"
_REFUSED_LOG_INTERVAL_S = 10.0
_LIST_WORKERS: Final = AnswerSpec("engine::workers::list", "serialization_error",
                                  "ask for one worker with 'worker_id', or raise max_message_size")
# a lower bound on an encoded WorkerInfo's characters beyond its strings and function ids: its keys, quotes, colons
_WORKER_INFO_AT_LEAST = len(dumps({"id": "", "name": "", "runtime": "", "version": "", "os": "", "ip_address": "",
                                   "status": "", "connected_at_ms": 0, "function_count": 0, "functions": [],
                                   "active_invocations": 0, "latest_metrics": None}))
# the errors a push ends with that are the engine's, not an answer of the listener's: it did not get the set
_UNANSWERED = frozenset({"invocation_timeout", "invocation_stopped", "function_not_found"})
_NULLABLE_STR = {"type": ["string", "null"]}
_INCLUDE_INTERNAL = {"include_internal": {"type": ["boolean", "null"]}}
_FUNCTION_INFO = {"type": "object", "properties": {
    "function_id": {"type": "string"}, "description": _NULLABLE_STR, "request_format": {},
    "response_format": {}, "metadata": {}}, "required": ["function_id"]}
_TRIGGER_INFO = {"type": "object", "properties": {
    "id": {"type": "string"}, "trigger_type": {"type": "string"}, "function_id": {"type": "string"},
    "config": {}}, "required": ["id", "trigger_type", "function_id", "config"]}
_WORKER_INFO = {"type": "object", "properties": {
    "id": {"type": "string"}, "name": _NULLABLE_STR, "runtime": _NULLABLE_STR, "version": _NULLABLE_STR,
    "os": _NULLABLE_STR, "ip_address": _NULLABLE_STR, "status": {"type": "string"},
    "connected_at_ms": {"type": "integer"}, "function_count": {"type": "integer"},
    "functions": {"type": "array", "items": {"type": "string"}}, "active_invocations": {"type": "integer"},
    "latest_metrics": {}, "pid": {"type": "integer", "minimum": 0}},
    "required": ["id", "status", "connected_at_ms", "function_count", "functions", "active_invocations"]}
_CHANNEL_REF = {"type": "object", "properties": {
    "channel_id": {"type": "string"}, "access_key": {"type": "string"},
    "direction": {"type": "string", "enum": ["read", "write"]}},
    "required": ["channel_id", "access_key", "direction"]}


def _worker_metadata(data: Any) -> tuple[dict[str, str | None], dict[str, Any] | None, int | None, dict[str, str]]:
    """The strings, telemetry and pid of an ``engine::workers::register`` payload, and what of them is over its
    bound: each such value is left out (``None``) and named in the last item (key: why), the others kept. A value of
    the wrong type refuses the whole call.

    Why left out one by one: a name one character over the bound lost the worker its runtime, version, os and pid
    too (the SDKs send their metadata as a void call: nobody but the log heard of it).

    Example:
        >>> strings, telemetry, pid, over = _worker_metadata({"name": "w" * 1025, "runtime": "python", "pid": 7})
        >>> strings["name"], strings["runtime"], pid, over
        (None, 'python', 7, {'name': "'name' is 1025 characters, at most 1024"})
    """
    fid = _REGISTER
    args = _object(data, fid)
    strings = {key: _optional(args, fid, key, str) for key in _METADATA_STRINGS}
    telemetry = _optional(args, fid, "telemetry", dict)
    pid = _optional(args, fid, "pid", int)
    over: dict[str, str] = {}
    for key, value in strings.items():
        if value is not None and len(value) > MAX_WORKER_METADATA_CHARS:
            over[key] = f"'{key}' is {len(value)} characters, at most {MAX_WORKER_METADATA_CHARS}"
            strings[key] = None
    if telemetry is not None:
        kept = retained_estimate(dumps(telemetry))
        if kept > MAX_WORKER_TELEMETRY_BYTES:
            over["telemetry"] = f"'telemetry' would keep ~{kept} bytes (at most {MAX_WORKER_TELEMETRY_BYTES})"
            telemetry = None
    if pid is not None and not 0 <= pid <= 0xFFFFFFFF:
        over["pid"] = "'pid' must be an unsigned 32-bit integer"
        pid = None
    return strings, telemetry, pid, over


class _RefusedLog:
    """Warnings for refused void ``engine::workers::register`` calls (an SDK's, whose worker then shows no name):
    the first, then at most one per :data:`_REFUSED_LOG_INTERVAL_S` with the count of those not logged."""

    def __init__(self) -> None:
        self.refusals = 0
        self._unlogged = 0
        self._logged_at: float | None = None

    def refused(self, worker_id: str, error: EngineError) -> None:
        self.refusals += 1
        now = time.monotonic()
        if self._logged_at is not None and now - self._logged_at < _REFUSED_LOG_INTERVAL_S:
            self._unlogged += 1
            return
        more = f" ({self._unlogged} more refused since the last warning)" if self._unlogged else ""
        self._logged_at, self._unlogged = now, 0
        log.warning("metadata of worker %s not recorded: %s%s", worker_id, error.message, more)


@dataclass(eq=False)
class _Push:
    """A functions-available push in flight: the trigger registration it went to and what it holds of
    ``max_fired_calls`` (and of its callee's share)."""

    trigger: TriggerEntry
    held: CalleeCall | FiredSlots
    callee: str | None = None  # the worker it went to (PUSHES_PER_WORKER), None for a built-in


class _NoopTriggerType:
    """Engine-owned trigger types whose triggers are only looked up when firing."""

    async def register(self, trigger: TriggerInfo) -> None:
        """Nothing to activate."""

    async def unregister(self, trigger: TriggerInfo) -> None:
        """Nothing to deactivate."""


class WorkerModule(EngineModule):
    """Built-ins about workers, functions and triggers. Loaded by the engine itself, never from config.

    Example:
        >>> WorkerModule.name
        'worker'
    """

    name: ClassVar[str] = "worker"
    class_names: ClassVar[tuple[str, ...]] = ("modules::worker::WorkerModule",)

    def __init__(self, services: EngineCore, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(services, config)
        self.core = services
        self._snapshot: list[str] | None = None
        self._check: asyncio.TimerHandle | None = None
        self.debounce_s = services.config.functions_available_debounce_ms / 1000
        # functions-available triggers (by id) whose current registration was not yet sent the current function set:
        # its push is still in flight (sent when it ends), was skipped (max_fired_calls or its callee's share full)
        # or ended unanswered (timed out, never sent, its worker gone): retried every _OWED_RETRY_S
        self._owed: set[str] = set()
        # the latest push per functions-available trigger id, with the registration it went to: one in flight per
        # registration, as a subscriber that reads or answers slowly held one full-list frame per change before (1 MB
        # each at 2,000 functions, without a byte bound). By registration, not id: a trigger id another worker took
        # over (E12), or registered again, waited for the old registration's push, which may never be answered.
        self._pushing: dict[str, _Push] = {}
        self._pushes: dict[asyncio.Task[bool], _Push] = {}  # every push in flight, the replaced ones' too (stop)
        self._per_callee: dict[str, int] = {}  # pushes in flight to each worker (PUSHES_PER_WORKER)
        # the current set's push, built once for every subscriber when the set is taken as _snapshot: built later
        # from the live registry, a push could carry a set the debounce never compared against (F-B: a function
        # registered and unregistered around an answer was left listed for good). Encoded then, once: encoded for
        # each push, 3,000 subscribers of 3,000 functions took the engine's loop for minutes (no other worker could
        # connect)
        self._payload: Encoded | None = None
        self._retrying = False  # _check is the retry of owed pushes, not a change's debounce
        # engine::workers::list answers, bounded by the engine's max_message_size
        self.answers = AnswerBound(services.config.max_message_size)
        self._refused_log = _RefusedLog()

    async def start(self) -> None:
        """Register the built-ins and trigger types."""
        s = self.core
        s.register_function(BuiltinFunction(
            "engine::functions::list", self._list_functions, "List registered functions",
            _schema(_INCLUDE_INTERNAL),
            _schema({"functions": {"type": "array", "items": _FUNCTION_INFO}}, ("functions",))))
        s.register_function(BuiltinFunction(
            "engine::workers::list", self._list_workers, "List connected workers",
            _schema({"worker_id": _NULLABLE_STR}),
            _schema({"workers": {"type": "array", "items": _WORKER_INFO}, "timestamp": {"type": "integer"}},
                    ("workers", "timestamp"))))
        s.register_function(BuiltinFunction(
            "engine::triggers::list", self._list_triggers, "List registered triggers",
            _schema(_INCLUDE_INTERNAL),
            _schema({"triggers": {"type": "array", "items": _TRIGGER_INFO}}, ("triggers",))))
        s.register_function(BuiltinFunction(
            _REGISTER, self._register_worker, "Record metadata about the calling worker",
            _schema({"_caller_worker_id": {"type": "string"}, "runtime": _NULLABLE_STR, "version": _NULLABLE_STR,
                     "name": _NULLABLE_STR, "os": _NULLABLE_STR,
                     "telemetry": {"type": ["object", "null"], "properties": {
                         "language": _NULLABLE_STR, "project_name": _NULLABLE_STR, "framework": _NULLABLE_STR}},
                     "pid": {"type": ["integer", "null"], "minimum": 0, "maximum": 4294967295}},
                    ("_caller_worker_id",)),
            _schema({"success": {"type": "boolean"}}, ("success",))))
        s.register_function(BuiltinFunction(
            "engine::channels::create", self._create_channel, "Create a channel and return its two refs",
            _schema({"buffer_size": {"type": ["integer", "null"], "minimum": 0}}),
            _schema({"writer": _CHANNEL_REF, "reader": _CHANNEL_REF}, ("writer", "reader"))))
        s.register_trigger_type(FUNCTIONS_AVAILABLE, "Fires when the set of registered functions changes",
                                _NoopTriggerType())
        s.register_trigger_type(WORKERS_AVAILABLE, "Fires when a worker connects, disconnects or updates metadata",
                                _NoopTriggerType())
        s.add_functions_listener(self._functions_changed)
        s.add_worker_listener(self._worker_event)

    def ready(self) -> None:
        """All modules are started: remember the function set that later changes are compared with."""
        self._snapshot = sorted(self.core.registry.functions)

    async def stop(self) -> None:
        """Cancel a scheduled functions-available check and the pushes in flight."""
        if self._check is not None:
            self._check.cancel()
            self._check = None
        pushes = list(self._pushes)
        for task in pushes:
            task.cancel()
        await asyncio.gather(*pushes, return_exceptions=True)

    # -- functions-available (E8) and workers-available ------------------------------------------------------

    def _functions_changed(self) -> None:
        if self._snapshot is None or (self._check is not None and not self._retrying):
            return
        if self._check is not None:  # a retry for skipped listeners: the change goes out at the usual pace
            self._check.cancel()
        self._retrying = False
        self._check = asyncio.get_running_loop().call_later(self.debounce_s, self._fire_functions_available)

    def _fire_functions_available(self) -> None:
        self._check = None
        self._retrying = False
        current = sorted(self.core.registry.functions)
        triggers = self.core.registry.triggers_of_type(FUNCTIONS_AVAILABLE)
        if current != self._snapshot:
            self._snapshot = current
            self._owed = {trigger.id for trigger in triggers}
            # only made when somebody is told
            self._payload = self._encoded() if triggers else None
            if self._payload is None:
                self._owed = set()
        else:  # a retry: only those that missed this set and are still there
            self._owed = {trigger.id for trigger in triggers if trigger.id in self._owed}
        skipped = False
        for trigger in triggers:
            if trigger.id not in self._owed or self._in_flight_to(trigger):  # one in flight is told when it ends
                continue
            if not self._push(trigger):
                skipped = True
        if skipped:
            self._retry_later()

    def _encoded(self) -> Encoded | None:
        """The current set's push, encoded; ``None`` (logged) when it cannot be: nobody is told this change, as
        every push of it would fail to be written (registrations keep their formats shallow enough that it can)."""
        try:
            # a copy: the value a built-in listener gets (the registry's info dicts are shared by its cache)
            return Encoded({"event": "functions_changed",
                            "functions": _private(self.core.registry.function_infos(True))})
        except (ValueError, TypeError) as exc:
            log.warning("functions-available: the list of functions could not be encoded (%s); its listeners are not "
                        "told of this change", exc)
            return None

    def _in_flight_to(self, trigger: TriggerEntry) -> bool:
        push = self._pushing.get(trigger.id)
        return push is not None and push.trigger is trigger

    def _retry_later(self) -> None:
        # the set is a state, not an event: a listener that missed it would hold a stale one until the next
        # change, which may never come
        if self._check is None:
            self._retrying = True
            self._check = asyncio.get_running_loop().call_later(max(self.debounce_s, _OWED_RETRY_S),
                                                                self._fire_functions_available)

    def _push(self, trigger: TriggerEntry) -> bool:
        """Send the current function set to a trigger's function, holding a ``max_fired_calls`` slot and one of its
        callee worker's ``max_fired_calls_per_worker`` as a fired call does; ``False`` when either is full (skipped:
        counted, logged, still owed)."""
        function_id = trigger.function_id
        if not self.core.has_function(function_id):
            # nobody to tell (its registration is a change, told then): fire() makes no call, counts it and logs
            # it rate-limited, as for every trigger-fired call of a function nobody serves
            if not self.core.fire(function_id, None):
                return False
            self._owed.discard(trigger.id)
            return True
        if self._payload is None:  # the set could not be encoded (_encoded, logged): nothing to tell
            self._owed.discard(trigger.id)
            return True
        entry = self.core.registry.functions.get(function_id)
        callee = (entry.owner or "") if entry is not None and entry.builtin is None else None
        if callee is not None and self._per_callee.get(callee, 0) >= PUSHES_PER_WORKER:
            # each push holds a frame of the whole set until the worker's queue takes it: 3,000 triggers of one worker
            # that never answered held 4.8 GB of frames waiting for room
            return False
        fired = self.core.fired_calls
        slot = fired.try_take()
        if slot is None:
            fired.skip(f"call of {function_id}")
            return False
        held: CalleeCall | FiredSlots = slot
        if callee is not None:
            # a worker's function: before, one hung worker with 40 triggers held all 40 slots of max_fired_calls 40
            call = fired.to_callee(slot, callee, function_id)
            if call is None:  # the slot is back, the call counted and logged as skipped
                return False
            held = call
        self._owed.discard(trigger.id)
        push = _Push(trigger, held, callee)
        if callee is not None:
            self._per_callee[callee] = self._per_callee.get(callee, 0) + 1
        task = asyncio.get_running_loop().create_task(self._deliver(function_id, self._payload))
        self._pushing[trigger.id] = self._pushes[task] = push
        task.add_done_callback(self._pushed)
        return True

    async def _deliver(self, function_id: str, payload: Encoded) -> bool:
        """Whether the listener answered (a result or an error of its own), as opposed to a push that ended
        without an answer: not sent, timed out, its worker gone (to be sent again)."""
        try:
            # a worker's function gets the text as it is; a built-in (an HTTP function, a bridged one) the value, the
            # set's own copy (_encoded), shared by every built-in told this set, as before (Invocations)
            await self.core.invoke(function_id, payload)
        except EngineError as exc:
            if isinstance(exc, CallUnwritable):  # ours, not the listener's: no later push of this set does better
                log.warning("functions-available call of %s not made: %s: %s", function_id, exc.code, exc.message)
                return True
            answered = exc.code not in _UNANSWERED
            log.info("functions-available call of %s failed: %s: %s%s", function_id, exc.code, exc.message,
                     "" if answered else "; sent again within a second")
            return answered
        except Exception as exc:  # anything else is ours, not the listener's: it is still owed the set
            log.warning("functions-available call of %s not made: %s: %s", function_id, type(exc).__name__, exc)
            return False
        return True

    def _pushed(self, task: asyncio.Task[bool]) -> None:
        """A push ended: the set it missed meanwhile goes out now, once, whatever number of changes it missed; one
        that ended unanswered is owed, and retried within a second (not at once: a listener whose calls fail at
        once must not make a loop of them)."""
        push = self._pushes.pop(task)
        push.held.release()  # here, not in the task: one cancelled before it ran has no finally
        if push.callee is not None:
            left = self._per_callee[push.callee] - 1
            if left:
                self._per_callee[push.callee] = left
            else:
                del self._per_callee[push.callee]
        trigger = push.trigger
        if self._pushing.get(trigger.id) is push:
            del self._pushing[trigger.id]
        if not task.cancelled():
            current = self.core.registry.triggers.get(trigger.id)
            if current is None or current.trigger_type != FUNCTIONS_AVAILABLE:
                self._owed.discard(trigger.id)  # unregistered meanwhile
            elif not task.result() and current is trigger:
                self._owed.add(trigger.id)
                self._retry_later()
            elif trigger.id in self._owed and not self._in_flight_to(current) and not self._push(current):
                self._retry_later()
        if not self._pushes and not self._owed:
            self._payload = None  # a copy of every function's info: not kept between changes

    def _worker_event(self, event: str, worker_id: str) -> None:
        for trigger in self.core.registry.triggers_of_type(WORKERS_AVAILABLE):
            self.core.fire(trigger.function_id, {"event": event, "worker_id": worker_id})

    # -- built-ins -------------------------------------------------------------------------------------------

    async def _list_functions(self, data: Any, ctx: InvocationContext) -> Any:
        args = _object(data, "engine::functions::list")
        include = _optional(args, "engine::functions::list", "include_internal", bool) or False
        # The reply only changes with the function table: encoded once per change (1.2 MB at 10,000 functions).
        encoded = self.core.registry.function_listing_json(include)
        if encoded is not None:
            return EncodedResult(encoded)
        return {"functions": _for_caller(self.core.registry.function_infos(include), ctx)}

    async def _list_workers(self, data: Any, ctx: InvocationContext) -> Any:
        """Every connected worker's ``WorkerInfo`` (or only ``worker_id``'s), as one answer bounded by
        ``max_message_size``: 10,000 workers with 1 KiB names are ~10 MB, refused with ``serialization_error``
        before it is encoded (an in-process caller gets the whole list, as for the other bounded lists)."""
        args = _object(data, "engine::workers::list")
        wanted = _optional(args, "engine::workers::list", "worker_id", str)
        workers = sorted(self.core.workers.values(), key=lambda w: (w.connected_at_ms, w.id))
        infos = [w.info() for w in workers if wanted is None or w.id == wanted]
        at_least = 0
        for info in infos:  # what each info cannot be under once encoded: its strings, its function ids
            functions = info["functions"]  # each quoted, a comma between two
            at_least += _WORKER_INFO_AT_LEAST + sum(len(info[key] or "") for key in (*_METADATA_STRINGS, "id")) \
                + (sum(map(len, functions)) + 3 * len(functions) - 1 if functions else 0)
        answer = {"workers": infos, "timestamp": int(time.time() * 1000)}
        return self.answers.json(lambda: answer, at_least, ctx, _LIST_WORKERS, f"the list of {len(infos)} workers")

    async def _list_triggers(self, data: Any, ctx: InvocationContext) -> Any:
        args = _object(data, "engine::triggers::list")
        include = _optional(args, "engine::triggers::list", "include_internal", bool) or False
        encoded = self.core.registry.trigger_listing_json(include)
        if encoded is not None:
            return EncodedResult(encoded)
        return {"triggers": _for_caller(self.core.registry.trigger_infos(include), ctx)}

    async def _register_worker(self, data: Any, ctx: InvocationContext) -> Any:
        """Record the calling worker's metadata. The worker is the call's caller (``ctx``), never a payload key: the
        engine sets ``_caller_worker_id`` only on a worker's direct call, so a trigger of any worker's that fired this
        function with ``{"_caller_worker_id": <another worker>}`` (a ``subscribe`` trigger and a publish) rewrote
        that worker's metadata. A call with no calling worker (trigger-fired, in-process) is refused. A value over its
        bound is left out, the others recorded, and the call then fails naming it; a void call's failure (the SDKs
        send theirs so) is logged, rate-limited: its error reaches nobody."""
        worker_id = ctx.caller_worker_id
        if worker_id is None:
            raise EngineError("deserialization_error",
                              f"{_REGISTER} records the calling worker's own metadata; call it directly from that "
                              f"worker (this call has no calling worker: it was fired by a trigger or made in-process)")
        try:
            strings, telemetry, pid, over = _worker_metadata(data)
        except EngineError as exc:
            if ctx.invocation_id is None:
                self._refused_log.refused(worker_id, exc)
            raise
        refused: EngineError | None = None
        if over:
            refused = EngineError("deserialization_error", (
                f"Failed to deserialize input for {_REGISTER}: {'; '.join(over.values())} (kept for as long as the "
                f"worker is connected and put in every engine::workers::list answer): not recorded (what was recorded "
                f"before stays), the other fields were"))
            if ctx.invocation_id is None:
                self._refused_log.refused(worker_id, refused)
        worker = self.core.workers.get(worker_id)
        if worker is not None:
            # a value left out keeps what was recorded before, as name, os and pid always did
            if "runtime" not in over:
                worker.runtime = strings["runtime"] or "unknown"
            if "version" not in over:
                worker.version = strings["version"]
            if "telemetry" not in over:
                worker.telemetry = telemetry
            if strings["name"] is not None:
                worker.name = strings["name"]
            if strings["os"] is not None:
                worker.os = strings["os"]
            if pid is not None:
                worker.pid = pid
            self.core.emit_worker_event("worker_metadata_updated", worker_id)
        if refused is not None:
            raise refused
        return {"success": True}

    async def _create_channel(self, data: Any, ctx: InvocationContext) -> Any:
        fid = "engine::channels::create"
        args = _object(data, fid)
        size = _optional(args, fid, "buffer_size", int)
        buffer_size = 64 if size is None else min(max(size, 1), 1024)
        # ours: per-channel byte quota (docs/protocol.md#channel-improvements C8)
        max_bytes = _optional(args, fid, "max_bytes", int)
        if max_bytes is not None and max_bytes < 0:
            raise EngineError("deserialization_error", f"{fid}: max_bytes must be >= 0, got {max_bytes}")
        try:
            return self.core.channels.create(buffer_size, ctx.caller_worker_id, max_bytes)
        except TooManyChannels as exc:
            raise EngineError("channel_limit", f"{fid}: {exc}") from None
