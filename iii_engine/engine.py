"""The embedded engine: composition root, control-socket dispatch, and the services modules see.

Example:
    >>> import asyncio
    >>> async def demo() -> str:
    ...     async with Engine(port=0, config=EngineConfig(modules=[])) as engine:
    ...         return engine.url.split(":")[0]
    >>> asyncio.run(demo())
    'ws'
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Collection
from types import TracebackType
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from iii.iii_types import (
    InvocationResultMessage,
    InvokeFunctionMessage,
    RegisterFunctionMessage,
    RegisterServiceMessage,
    RegisterTriggerMessage,
    RegisterTriggerTypeMessage,
    TriggerInfo,
    TriggerRegistrationResultMessage,
    UnregisterFunctionMessage,
    UnregisterTriggerMessage,
    UnregisterTriggerTypeMessage,
)
from iii.wire import (
    TELEMETRY_PREFIXES,
    Ping,
    Telemetry,
    WireError,
    decode_object,
    dumps,
    loads,
    salvage_invocation,
)
from iii_streams.messages import error_line

from .channels import ChannelRelay
from .config import EngineConfig
from .invocations import Invocations, error_body, is_uuid, result_frame
from .modules.base import (
    BuiltinFunction,
    EngineError,
    EngineModule,
    EngineStartError,
    ExternalFunctions,
    InvocationObserver,
    ModuleStartError,
    NamedQueues,
    TelemetryListener,
    TriggerTypeHandler,
)
from .modules.catalogue import WORKER_MODULE, ModuleUnavailable, default_specs, resolve
from .registry import FunctionEntry, Registry, TriggerEntry, TriggerTypeEntry
from .server import Listener
from .settings import ConfigError
from .workers import OVERFLOW_CLOSE_CODE, Outbox, WorkerConnection

log = logging.getLogger(__name__)

_PONG = '{"type":"pong"}'
_LOWER_UUID_LEN = 36
#: Frames longer than this are parsed in a worker thread (the Python-level depth walk then yields the GIL).
OFFLOOP_PARSE_BYTES = 1024 * 1024
_REASON_CLIP = 300
_UNREAD_CLOSE_TIMEOUT_S = 2.0


def clip_text(text: str, limit: int = _REASON_CLIP) -> str:
    """``text`` cut to ``limit`` characters (reasons already quote input through :func:`iii.wire.clip`)."""
    return text if len(text) <= limit else f"{text[:limit]}…({len(text)} chars)"


def _normalise_id(obj: dict[str, Any]) -> bool:
    """Check ``invocation_id`` and write it in canonical form (production re-serialises parsed UUIDs)."""
    value = obj.get("invocation_id")
    if not isinstance(value, str) or not is_uuid(value):
        return False
    if len(value) != _LOWER_UUID_LEN or value != value.lower():
        import uuid

        obj["invocation_id"] = str(uuid.UUID(value))
    return True


def _optional_str(obj: dict[str, Any], key: str) -> bool:
    value = obj.get(key)
    return value is None or type(value) is str


def _fast_invoke(obj: dict[str, Any]) -> bool:
    """Whether a parsed ``invokefunction`` is well-formed (else the strict decoder says why)."""
    if type(obj.get("function_id")) is not str or "data" not in obj:
        return False
    if obj.get("invocation_id") is not None and not _normalise_id(obj):
        return False
    if not (_optional_str(obj, "traceparent") and _optional_str(obj, "baggage")):
        return False
    action = obj.get("action")
    if action is None:
        return True
    if type(action) is not dict:
        return False
    kind = action.get("type")
    return kind == "void" or (kind == "enqueue" and type(action.get("queue")) is str)


def _fast_result(obj: dict[str, Any]) -> bool:
    """Whether a parsed ``invocationresult`` is well-formed."""
    return (type(obj.get("function_id")) is str and _normalise_id(obj)
            and _optional_str(obj, "traceparent") and _optional_str(obj, "baggage"))


def _message_dict(msg: InvokeFunctionMessage | InvocationResultMessage) -> dict[str, Any]:
    out = msg.model_dump(exclude={"message_type"})
    if out.get("invocation_id") is not None:
        _normalise_id(out)
    return out


async def _close_unread(ws: ServerConnection, limit: int) -> None:
    """Close a peer that stopped reading: the close frame waits behind what it has not read, so give the
    handshake a short deadline and then drop the connection (its buffers go with it)."""
    ws.close_timeout = _UNREAD_CLOSE_TIMEOUT_S
    with contextlib.suppress(Exception):
        await ws.close(OVERFLOW_CLOSE_CODE, f"outbound queue over {limit} bytes: peer not reading")


def _trigger_frame(entry: TriggerEntry) -> str:
    return dumps({"type": "registertrigger", "id": entry.id, "trigger_type": entry.trigger_type,
                  "function_id": entry.function_id, "config": entry.config})


class Engine:
    """An iii engine running in this process.

    Example:
        >>> async def main() -> None:  # doctest: +SKIP
        ...     async with Engine(port=0) as engine:
        ...         print(engine.url)  # ws://127.0.0.1:<port>
    """

    def __init__(self, *, host: str | None = None, port: int | None = None,
                 config: EngineConfig | None = None, allow_degraded: bool | None = None) -> None:
        self.config = (config or EngineConfig()).with_overrides(host=host, port=port, allow_degraded=allow_degraded)
        self.log = log
        self.registry = Registry()
        self.workers: dict[str, WorkerConnection] = {}
        self.modules: dict[str, EngineModule] = {}
        self.unavailable_modules: dict[str, str] = {}
        self.invocations = Invocations(self.registry, self.workers, timeout_ms=self.config.invocation_timeout_ms)
        self._external: ExternalFunctions | None = None
        settings = self.config.channels
        self.channels = ChannelRelay(max_message_size=settings.max_message_size,
                                     attach_timeout_s=settings.attach_timeout_s,
                                     max_channel_bytes=settings.max_channel_bytes,
                                     max_queued_bytes=settings.max_queued_bytes,
                                     production_mode=settings.production_mode)
        self._listener = Listener(self.config.host, self.config.port,
                                  max_message_size=self.config.max_message_size,
                                  relay=self.channels, control=self._serve_worker)
        self._function_listeners: list[Callable[[], None]] = []
        self._telemetry_listeners: list[TelemetryListener] = []
        self._worker_listeners: list[Callable[[str, str], None]] = []
        self._seen_version = 0
        self._started = False
        self._stopping: asyncio.Event | None = None
        self.ready = asyncio.Event()  # set once the listener accepts workers

    # -- lifecycle -------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the control socket listens on."""
        return self._listener.port

    @property
    def url(self) -> str:
        """``ws://host:port`` to connect workers to (wildcard binds are reached through loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(self.config.host, self.config.host)
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"ws://{host}:{self.port}"

    async def start(self) -> None:
        """Bind the worker port, start the worker module and every configured module, then accept workers.

        Fails fast: a port that cannot be bound raises :class:`EngineStartError`, a configured module that cannot
        start raises :class:`ModuleStartError` (unless ``allow_degraded``: then it is logged and listed in
        :attr:`unavailable_modules`). Before either propagates, everything already started is stopped and every
        port released; the worker port refuses connections until start-up is complete.
        """
        if self._started:
            return
        self._started = True
        self._stopping = asyncio.Event()
        try:
            await self._start_everything()
        except BaseException:
            await self.stop()
            self.modules.clear()  # none of them runs: engine.module(...) must not hand out a stopped one
            raise
        log.info("iii engine listening on %s", self.url)

    async def _start_everything(self) -> None:
        # The worker port is bound first (not yet accepting): when it is taken, no module port gets held.
        try:
            await self._listener.start(serving=False)
        except OSError as exc:
            raise self._cannot_listen(exc) from exc
        from .modules.worker.module import WorkerModule

        worker_module = WorkerModule(self)
        try:
            await self._start_module(worker_module)
        except Exception as exc:
            raise ModuleStartError(WORKER_MODULE, exc) from exc
        specs = self.config.modules if self.config.modules is not None else default_specs()
        for index, spec in enumerate(specs):
            try:
                cls = resolve(spec.class_name)
                await self._start_module(cls(self, self._listener_defaults(cls, spec.config)))
            except Exception as exc:
                # a settings error names the path from the top of the configuration file
                cause = exc.under(f"modules[{index}].config") if isinstance(exc, ConfigError) else exc
                failure = ModuleStartError(spec.class_name, cause)
                if not self.config.allow_degraded:
                    raise failure from exc
                self.unavailable_modules[spec.class_name] = failure.reason
                log.warning("module %s not available: %s", spec.class_name, failure.reason)
                if not isinstance(exc, ModuleUnavailable):
                    log.debug("module %s failed to start", spec.class_name, exc_info=exc)
        try:
            await self._listener.start_serving()
        except OSError as exc:
            raise self._cannot_listen(exc) from exc
        self._seen_version = self.registry.version
        worker_module.ready()
        self.ready.set()

    def _cannot_listen(self, exc: OSError) -> EngineStartError:
        # asyncio repeats the address inside its message; the address is already in ours
        reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else error_line(exc)
        return EngineStartError(f"cannot listen on {self.config.host}:{self.config.port}: {reason}")

    def _listener_defaults(self, cls: type[EngineModule], settings: dict[str, Any]) -> dict[str, Any]:
        """A listening module binds where the engine binds unless told otherwise, and on a free port when the
        engine was started on one (``Engine(port=0)``), so embedded engines never collide on 3111/3112."""
        if not cls.has_listener:
            return settings
        merged = dict(settings)
        merged.setdefault("host", self.config.host)
        if self.config.port == 0:
            merged.setdefault("port", 0)
        return merged

    async def _start_module(self, module: EngineModule) -> None:
        try:
            await module.start()
        except BaseException:
            # A module that failed half-way may already hold a port or a connection: give it a chance to let go.
            try:
                await module.stop()
            except Exception:
                log.debug("module %s: stop after a failed start raised", module.name, exc_info=True)
            raise
        self.modules[module.name] = module

    async def stop(self) -> None:
        """Stop modules (in reverse order), then close every connection and the channel relay."""
        if not self._started:
            return
        self._started = False
        self.ready.clear()
        # Modules stop first, while workers are still connected: a queue hands unfinished jobs back instead of
        # seeing them fail with invocation_stopped and spending a retry on the shutdown.
        for module in reversed(list(self.modules.values())):
            try:
                await module.stop()
            except Exception:
                log.exception("module %s failed to stop", module.name)
        await self._listener.close()
        await self.invocations.close()
        await self.channels.close()
        if self._stopping is not None:
            self._stopping.set()

    async def serve_forever(self) -> None:
        """Start (if needed) and run until :meth:`stop` is called or the task is cancelled."""
        await self.start()
        assert self._stopping is not None
        try:
            await self._stopping.wait()
        finally:
            await self.stop()

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    # -- EngineServices --------------------------------------------------------------------------------------

    def register_function(self, function: BuiltinFunction) -> None:
        """Add (or replace) a built-in function."""
        entry = FunctionEntry(function.id, None, function.description, function.request_format,
                              function.response_format, function.metadata, builtin=function)
        self.registry.add_function(entry)
        self._functions_maybe_changed()

    def unregister_function(self, function_id: str) -> None:
        """Remove a built-in function."""
        self.registry.remove_function(function_id)
        self._functions_maybe_changed()

    def register_trigger_type(self, trigger_type: str, description: str, handler: TriggerTypeHandler) -> None:
        """Add a built-in trigger type; workers cannot replace it (E4)."""
        self.registry.trigger_types[trigger_type] = TriggerTypeEntry(trigger_type, description, None, handler)

    def has_function(self, function_id: str) -> bool:
        """Whether ``function_id`` is registered."""
        return function_id in self.registry.functions

    async def invoke(self, function_id: str, data: Any, *, timeout_s: float | None = None) -> Any:
        """Call any function and await its result."""
        return await self.invocations.call(function_id, data, timeout_s=timeout_s)

    def fire(self, function_id: str, data: Any) -> None:
        """Call a function without waiting."""
        self.invocations.fire(function_id, data)

    async def condition_passes(self, condition_function_id: str | None, payload: Any) -> bool:
        """PROTOCOL §4.5: only a literal ``false`` skips; an error skips too (logged)."""
        if not condition_function_id:
            return True
        try:
            result = await self.invoke(condition_function_id, payload)
        except EngineError as exc:
            log.warning("condition %s failed (%s: %s); skipping", condition_function_id, exc.code, exc.message)
            return False
        return result is not False

    def triggers_of_type(self, trigger_type: str) -> list[TriggerInfo]:
        """The active triggers of a type."""
        return [TriggerInfo(**t.info()) for t in self.registry.triggers_of_type(trigger_type)]

    def module(self, name: str) -> EngineModule | None:
        """A loaded module by name."""
        return self.modules.get(name)

    def service_functions(self, service_id: str) -> Collection[str]:
        """The worker functions registered under a service (live; empty when there is none)."""
        service = self.registry.services.get(service_id)
        return service.functions if service is not None else frozenset()

    def serve_named_queues(self, queues: NamedQueues | None) -> None:
        """Route enqueue actions to ``queues`` (the queue module)."""
        self.invocations.named_queues = queues

    def serve_external_functions(self, host: ExternalFunctions | None) -> None:
        """Route HTTP-invoked function registrations to ``host`` (the HTTP functions module)."""
        self._external = host

    def add_telemetry_listener(self, listener: TelemetryListener) -> None:
        """Hand every telemetry frame to ``listener(kind, body)``."""
        self._telemetry_listeners.append(listener)

    def set_invocation_observer(self, observer: InvocationObserver | None) -> None:
        """Watch every function execution (the observability module)."""
        self.invocations.observer = observer

    # -- hooks for the worker module -------------------------------------------------------------------------

    def add_functions_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` whenever the set of function ids may have changed."""
        self._function_listeners.append(listener)

    def add_worker_listener(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener(event, worker_id)`` on connect, disconnect and metadata updates."""
        self._worker_listeners.append(listener)

    def emit_worker_event(self, event: str, worker_id: str) -> None:
        """Tell listeners about a worker event (``worker_connected`` …)."""
        for listener in self._worker_listeners:
            listener(event, worker_id)

    def _functions_maybe_changed(self) -> None:
        if self.registry.version != self._seen_version:
            self._seen_version = self.registry.version
            for listener in self._function_listeners:
                listener()

    # -- control socket --------------------------------------------------------------------------------------

    async def _serve_worker(self, ws: ServerConnection) -> None:
        remote = ws.remote_address
        limit = self.config.max_outbox_bytes
        closing: list[asyncio.Task[None]] = []

        def overflow(size: int) -> None:
            log.warning("worker %s does not read what it is sent: %d bytes would be queued (max_outbox_bytes %d); "
                        "closing with %d", worker.id, size, limit, OVERFLOW_CLOSE_CODE)
            closing.append(asyncio.get_running_loop().create_task(_close_unread(ws, limit)))

        worker = WorkerConnection(outbox=Outbox(ws.send, max_bytes=limit, on_overflow=overflow),
                                  ip_address=str(remote[0]) if remote else None)
        self.workers[worker.id] = worker
        worker.post(dumps({"type": "workerregistered", "worker_id": worker.id}))
        log.info("worker %s connected from %s", worker.id, worker.ip_address)
        self.emit_worker_event("worker_connected", worker.id)
        try:
            async for raw in ws:
                worker.frames_in += 1
                try:
                    await self._on_frame(worker, raw)
                except Exception:  # a bug in handling one frame must not take the connection down
                    log.exception("worker %s: failed to handle a frame", worker.id)
        except ConnectionClosed as exc:
            received = exc.rcvd.code if exc.rcvd else None
            sent = exc.sent.code if exc.sent else None
            if sent == 1009:
                log.warning("worker %s sent a message over max_message_size (%d bytes); closed with 1009",
                            worker.id, self._listener.max_message_size)
            else:
                log.info("worker %s connection closed (received %s, sent %s)", worker.id, received, sent)
        finally:
            await worker.outbox.close(flush=False)
            await self._cleanup(worker)
            for task in closing:
                await task

    async def _on_frame(self, worker: WorkerConnection, raw: str | bytes) -> None:
        if isinstance(raw, bytes) and raw[:4] in TELEMETRY_PREFIXES:
            await self._dispatch(worker, Telemetry(raw[:4].decode(), raw[4:]), {})
            return
        try:
            # Parsed once, under the one JSON policy. Big frames go to a thread so the depth walk can yield the
            # GIL; awaiting it keeps this connection's frames in order.
            obj = loads(raw) if len(raw) <= OFFLOOP_PARSE_BYTES else await asyncio.to_thread(loads, raw)
        except ValueError as exc:
            if not raw or raw.isspace():
                return  # blank frames are ignored, as production does
            self._reject(worker, WireError(f"invalid JSON: {exc}", **salvage_invocation(raw)))
            return
        if type(obj) is dict:
            kind = obj.get("type")
            if kind == "invokefunction" and _fast_invoke(obj):
                await self.invocations.handle_invoke(worker, obj)
                return
            if kind == "invocationresult" and _fast_result(obj):
                self.invocations.handle_result(worker, obj)
                return
            if kind == "ping":
                worker.post(_PONG)
                return
        try:
            msg = decode_object(obj, strict=True)
        except WireError as err:
            self._reject(worker, err)
            return
        await self._dispatch(worker, msg, obj)

    def _reject(self, worker: WorkerConnection, err: WireError) -> None:
        worker.dropped_frames += 1
        # The reason may quote the sender's input: cap it so one frame cannot flood the log.
        log.warning("worker %s: dropped undecodable frame: %s", worker.id, clip_text(err.reason))
        if err.message_type == "invokefunction" and err.invocation_id is not None:
            worker.post(result_frame(err.invocation_id, err.function_id or "", None,
                                     error_body("invalid_message", clip_text(err.reason, 1000))))

    async def _dispatch(self, worker: WorkerConnection, msg: Any, raw: dict[str, Any]) -> None:
        if isinstance(msg, InvokeFunctionMessage):
            await self.invocations.handle_invoke(worker, _message_dict(msg))
        elif isinstance(msg, InvocationResultMessage):
            self.invocations.handle_result(worker, _message_dict(msg))
        elif isinstance(msg, RegisterFunctionMessage):
            await self._register_function(worker, msg, raw)
        elif isinstance(msg, UnregisterFunctionMessage):
            self._unregister_function(worker, msg.id)
        elif isinstance(msg, RegisterServiceMessage):
            replaced = self.registry.register_service(msg.id, msg.name or "", msg.parent_service_id)
            if replaced is not None:
                log.warning("worker %s replaced service %r", worker.id, replaced.name)
        elif isinstance(msg, RegisterTriggerTypeMessage):
            self._register_trigger_type(worker, msg.id, msg.description)
        elif isinstance(msg, RegisterTriggerMessage):
            entry = TriggerEntry(msg.id, msg.trigger_type, msg.function_id, raw.get("config", msg.config), worker.id)
            await self._register_trigger(worker, entry)
        elif isinstance(msg, UnregisterTriggerMessage):
            await self._unregister_trigger(worker, msg.id)
        elif isinstance(msg, UnregisterTriggerTypeMessage):
            self._unregister_trigger_type(worker, msg.id)
        elif isinstance(msg, TriggerRegistrationResultMessage):
            if msg.error:
                log.warning("worker %s could not register trigger %s (%s): %s", worker.id, msg.id,
                            msg.trigger_type, msg.error)
            else:
                log.debug("worker %s registered trigger %s", worker.id, msg.id)
        elif isinstance(msg, Ping):
            worker.post(_PONG)
        elif isinstance(msg, Telemetry):
            worker.telemetry_frames += 1
            for listener in self._telemetry_listeners:
                listener(msg.kind, msg.body)
        # Pong and workerregistered from a worker are ignored.

    # -- registrations ---------------------------------------------------------------------------------------

    async def _register_function(self, worker: WorkerConnection, msg: RegisterFunctionMessage,
                                 raw: dict[str, Any]) -> None:
        builtin: BuiltinFunction | None = None
        if msg.invocation is not None:
            builtin = await self._register_external(worker, msg, raw)
            if builtin is None:
                return
        entry = FunctionEntry(msg.id, worker.id, msg.description, raw.get("request_format"),
                              raw.get("response_format"), raw.get("metadata"), builtin=builtin,
                              external=builtin is not None)
        previous = self.registry.add_function(entry)
        if previous is not None and previous.owner != worker.id:
            log.warning("worker %s overwrote function %s (was %s)", worker.id, msg.id,
                        f"worker {previous.owner}" if previous.owner else "an engine built-in")
            self._disown(previous)
        (worker.external_functions if entry.external else worker.functions).add(msg.id)
        self._functions_maybe_changed()

    async def _register_external(self, worker: WorkerConnection, msg: RegisterFunctionMessage,
                                 raw: dict[str, Any]) -> BuiltinFunction | None:
        if self._external is None:
            log.warning("worker %s: HTTP-invoked function %s not registered: HttpFunctionsModule not loaded",
                        worker.id, msg.id)
            return None
        try:
            return await self._external.register_external(msg.id, raw.get("invocation"), worker.id)
        except EngineError as exc:
            log.warning("worker %s: HTTP-invoked function %s not registered: %s: %s", worker.id, msg.id,
                        exc.code, exc.message)
            return None

    def _disown(self, entry: FunctionEntry) -> None:
        owner = self.workers.get(entry.owner or "")
        if owner is not None:
            owner.functions.discard(entry.id)
            owner.external_functions.discard(entry.id)

    def _unregister_external(self, function_id: str) -> None:
        if self._external is not None:
            try:
                self._external.unregister_external(function_id)
            except Exception:
                log.exception("HttpFunctionsModule failed to unregister %s", function_id)

    def _unregister_function(self, worker: WorkerConnection, function_id: str) -> None:
        entry = self.registry.functions.get(function_id)
        if entry is None:
            log.info("worker %s unregistered unknown function %s", worker.id, function_id)
            return
        if entry.owner != worker.id:
            log.warning("worker %s unregistered function %s owned by %s (honoured for compatibility)",
                        worker.id, function_id, entry.owner or "the engine")
        if entry.external:
            self._unregister_external(function_id)
        self.registry.remove_function(function_id)
        self._disown(entry)
        self._functions_maybe_changed()

    def _register_trigger_type(self, worker: WorkerConnection, type_id: str, description: str) -> None:
        existing = self.registry.trigger_types.get(type_id)
        if existing is not None and existing.owner is None:
            log.warning("worker %s may not replace built-in trigger type %s; refused", worker.id, type_id)
            return
        if existing is not None and existing.owner != worker.id:
            log.warning("worker %s replaced trigger type %s (was worker %s)", worker.id, type_id, existing.owner)
        for entry in self.registry.triggers_of_type(type_id):
            worker.post(_trigger_frame(entry))
        for entry in self.registry.take_pending(type_id):
            worker.post(_trigger_frame(entry))
            self.registry.triggers[entry.id] = entry
            log.info("pending trigger %s activated by trigger type %s", entry.id, type_id)
        self.registry.trigger_types[type_id] = TriggerTypeEntry(type_id, description, worker.id)

    async def _register_trigger(self, worker: WorkerConnection, entry: TriggerEntry) -> None:
        trigger_type = self.registry.trigger_types.get(entry.trigger_type)
        if trigger_type is None:
            self.registry.triggers.pop(entry.id, None)
            self.registry.pending_triggers[entry.id] = entry
            log.warning("worker %s: trigger %s waits for unknown trigger type %s (pending)", worker.id, entry.id,
                        entry.trigger_type)
            return
        if trigger_type.handler is not None:
            try:
                await trigger_type.handler.register(TriggerInfo(**entry.info()))
            except EngineError as exc:
                log.warning("worker %s: trigger %s (%s) rejected: %s: %s", worker.id, entry.id, entry.trigger_type,
                            exc.code, exc.message)
                return
            except Exception:
                log.exception("worker %s: trigger %s (%s) failed to register", worker.id, entry.id,
                              entry.trigger_type)
                return
        else:
            owner = self.workers.get(trigger_type.owner or "")
            if owner is not None:
                owner.post(_trigger_frame(entry))
        self.registry.pending_triggers.pop(entry.id, None)
        self.registry.triggers[entry.id] = entry

    async def _unregister_trigger(self, worker: WorkerConnection, trigger_id: str) -> None:
        entry = self.registry.find_trigger(trigger_id)
        if entry is None:
            log.info("worker %s unregistered unknown trigger %s", worker.id, trigger_id)
            return
        if entry.registrant != worker.id:
            log.warning("worker %s unregistered trigger %s registered by %s (honoured for compatibility)",
                        worker.id, trigger_id, entry.registrant or "the engine")
        await self._deactivate(entry)

    async def _deactivate(self, entry: TriggerEntry) -> None:
        was_active = self.registry.triggers.pop(entry.id, None) is not None
        self.registry.pending_triggers.pop(entry.id, None)
        if not was_active:
            return  # a pending trigger never reached its type
        trigger_type = self.registry.trigger_types.get(entry.trigger_type)
        if trigger_type is None:
            return
        if trigger_type.handler is not None:
            try:
                await trigger_type.handler.unregister(TriggerInfo(**entry.info()))
            except Exception:
                log.exception("trigger type %s failed to unregister trigger %s", entry.trigger_type, entry.id)
        else:
            owner = self.workers.get(trigger_type.owner or "")
            if owner is not None:
                owner.post(dumps({"type": "unregistertrigger", "id": entry.id, "trigger_type": entry.trigger_type}))

    def _unregister_trigger_type(self, worker: WorkerConnection, type_id: str) -> None:
        existing = self.registry.trigger_types.get(type_id)
        if existing is None or existing.owner != worker.id:
            log.warning("worker %s unregistered trigger type %s it does not own; ignored", worker.id, type_id)
            return
        del self.registry.trigger_types[type_id]

    # -- disconnect ------------------------------------------------------------------------------------------

    async def _cleanup(self, worker: WorkerConnection) -> None:
        """PROTOCOL §3.1 step 3, owner-aware (E5)."""
        for function_id in sorted(worker.functions):
            restored = self.registry.drop_owned_function(function_id, worker.id)
            if restored is not None:
                self._adopt(restored)
        for function_id in sorted(worker.external_functions):
            if self.registry.functions.get(function_id) is not None and \
                    self.registry.functions[function_id].owner == worker.id:
                self._unregister_external(function_id)
            restored = self.registry.drop_owned_function(function_id, worker.id)
            if restored is not None:
                self._adopt(restored)
        self.registry.forget_owner(worker.id)
        self._functions_maybe_changed()
        self.invocations.halt_worker(worker)
        mine = [t for t in (*self.registry.triggers.values(), *self.registry.pending_triggers.values())
                if t.registrant == worker.id]
        for entry in mine:
            await self._deactivate(entry)
        for type_id in [t.id for t in self.registry.trigger_types.values() if t.owner == worker.id]:
            del self.registry.trigger_types[type_id]
        self.channels.drop_owner(worker.id)
        self.workers.pop(worker.id, None)
        log.info("worker %s disconnected", worker.id)
        self.emit_worker_event("worker_disconnected", worker.id)

    def _adopt(self, entry: FunctionEntry) -> None:
        owner = self.workers.get(entry.owner or "")
        if owner is not None:
            (owner.external_functions if entry.external else owner.functions).add(entry.id)
