"""The worker client: ``register_worker`` and :class:`III`.

``III`` runs a private event loop in a daemon thread. Sync methods block the calling thread on that loop;
``*_async`` methods may be awaited from any event loop (PROTOCOL §9.5 S4). The socket itself is
:class:`iii.connection.Connection`; this module holds the protocol: registrations and their replay, calls and
their pending results, incoming invocations and trigger registrations.

Example:
    >>> # iii = register_worker("ws://localhost:49134")
    >>> # iii.register_function("greet", lambda data: {"hello": data["name"]})
    >>> # iii.trigger({"function_id": "greet", "payload": {"name": "Ada"}})
    >>> # {'hello': 'Ada'}
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import threading
import traceback
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from .channels import ChannelReader, ChannelWriter
from .connection import Connection, Frame, Write, check_url
from .errors import ConnectionLostError, InvocationError, ShuttingDownError
from .iii_constants import DEFAULT_RECONNECTION_CONFIG as DEFAULT_RECONNECTION_CONFIG  # reference re-export
from .iii_constants import MAX_QUEUE_SIZE as MAX_QUEUE_SIZE  # reference re-export
from .iii_constants import FunctionRef, IIIConnectionState, InitOptions
from .iii_types import (
    FunctionInfo,
    HttpInvocationConfig,
    RegisterFunctionFormat,
    RegisterFunctionInput,
    RegisterFunctionMessage,
    RegisterServiceInput,
    RegisterServiceMessage,
    RegisterTriggerInput,
    RegisterTriggerMessage,
    RegisterTriggerTypeInput,
    RegisterTriggerTypeMessage,
    StreamChannelRef,
    TriggerActionEnqueue,
    TriggerActionVoid,
    TriggerInfo,
    TriggerRequest,
    UnregisterFunctionMessage,
    UnregisterTriggerMessage,
    UnregisterTriggerTypeMessage,
    WorkerInfo,
)
from .payloads import action_to_wire, format_dict, resolve_channels
from .stream import IStream
from .stream_glue import stream_functions
from .telemetry_types import OtelConfig
from .trace_scope import TraceScope, load_telemetry
from .triggers import Trigger, TriggerConfig, TriggerHandler
from .types import Channel, RemoteFunctionHandler
from .wire import dumps, encode, loads
from .worker_metadata import worker_metadata

# Older private names, still imported by tests.
_action_to_wire = action_to_wire
_resolve_channels = resolve_channels

__all__ = ["III", "TriggerAction", "register_worker"]

log = logging.getLogger("iii.iii")

T = TypeVar("T")

_SYNC_FROM_LOOP = "Cannot call sync SDK methods from the event loop thread. Use async handler methods instead."
# The bound on waiting for the FIRST connection (register_worker, connect_async): the reference SDK's 30 s.
# ReconnectionConfig.max_retries can end it sooner; once connected, a lost engine is retried as configured
# (forever by default). Read at call time so tests can shorten it.
_REFERENCE_CONNECT_WAIT_S = 30.0
# After a reconnect, how long to wait for the engine to forget the old worker before checking registrations.
_RECOVERY_WINDOW_S = 30.0
_RECOVERY_POLL_S = 0.25
_WORKER_ID_WAIT_S = 2.0


class _Pending:
    __slots__ = ("function_id", "future", "timer")

    def __init__(self, future: asyncio.Future[Any], function_id: str) -> None:
        self.future = future
        self.function_id = function_id
        self.timer: asyncio.TimerHandle | None = None


@dataclass
class _LocalFunction:
    frame: str
    handler: Callable[[Any], Any] | None  # None for HTTP-invoked functions
    is_async: bool


@dataclass
class _LocalTriggerType:
    frame: str
    handler: TriggerHandler[Any]


class III:
    """A worker connected to an iii engine.

    Example:
        >>> # iii = III("ws://localhost:49134", InitOptions(worker_name="billing"))
        >>> # iii.get_connection_state()
        >>> # 'connected'
    """

    def __init__(self, address: str, options: InitOptions | None = None) -> None:
        # A URL that can never work fails here, before a thread starts (ValueError naming the bad part).
        self._address = check_url(address)
        self._options = options or InitOptions()
        self._functions: dict[str, _LocalFunction] = {}
        self._services: dict[str, str] = {}
        self._triggers: dict[str, tuple[str, RegisterTriggerMessage]] = {}
        self._trigger_types: dict[str, _LocalTriggerType] = {}
        # Triggers of our types the engine asked us to run, so an unregister can pass their config along.
        self._owned_triggers: dict[str, TriggerConfig[Any]] = {}
        self._pending: dict[str, _Pending] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._functions_available_callbacks: list[Callable[[list[FunctionInfo]], None]] = []
        self._functions_available_trigger: Trigger | None = None
        self._functions_available_function_id: str | None = None
        self._connection_state: IIIConnectionState = "disconnected"
        self._worker_id: str | None = None
        self._lost_worker_id: str | None = None
        self._generation = 0
        self._closed = False
        self._trace = TraceScope(None)
        self._telemetry_started = False
        # Woken (on the client's loop) whenever the connection state or the worker id changes.
        self._state_waiters: list[asyncio.Future[None]] = []

        self._loop = asyncio.new_event_loop()
        self._conn = Connection(
            address,
            on_frame=self._on_frame,
            on_open=self._on_open,
            on_ready=self._on_ready,
            on_lost=self._on_lost,
            on_state=self._set_connection_state,
            reconnection=self._options.reconnection_config,
            keep=self._pending.__contains__,
        )
        self._thread = threading.Thread(target=self._loop.run_forever, name="iii-sdk-loop", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start_async(), self._loop)

    # ---------------------------------------------------------------- loop plumbing

    def _run_on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(_SYNC_FROM_LOOP)
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _on_own_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the client's loop, whichever loop the caller runs on."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def _soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the client's loop, in call order, from any thread."""
        if threading.current_thread() is self._thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _send_registration(self, frame: str) -> None:
        """Send a registration change now if a socket is up; otherwise the replay on connect covers it."""
        if self._conn.state == "connected":
            self._conn.send_soon(frame)

    # ---------------------------------------------------------------- connection lifecycle

    def _wait_until_connected(self, timeout: float | None = None) -> None:
        """Block until connected; ``ConnectionError`` when that did not happen within ``timeout`` seconds
        (default: the 30 s bound) or reconnection gave up (``max_retries``)."""
        if self._connection_state == "connected" and self._worker_id is not None:
            return
        self._run_on_loop(self._connected_within(_REFERENCE_CONNECT_WAIT_S if timeout is None else timeout))

    async def _connected_within(self, seconds: float) -> None:
        """Return once connected; ``ConnectionError`` after ``seconds`` or when retries ran out (any loop)."""
        if asyncio.get_running_loop() is not self._loop:
            await self._on_own_loop(self._connected_within(seconds))
            return
        loop = self._loop
        deadline = loop.time() + seconds
        while self._connection_state != "connected":
            if self._closed:
                raise ShuttingDownError()
            if self._connection_state == "failed":
                retries = (self._options.reconnection_config or DEFAULT_RECONNECTION_CONFIG).max_retries
                # "failed after max retries": the reference's wording, for code that matched on it.
                raise ConnectionError(self._unreachable(": failed after max retries", f"max_retries={retries}"))
            if not await self._state_change(deadline - loop.time()):
                raise ConnectionError(self._unreachable(f" within {seconds:g} s"))
        # The engine sends workerregistered right after the upgrade (T1); a moment's wait means worker_id is
        # usually set when the caller gets the client. Nothing depends on it, so no error if it is late.
        named_by = loop.time() + _WORKER_ID_WAIT_S
        while self._worker_id is None and self._connection_state == "connected":
            if not await self._state_change(named_by - loop.time()):
                break

    def _unreachable(self, why: str, config: str = "") -> str:
        attempts = self._conn.failed_attempts
        detail = f"{attempts} attempt{'s' if attempts != 1 else ''}" + (f", {config}" if config else "")
        if self._conn.last_error:
            detail += f"; last error: {self._conn.last_error}"
        return f"cannot reach the engine at {self._address}{why} ({detail})"

    async def _state_change(self, seconds: float) -> bool:
        """Wait (on the client's loop) for the next state or worker-id change; False after ``seconds``."""
        if seconds <= 0:
            return False
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._state_waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, seconds)
            return True
        except TimeoutError:
            return False
        finally:
            if waiter in self._state_waiters:
                self._state_waiters.remove(waiter)

    def _notify_state(self) -> None:
        waiters, self._state_waiters = self._state_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def connect_async(self) -> None:
        """Connect and wait for the first connection (the constructor already started it); safe to call again.

        Returns once connected. Raises ``ConnectionError`` ("cannot reach the engine at …") when no connection
        came within 30 s or ``ReconnectionConfig.max_retries`` ran out; the client then keeps trying in the
        background until :meth:`shutdown_async`. A connection lost later is retried as configured.

        Example:
            >>> # await iii.connect_async()
        """
        await self._start_async()
        await self._connected_within(_REFERENCE_CONNECT_WAIT_S)

    async def _start_async(self) -> None:
        """Start connecting in the background (telemetry set up once); returns at once."""
        if self._closed:
            raise ShuttingDownError()
        if asyncio.get_running_loop() is not self._loop:
            await self._on_own_loop(self._start_async())
            return
        if self._telemetry_started:
            await self._conn.start()
            return
        self._telemetry_started = True
        tel = load_telemetry()
        if tel is not None:
            try:
                otel = self._options.otel
                config = otel if isinstance(otel, OtelConfig) or otel is None else OtelConfig(**otel)
                # Telemetry frames go over this worker's own socket, not a second one (PROTOCOL §9.5 S12).
                tel.init_otel(config=config, loop=self._loop, frame_sink=self.send_telemetry)
                attach = getattr(tel, "attach_event_loop", None)
                if attach is not None:
                    attach(self._loop)
                # Telemetry is process-wide: counted per client so one client's shutdown keeps it on for others.
                tel.register_client(self, self.send_telemetry, self._loop)
            except ImportError:
                log.debug("OpenTelemetry not available")
                tel = None
        self._trace = TraceScope(tel)
        await self._conn.start()

    def shutdown(self) -> None:
        """Disconnect, fail pending calls, stop the private loop and join its thread (5 s).

        Example:
            >>> # iii.shutdown()
        """
        if not self._thread.is_alive():
            return
        self._run_on_loop(self.shutdown_async())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    async def shutdown_async(self) -> None:
        """Disconnect and fail pending calls with ``iii is shutting down``; usable from any loop.

        Example:
            >>> # await iii.shutdown_async()
        """
        if asyncio.get_running_loop() is not self._loop:
            await self._on_own_loop(self.shutdown_async())
            return
        self._closed = True
        tel = load_telemetry()
        if tel is not None:
            # Before closing the socket: a survivor takes over the frames, or (last client) the final flush
            # still reaches the engine.
            try:
                await tel.release_client_async(self)
            except Exception:
                log.debug("OpenTelemetry shutdown failed", exc_info=True)
        await self._conn.close()
        for pending in list(self._pending.values()):
            if pending.timer is not None:
                pending.timer.cancel()
            if not pending.future.done():
                pending.future.set_exception(ShuttingDownError())
        self._pending.clear()
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._set_connection_state("disconnected")

    def get_connection_state(self) -> IIIConnectionState:
        """``disconnected``, ``connecting``, ``connected``, ``reconnecting`` or ``failed``.

        Example:
            >>> # iii.get_connection_state()
        """
        return self._connection_state

    @property
    def worker_id(self) -> str | None:
        """The id the engine gave this connection (``None`` before ``workerregistered``)."""
        return self._worker_id

    def send_telemetry(self, frame: bytes) -> None:
        """Send one binary telemetry frame (``OTLP``/``MTRC``/``LOGS`` + body) on the worker socket.

        Telemetry is best effort: while disconnected the frame is dropped. Callable from any thread.

        Example:
            >>> # iii.send_telemetry(b"OTLP" + otlp_json)
        """
        if frame[:4] not in (b"OTLP", b"MTRC", b"LOGS"):
            raise ValueError("a telemetry frame must start with OTLP, MTRC or LOGS")

        def send() -> None:
            if self._conn.is_ready:
                self._conn.send_soon(frame)

        if self._thread.is_alive():
            self._soon(send)

    def _set_connection_state(self, state: IIIConnectionState) -> None:
        self._connection_state = state
        # "failed" wakes register_worker too, so it raises at once instead of after 30 s.
        self._notify_state()

    async def _on_open(self, write: Write) -> None:
        self._generation += 1
        for trigger_type in list(self._trigger_types.values()):
            await write(trigger_type.frame)
        for frame in list(self._services.values()):
            await write(frame)
        for function in list(self._functions.values()):
            await write(function.frame)
        for frame, _ in list(self._triggers.values()):
            await write(frame)

    def _on_ready(self) -> None:
        tp, bg = self._trace.headers()
        frame: dict[str, Any] = {"function_id": "engine::workers::register", "data": worker_metadata(self._options)}
        if tp:
            frame["traceparent"] = tp
        if bg:
            frame["baggage"] = bg
        frame["action"] = {"type": "void"}
        frame["type"] = "invokefunction"
        self._conn.send_soon(dumps(frame))
        if self._lost_worker_id is not None:
            old, self._lost_worker_id = self._lost_worker_id, None
            self._spawn(self._recover_registrations(old))

    def _on_lost(self) -> None:
        self._lost_worker_id = self._worker_id or self._lost_worker_id
        self._worker_id = None
        queued = self._conn.queued_keys()
        lost = [iid for iid in self._pending if iid not in queued]
        # The engine halts every call of a vanished worker: their results will never come (PROTOCOL §9.5 S5).
        for iid in lost:
            pending = self._pending.pop(iid)
            if pending.timer is not None:
                pending.timer.cancel()
            if not pending.future.done():
                pending.future.set_exception(
                    ConnectionLostError(
                        "connection_lost",
                        f"Connection to the engine was lost while invoking '{pending.function_id}'",
                    )
                )

    async def _recover_registrations(self, old_worker_id: str) -> None:
        """Re-send registrations an old connection's cleanup deleted (PROTOCOL §8.1 T7)."""
        loop = self._loop
        deadline = loop.time() + _RECOVERY_WINDOW_S
        try:
            while loop.time() < deadline:
                workers = await self._call("engine::workers::list", {}, None)
                if not any(w.get("id") == old_worker_id for w in workers.get("workers", [])):
                    break
                await asyncio.sleep(_RECOVERY_POLL_S)
            else:
                return
            listed = await self._call("engine::functions::list", {"include_internal": True}, None)
            present = {f.get("function_id") for f in listed.get("functions", [])}
            for function_id, function in list(self._functions.items()):
                if function_id not in present and function_id in self._functions:
                    log.info("Re-registering function %s lost in the old connection's cleanup", function_id)
                    await self._conn.send(function.frame)
            listed = await self._call("engine::triggers::list", {"include_internal": True}, None)
            present = {t.get("id") for t in listed.get("triggers", [])}
            for trigger_id, (frame, _) in list(self._triggers.items()):
                if trigger_id not in present and trigger_id in self._triggers:
                    log.info("Re-registering trigger %s lost in the old connection's cleanup", trigger_id)
                    await self._conn.send(frame)
        except (InvocationError, TimeoutError, ShuttingDownError, AttributeError) as exc:
            log.debug("Registration check after reconnect stopped: %s", exc)

    # ---------------------------------------------------------------- incoming frames

    def _on_frame(self, raw: Frame) -> None:
        try:
            msg = loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            log.warning("Skipping a frame that is not JSON (%s): %.200r", exc, raw)
            return
        if not isinstance(msg, dict):
            log.warning("Skipping a frame that is not a JSON object: %.200r", raw)
            return
        kind = msg.get("type")
        if kind == "invocationresult":
            self._on_result(msg)
        elif kind == "invokefunction":
            self._spawn(self._on_invoke(msg, self._generation))
        elif kind == "workerregistered":
            worker_id = msg.get("worker_id")
            self._worker_id = worker_id if isinstance(worker_id, str) else None
            self._notify_state()
        elif kind == "registertrigger":
            self._spawn(self._on_register_trigger(msg, self._generation))
        elif kind == "unregistertrigger":
            self._spawn(self._on_unregister_trigger(msg))
        elif kind == "ping":
            self._conn.send_soon('{"type":"pong"}')
        elif kind != "pong":
            log.debug("Ignoring message of type %r", kind)

    def _on_result(self, msg: dict[str, Any]) -> None:
        invocation_id = msg.get("invocation_id")
        pending = self._pending.pop(invocation_id, None) if isinstance(invocation_id, str) else None
        if pending is None:
            log.debug("Result for an unknown or expired invocation %r ignored", invocation_id)
            return
        if pending.timer is not None:
            pending.timer.cancel()
        if pending.future.done():
            return
        error = msg.get("error")
        if error:
            pending.future.set_exception(InvocationError.from_wire(error))
        else:
            pending.future.set_result(msg.get("result"))

    async def _on_invoke(self, msg: dict[str, Any], generation: int) -> None:
        invocation_id = msg.get("invocation_id")
        function_id = msg.get("function_id")
        if not isinstance(function_id, str):
            log.warning("invokefunction without a string function_id ignored: %.200r", msg)
            return
        function = self._functions.get(function_id)
        error: dict[str, Any] | None = None
        result: Any = None
        traceparent: str | None = None
        if function is None or function.handler is None:
            if function is None:
                error = {"code": "function_not_found", "message": f"Function '{function_id}' not found"}
            else:
                error = {
                    "code": "function_not_invokable",
                    "message": "Function is HTTP-invoked and cannot be invoked locally",
                }
            log.warning(error["message"])
        else:
            try:
                data = resolve_channels(msg.get("data"), self._address)
            except Exception as exc:
                log.exception("Failed to resolve channel refs for %s", function_id)
                error = {"code": "invocation_failed", "message": str(exc), "stacktrace": traceback.format_exc()}
            else:
                call = self._bind(function, data)
                result, exc_or_none, stack, traceparent = await self._trace.run(
                    f"call {function_id}", call, msg.get("traceparent"), msg.get("baggage")
                )
                if exc_or_none is not None:
                    log.error("Error in handler %s: %s", function_id, exc_or_none)
                    error = {"code": "invocation_failed", "message": str(exc_or_none), "stacktrace": stack}
        if not isinstance(invocation_id, str):
            return  # fire-and-forget: nobody waits for an answer
        frame: dict[str, Any] = {"invocation_id": invocation_id, "function_id": function_id}
        if error is None and result is not None:
            frame["result"] = result
        if error is not None:
            frame["error"] = error
        if traceparent:
            frame["traceparent"] = traceparent
        frame["type"] = "invocationresult"
        try:
            raw = dumps(frame)
        except (TypeError, ValueError) as exc:
            frame.pop("result", None)
            frame["error"] = {
                "code": "invocation_failed",
                "message": f"result of {function_id} is not JSON-serialisable: {exc}",
                "stacktrace": traceback.format_exc(),
            }
            frame["type"] = frame.pop("type")
            raw = dumps(frame)
        if generation != self._generation or not self._conn.is_ready:
            # The engine halted this invocation when the old connection dropped; nobody wants the answer.
            log.debug("Dropping the result of %s: its connection is gone", invocation_id)
            return
        await self._conn.send(raw)

    def _bind(self, function: _LocalFunction, data: Any) -> Callable[[], Coroutine[Any, Any, Any]]:
        handler = function.handler
        assert handler is not None
        if function.is_async:
            return lambda: handler(data)

        async def run_sync() -> Any:
            # copy_context carries the trace context into the executor thread (run_in_executor does not).
            ctx = contextvars.copy_context()
            result = await self._loop.run_in_executor(None, ctx.run, handler, data)
            if inspect.isawaitable(result):
                result = await result
            return result

        return run_sync

    async def _on_register_trigger(self, msg: dict[str, Any], generation: int) -> None:
        trigger_id = str(msg.get("id", ""))
        trigger_type = msg.get("trigger_type")
        function_id = str(msg.get("function_id", ""))
        answer: dict[str, Any] = {
            "type": "triggerregistrationresult",
            "id": trigger_id,
            "trigger_type": trigger_type,
            "function_id": function_id,
        }
        owner = self._trigger_types.get(trigger_type) if isinstance(trigger_type, str) else None
        if owner is None:
            answer["error"] = {"code": "trigger_type_not_found", "message": "Trigger type not found"}
        else:
            config: TriggerConfig[Any] = TriggerConfig(id=trigger_id, function_id=function_id, config=msg.get("config"))
            try:
                await owner.handler.register_trigger(config)
                self._owned_triggers[trigger_id] = config
            except Exception as exc:
                log.exception("Error registering trigger %s", trigger_id)
                answer["error"] = {"code": "trigger_registration_failed", "message": str(exc)}
        if generation == self._generation and self._conn.is_ready:
            await self._conn.send(dumps(answer))

    async def _on_unregister_trigger(self, msg: dict[str, Any]) -> None:
        trigger_id = str(msg.get("id", ""))
        trigger_type = msg.get("trigger_type")
        owner = self._trigger_types.get(trigger_type) if isinstance(trigger_type, str) else None
        known = self._owned_triggers.pop(trigger_id, None)
        if owner is None:
            log.debug("unregistertrigger %s for a type we do not own (%r)", trigger_id, trigger_type)
            return
        config = known or TriggerConfig(id=trigger_id, function_id="", config=None)
        try:
            await owner.handler.unregister_trigger(config)
        except Exception:
            log.exception("Error unregistering trigger %s", trigger_id)

    # ---------------------------------------------------------------- registrations

    def register_function(
        self,
        func_or_id: RegisterFunctionInput | dict[str, Any] | str,
        handler_or_invocation: RemoteFunctionHandler | Callable[[Any], Any] | HttpInvocationConfig,
        *,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        request_format: RegisterFunctionFormat | dict[str, Any] | None = None,
        response_format: RegisterFunctionFormat | dict[str, Any] | None = None,
    ) -> FunctionRef:
        """Register a function; the handler (sync or async) gets the raw JSON payload.

        With the string-id form, missing ``request_format`` / ``response_format`` come from type hints.

        Example:
            >>> # ref = iii.register_function("greet", lambda data: f"hi {data['name']}")
            >>> # ref.unregister()
        """
        if isinstance(func_or_id, str):
            if callable(handler_or_invocation):
                from .format_utils import extract_request_format, extract_response_format

                if request_format is None:
                    request_format = extract_request_format(handler_or_invocation)
                if response_format is None:
                    response_format = extract_response_format(handler_or_invocation)
            func = RegisterFunctionInput(
                id=func_or_id,
                description=description,
                metadata=metadata,
                request_format=request_format,
                response_format=response_format,
            )
        elif isinstance(func_or_id, dict):
            func = RegisterFunctionInput(**func_or_id)
        else:
            func = func_or_id

        if not func.id or not func.id.strip():
            raise ValueError("id is required")
        if func.id in self._functions:
            raise ValueError(f"function id '{func.id}' already registered")

        invocation: HttpInvocationConfig | None = None
        handler: Callable[[Any], Any] | None = None
        if isinstance(handler_or_invocation, HttpInvocationConfig):
            invocation = handler_or_invocation
        elif callable(handler_or_invocation):
            handler = handler_or_invocation
        else:
            actual = type(handler_or_invocation).__name__
            raise TypeError(f"handler_or_invocation must be callable or HttpInvocationConfig, got {actual}")

        message = RegisterFunctionMessage(
            id=func.id,
            description=func.description,
            request_format=format_dict(func.request_format),
            response_format=format_dict(func.response_format),
            metadata=func.metadata,
            invocation=invocation,
        )
        frame = encode(message)
        function_id = func.id
        self._functions[function_id] = _LocalFunction(frame, handler, _is_async_callable(handler))
        self._soon(self._send_registration, frame)

        def unregister() -> None:
            self._functions.pop(function_id, None)
            self._soon(self._send_registration, encode(UnregisterFunctionMessage(id=function_id)))

        return FunctionRef(id=function_id, unregister=unregister)

    def register_trigger(self, trigger: RegisterTriggerInput | dict[str, Any]) -> Trigger:
        """Bind a trigger to a function; returns a handle whose ``unregister()`` removes it.

        Example:
            >>> # t = iii.register_trigger({"type": "cron", "function_id": "tick", "config": {"expression": "* * *"}})
        """
        if isinstance(trigger, dict):
            trigger = RegisterTriggerInput(**trigger)
        trigger_id = str(uuid.uuid4())
        message = RegisterTriggerMessage(
            id=trigger_id, trigger_type=trigger.type, function_id=trigger.function_id, config=trigger.config
        )
        frame = encode(message)
        self._triggers[trigger_id] = (frame, message)
        self._soon(self._send_registration, frame)
        trigger_type = trigger.type

        def unregister() -> None:
            self._triggers.pop(trigger_id, None)
            frame = encode(UnregisterTriggerMessage(id=trigger_id, trigger_type=trigger_type))
            self._soon(self._send_registration, frame)

        return Trigger(unregister)

    def register_trigger_type(
        self, trigger_type: RegisterTriggerTypeInput | dict[str, Any], handler: TriggerHandler[Any]
    ) -> None:
        """Own a custom trigger type: ``handler`` hears about every trigger bound to it.

        Example:
            >>> # iii.register_trigger_type({"id": "webhook", "description": "Webhooks"}, WebhookHandler())
        """
        if isinstance(trigger_type, dict):
            trigger_type = RegisterTriggerTypeInput(**trigger_type)
        frame = encode(RegisterTriggerTypeMessage(id=trigger_type.id, description=trigger_type.description))
        self._trigger_types[trigger_type.id] = _LocalTriggerType(frame, handler)
        self._soon(self._send_registration, frame)

    def unregister_trigger_type(self, trigger_type: RegisterTriggerTypeInput | dict[str, Any]) -> None:
        """Stop owning a trigger type (the production engine ignores the message; ours removes the type).

        Example:
            >>> # iii.unregister_trigger_type({"id": "webhook"})
        """
        type_id = trigger_type["id"] if isinstance(trigger_type, dict) else trigger_type.id
        self._trigger_types.pop(type_id, None)
        self._soon(self._send_registration, encode(UnregisterTriggerTypeMessage(id=type_id)))

    def register_service(self, service: RegisterServiceInput | dict[str, Any]) -> None:
        """Register a service grouping (``name`` defaults to ``id``).

        Example:
            >>> # iii.register_service({"id": "payments", "description": "Payment processing"})
        """
        if isinstance(service, dict):
            service = RegisterServiceInput(**service)
        frame = encode(
            RegisterServiceMessage(
                id=service.id,
                name=service.name or service.id,
                description=service.description,
                parent_service_id=service.parent_service_id,
            )
        )
        self._services[service.id] = frame
        self._soon(self._send_registration, frame)

    # ---------------------------------------------------------------- calls

    def trigger(self, request: dict[str, Any] | TriggerRequest) -> Any:
        """Call a function and wait for its result (``None`` for void, the receipt dict for enqueue).

        The trace context and baggage current in the calling thread travel with the call.

        Example:
            >>> # iii.trigger({"function_id": "greet", "payload": {"name": "Ada"}})
        """
        function_id, payload, action, timeout_ms = _unpack_request(request)
        # Read in the caller's context and handed over explicitly, so what travels never depends on how the
        # hop to the client's loop treats context variables.
        headers = self._trace.headers()
        return self._run_on_loop(self._call(function_id, payload, action, timeout_ms, headers))

    async def trigger_async(self, request: dict[str, Any] | TriggerRequest) -> Any:
        """Async form of :meth:`trigger`; works from any event loop.

        Example:
            >>> # await iii.trigger_async({"function_id": "notify", "payload": {}, "action": TriggerAction.Void()})
        """
        function_id, payload, action, timeout_ms = _unpack_request(request)
        coro = self._call(function_id, payload, action, timeout_ms, self._trace.headers())
        if asyncio.get_running_loop() is self._loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    async def _call(
        self,
        function_id: str,
        payload: Any,
        action: Any,
        timeout_ms: int | None = None,
        headers: tuple[str | None, str | None] | None = None,
    ) -> Any:
        """One invocation, on the client's loop; ``headers`` = ``(traceparent, baggage)`` of the caller."""
        if self._closed:
            raise ShuttingDownError()
        action_wire = action_to_wire(action)
        tp, bg = headers if headers is not None else self._trace.headers()
        frame: dict[str, Any] = {"function_id": function_id, "data": payload}
        if action_wire is not None and action_wire["type"] == "void":
            if tp:
                frame["traceparent"] = tp
            if bg:
                frame["baggage"] = bg
            frame["action"] = action_wire
            frame["type"] = "invokefunction"
            await self._conn.send(dumps(frame))
            return None

        invocation_id = str(uuid.uuid4())
        frame["invocation_id"] = invocation_id
        if tp:
            frame["traceparent"] = tp
        if bg:
            frame["baggage"] = bg
        if action_wire is not None:
            frame["action"] = action_wire
        frame["type"] = "invokefunction"
        raw = dumps(frame)

        timeout = timeout_ms or self._options.invocation_timeout_ms
        loop = self._loop
        future: asyncio.Future[Any] = loop.create_future()
        pending = _Pending(future, function_id)
        pending.timer = loop.call_later(timeout / 1000.0, self._expire, invocation_id, function_id, timeout)
        self._pending[invocation_id] = pending
        try:
            await self._conn.send(raw, invocation_id)
            return await future
        finally:
            leftover = self._pending.pop(invocation_id, None)
            if leftover is not None and leftover.timer is not None:
                leftover.timer.cancel()

    def _expire(self, invocation_id: str, function_id: str, timeout_ms: Any) -> None:
        pending = self._pending.pop(invocation_id, None)
        if pending is not None and not pending.future.done():
            pending.future.set_exception(TimeoutError(f"Invocation of '{function_id}' timed out after {timeout_ms}ms"))

    def list_functions(self) -> list[FunctionInfo]:
        """Every function registered with the engine (``engine::*`` left out).

        Example:
            >>> # [f.function_id for f in iii.list_functions()]
        """
        return self._run_on_loop(self.list_functions_async())

    async def list_functions_async(self) -> list[FunctionInfo]:
        """Async form of :meth:`list_functions`."""
        result = await self.trigger_async({"function_id": "engine::functions::list", "payload": {}})
        return [FunctionInfo(**f) for f in result.get("functions", [])]

    def list_workers(self) -> list[WorkerInfo]:
        """Every worker connected to the engine.

        Example:
            >>> # [w.name for w in iii.list_workers()]
        """
        return self._run_on_loop(self.list_workers_async())

    async def list_workers_async(self) -> list[WorkerInfo]:
        """Async form of :meth:`list_workers`."""
        result = await self.trigger_async({"function_id": "engine::workers::list", "payload": {}})
        return [WorkerInfo(**w) for w in result.get("workers", [])]

    def list_triggers(self, include_internal: bool = False) -> list[TriggerInfo]:
        """Every trigger; ``include_internal`` adds those bound to ``engine::`` functions.

        Example:
            >>> # iii.list_triggers(include_internal=True)
        """
        return self._run_on_loop(self.list_triggers_async(include_internal))

    async def list_triggers_async(self, include_internal: bool = False) -> list[TriggerInfo]:
        """Async form of :meth:`list_triggers`."""
        result = await self.trigger_async(
            {"function_id": "engine::triggers::list", "payload": {"include_internal": include_internal}}
        )
        return [TriggerInfo(**t) for t in result.get("triggers", [])]

    def create_channel(self, buffer_size: int | None = None) -> Channel:
        """Create a channel; pass ``writer_ref`` / ``reader_ref`` (or the ends themselves) in payloads.

        Example:
            >>> # ch = iii.create_channel(); iii.trigger({"function_id": "produce", "payload": {"out": ch.writer}})
        """
        return self._run_on_loop(self.create_channel_async(buffer_size))

    async def create_channel_async(self, buffer_size: int | None = None) -> Channel:
        """Async form of :meth:`create_channel`."""
        result = await self.trigger_async(
            {"function_id": "engine::channels::create", "payload": {"buffer_size": buffer_size}}
        )
        writer_ref = StreamChannelRef(**result["writer"])
        reader_ref = StreamChannelRef(**result["reader"])
        return Channel(
            writer=ChannelWriter(self._address, writer_ref),
            reader=ChannelReader(self._address, reader_ref),
            writer_ref=writer_ref,
            reader_ref=reader_ref,
        )

    # ---------------------------------------------------------------- conveniences

    def on_functions_available(self, callback: Callable[[list[FunctionInfo]], None]) -> Callable[[], None]:
        """Call ``callback`` with the full function list whenever the engine's set of ids changes.

        Example:
            >>> # unsubscribe = iii.on_functions_available(lambda fns: print(len(fns)))
        """
        self._functions_available_callbacks.append(callback)
        if self._functions_available_trigger is None:
            if self._functions_available_function_id is None:
                self._functions_available_function_id = f"iii.on_functions_available.{uuid.uuid4()}"
            function_id = self._functions_available_function_id
            if function_id not in self._functions:

                async def handler(data: dict[str, Any]) -> None:
                    functions = [FunctionInfo(**f) for f in data.get("functions", [])]
                    for cb in list(self._functions_available_callbacks):
                        try:
                            cb(functions)
                        except Exception:
                            log.exception("functions-available callback failed")

                self.register_function({"id": function_id}, handler)
            self._functions_available_trigger = self.register_trigger(
                {"type": "engine::functions-available", "function_id": function_id, "config": {}}
            )

        def unsubscribe() -> None:
            if callback in self._functions_available_callbacks:
                self._functions_available_callbacks.remove(callback)
            if not self._functions_available_callbacks and self._functions_available_trigger is not None:
                self._functions_available_trigger.unregister()
                self._functions_available_trigger = None

        return unsubscribe

    def create_stream(self, stream_name: str, stream: IStream[Any]) -> None:
        """Serve stream ``stream_name`` from ``stream``: get, set, delete, list, list_groups and update.

        ``update`` falls back to get → apply ops → set under a per-item lock when the backend's ``update``
        returns ``None`` or raises ``NotImplementedError`` (PROTOCOL §9.5 S7, S8; see :mod:`iii.stream_glue`).

        Example:
            >>> # iii.create_stream("todos", MemoryStream())
        """
        for function_id, handler in stream_functions(stream_name, stream).items():
            self.register_function({"id": function_id}, handler)


class TriggerAction:
    """Factories for the ``action`` of :meth:`III.trigger`.

    Example:
        >>> TriggerAction.Enqueue(queue="jobs").queue
        'jobs'
        >>> TriggerAction.Void().type
        'void'
    """

    @staticmethod
    def Enqueue(*, queue: str) -> TriggerActionEnqueue:
        """Route the call through queue ``queue``; ``trigger`` returns ``{"messageReceiptId": ...}``."""
        return TriggerActionEnqueue(queue=queue)

    @staticmethod
    def Void() -> TriggerActionVoid:
        """Fire and forget; ``trigger`` returns ``None``."""
        return TriggerActionVoid()


def register_worker(address: str, options: InitOptions | None = None) -> III:
    """Create a client and wait (at most 30 s) until it is connected.

    ``ValueError`` at once for a URL that cannot work (scheme not ws/wss, no host, port outside 1-65535).
    ``ConnectionError`` ("cannot reach the engine at …") when no connection came within 30 s, or sooner when
    ``ReconnectionConfig.max_retries`` ran out; that client is shut down. Once connected, a lost engine is
    retried as configured (forever by default).

    Example:
        >>> # iii = register_worker("ws://localhost:49134", InitOptions(worker_name="billing"))
    """
    client = III(address, options)
    try:
        client._wait_until_connected()
    except BaseException:
        client.shutdown()
        raise
    return client


# ---------------------------------------------------------------- helpers


def _unpack_request(request: dict[str, Any] | TriggerRequest) -> tuple[str, Any, Any, int | None]:
    """``(function_id, payload, action, timeout_ms)`` of a trigger request in either form."""
    if isinstance(request, TriggerRequest):
        return request.function_id, request.payload, request.action, request.timeout_ms
    return request["function_id"], request.get("payload"), request.get("action"), request.get("timeout_ms")


def _is_async_callable(handler: Callable[..., Any] | None) -> bool:
    if handler is None:
        return False
    if inspect.iscoroutinefunction(handler):
        return True
    call = getattr(handler, "__call__", None)  # noqa: B004 - async __call__ on instances
    return call is not None and inspect.iscoroutinefunction(call)


