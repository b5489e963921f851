"""A small engine speaking the control-socket JSON frames, for SDK tests until (and besides) the real one.

It routes invocations between workers, answers the ``engine::*`` list built-ins, forwards custom trigger
registrations to type owners, fires ``engine::functions-available`` on change, and records every frame each
worker sent, so tests can assert on the wire.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response


@dataclass
class FakeWorker:
    id: str
    ws: ServerConnection
    frames: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    connected_at_ms: int = field(default_factory=lambda: int(time.time() * 1000))


@dataclass
class _Route:
    caller: FakeWorker | None
    caller_invocation_id: str | None
    callee: FakeWorker
    function_id: str


class FakeEngine:
    """``async with FakeEngine() as engine: engine.url``; ``await engine.restart()`` keeps the port."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.workers: dict[str, FakeWorker] = {}
        self.functions: dict[str, tuple[FakeWorker, dict[str, Any]]] = {}
        self.trigger_types: dict[str, FakeWorker] = {}
        self.triggers: dict[str, tuple[FakeWorker, dict[str, Any]]] = {}
        self.routes: dict[str, _Route] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.connected = asyncio.Condition()
        self._server: Server | None = None
        self._fa_handle: asyncio.TimerHandle | None = None
        self.all_frames: list[tuple[str, dict[str, Any]]] = []
        self.reject_handshakes = 0  # answer this many upgrades with HTTP 503 first
        self.rejected = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeEngine:
        await self.start()
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.stop()

    async def start(self) -> None:
        self._server = await serve(self._handle, "127.0.0.1", self.port, compression=None, max_size=None,
                                   process_request=self._maybe_reject)
        self.port = self._server.sockets[0].getsockname()[1]

    def _maybe_reject(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.rejected < self.reject_handshakes:
            self.rejected += 1
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "not yet\n")
        return None

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def wait_for(self, predicate: Any, limit_s: float = 10.0) -> None:
        """Wait until ``predicate()`` is true (re-checked whenever the engine handles a frame)."""
        async with asyncio.timeout(limit_s), self.connected:
            await self.connected.wait_for(predicate)

    async def _notify(self) -> None:
        async with self.connected:
            self.connected.notify_all()

    async def send(self, worker: FakeWorker, frame: dict[str, Any] | str) -> None:
        try:
            await worker.ws.send(frame if isinstance(frame, str) else json.dumps(frame))
        except ConnectionClosed:
            pass

    async def _handle(self, ws: ServerConnection) -> None:
        worker = FakeWorker(str(uuid.uuid4()), ws)
        self.workers[worker.id] = worker
        await self.send(worker, {"type": "workerregistered", "worker_id": worker.id})
        await self._notify()
        try:
            async for raw in ws:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                worker.frames.append(msg)
                self.all_frames.append((worker.id, msg))
                await self._dispatch(worker, msg)
                await self._notify()
        except ConnectionClosed:
            pass
        finally:
            await self._cleanup(worker)
            await self._notify()

    async def _dispatch(self, worker: FakeWorker, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "registerfunction":
            self.functions[msg["id"]] = (worker, msg)
            self._functions_changed()
        elif kind == "unregisterfunction":
            if self.functions.pop(msg["id"], None) is not None:
                self._functions_changed()
        elif kind == "registertriggertype":
            self.trigger_types[msg["id"]] = worker
            for trigger_id, (_, t) in list(self.triggers.items()):
                if t["trigger_type"] == msg["id"]:
                    await self._forward_trigger(worker, trigger_id, t)
        elif kind == "unregistertriggertype":
            if self.trigger_types.get(msg["id"]) is worker:
                del self.trigger_types[msg["id"]]
        elif kind == "registertrigger":
            owner = self.trigger_types.get(msg["trigger_type"])
            if owner is not None:
                await self._forward_trigger(owner, msg["id"], msg)
            self.triggers[msg["id"]] = (worker, msg)
        elif kind == "unregistertrigger":
            entry = self.triggers.pop(msg["id"], None)
            if entry is not None:
                await self._trigger_removed(entry[1])
        elif kind == "invokefunction":
            task = asyncio.get_running_loop().create_task(self._invoke_and_notify(worker, msg))
            self._tasks.add(task)  # the loop keeps only a weak reference to a task
            task.add_done_callback(self._tasks.discard)
        elif kind == "invocationresult":
            route = self.routes.pop(msg.get("invocation_id", ""), None)
            if route is not None and route.caller is not None and route.caller_invocation_id is not None:
                out = {k: v for k, v in msg.items() if k in ("result", "error", "traceparent")}
                await self.send(route.caller, {"type": "invocationresult", "invocation_id": route.caller_invocation_id,
                                               "function_id": route.function_id, **out})
        elif kind == "ping":
            await self.send(worker, {"type": "pong"})

    async def _forward_trigger(self, owner: FakeWorker, trigger_id: str, t: dict[str, Any]) -> None:
        await self.send(owner, {"type": "registertrigger", "id": trigger_id, "trigger_type": t["trigger_type"],
                                "function_id": t["function_id"], "config": t.get("config")})

    async def _trigger_removed(self, t: dict[str, Any]) -> None:
        owner = self.trigger_types.get(t["trigger_type"])
        if owner is not None:
            await self.send(owner, {"type": "unregistertrigger", "id": t["id"], "trigger_type": t["trigger_type"]})

    def _function_infos(self, include_internal: bool = True) -> list[dict[str, Any]]:
        return [
            {"function_id": fid, "description": m.get("description"), "request_format": m.get("request_format"),
             "response_format": m.get("response_format"), "metadata": m.get("metadata")}
            for fid, (_, m) in sorted(self.functions.items())
        ]

    def _functions_changed(self) -> None:
        loop = asyncio.get_running_loop()
        if self._fa_handle is not None:
            self._fa_handle.cancel()
        self._fa_handle = loop.call_later(0.05, lambda: loop.create_task(self._fire_functions_available()))

    async def _fire_functions_available(self) -> None:
        payload = {"event": "functions_changed", "functions": self._function_infos()}
        for _, t in list(self.triggers.values()):
            if t["trigger_type"] == "engine::functions-available":
                await self._route(None, None, t["function_id"], payload)

    def _builtin(self, worker: FakeWorker, function_id: str, data: Any) -> Any:
        if function_id == "engine::functions::list":
            return {"functions": self._function_infos()}
        if function_id == "engine::triggers::list":
            include = isinstance(data, dict) and data.get("include_internal")
            return {"triggers": [
                {"id": tid, "trigger_type": t["trigger_type"], "function_id": t["function_id"],
                 "config": t.get("config")}
                for tid, (_, t) in self.triggers.items() if include or not t["function_id"].startswith("engine::")
            ]}
        if function_id == "engine::workers::list":
            return {"timestamp": int(time.time() * 1000), "workers": [
                {"id": w.id, "name": w.metadata.get("name"), "runtime": w.metadata.get("runtime"),
                 "version": w.metadata.get("version"), "os": w.metadata.get("os"), "ip_address": "127.0.0.1",
                 "status": "connected", "connected_at_ms": w.connected_at_ms,
                 "function_count": sum(1 for o, _ in self.functions.values() if o is w),
                 "functions": [f for f, (o, _) in self.functions.items() if o is w],
                 "active_invocations": 0, "latest_metrics": None}
                for w in self.workers.values()]}
        if function_id == "engine::workers::register":
            caller = self.workers.get(data.get("_caller_worker_id", "")) if isinstance(data, dict) else None
            if caller is not None:
                caller.metadata = dict(data)
            return {"success": True}
        raise KeyError(function_id)

    async def _invoke_and_notify(self, worker: FakeWorker, msg: dict[str, Any]) -> None:
        # The call is routed in a task of its own, after the frame's own notification; a waiter woken by an earlier
        # frame may have checked its predicate in between, so it is told again once the route exists.
        try:
            await self._invoke(worker, msg)
        finally:
            await self._notify()

    async def _invoke(self, worker: FakeWorker, msg: dict[str, Any]) -> None:
        action = msg.get("action") or {}
        iid = msg.get("invocation_id") if action.get("type") != "void" else None
        function_id = msg["function_id"]
        data = msg.get("data")
        if action.get("type") == "enqueue":
            if iid:
                await self._reply(worker, iid, function_id, error={"code": "enqueue_error",
                                                                    "message": "QueueModule not loaded"})
            return
        if isinstance(data, dict):
            data = {**data, "_caller_worker_id": worker.id}
        await self._route(worker, iid, function_id, data)

    async def _route(self, caller: FakeWorker | None, iid: str | None, function_id: str, data: Any) -> None:
        if function_id.startswith("engine::"):
            try:
                result = self._builtin(caller, function_id, data)  # type: ignore[arg-type]
            except KeyError:
                pass
            else:
                if caller is not None and iid:
                    await self._reply(caller, iid, function_id, result=result)
                return
        entry = self.functions.get(function_id)
        if entry is None:
            if caller is not None and iid:
                await self._reply(caller, iid, function_id,
                                  error={"code": "function_not_found", "message": f"Function {function_id} not found"})
            return
        callee = entry[0]
        forward_id = iid or str(uuid.uuid4())
        self.routes[forward_id] = _Route(caller, iid, callee, function_id)
        await self.send(callee, {"type": "invokefunction", "invocation_id": forward_id, "function_id": function_id,
                                 "data": data})

    async def _reply(self, worker: FakeWorker, iid: str, function_id: str, **body: Any) -> None:
        frame: dict[str, Any] = {"type": "invocationresult", "invocation_id": iid, "function_id": function_id}
        frame.update({k: v for k, v in body.items() if v is not None})
        await self.send(worker, frame)

    async def _cleanup(self, worker: FakeWorker) -> None:
        self.workers.pop(worker.id, None)
        gone = [fid for fid, (o, _) in self.functions.items() if o is worker]
        for fid in gone:
            del self.functions[fid]
        if gone:
            self._functions_changed()
        for rid, route in list(self.routes.items()):
            if route.callee is worker:
                del self.routes[rid]
                if route.caller is not None and route.caller_invocation_id:
                    await self._reply(route.caller, route.caller_invocation_id, route.function_id,
                                      error={"code": "invocation_stopped", "message": "Invocation stopped"})
            elif route.caller is worker:
                del self.routes[rid]
        for tid, (o, t) in list(self.triggers.items()):
            if o is worker:
                del self.triggers[tid]
                await self._trigger_removed(t)
        for type_id, owner in list(self.trigger_types.items()):
            if owner is worker:
                del self.trigger_types[type_id]
