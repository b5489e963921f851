"""Test clients for the stream/state module tests: a raw control-socket worker and a stream-socket client."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from iii_engine import Engine
from iii_engine.modules.stream import StreamModule

WAIT = 5.0

Handler = Callable[[Any], Awaitable[Any]]


class Worker:
    """A control-socket worker speaking raw JSON frames; serves registered handlers in the background.

    ``handler`` returning a value answers with ``result``; raising ``WorkerError`` answers with ``error``.
    """

    def __init__(self, ws: ClientConnection, worker_id: str) -> None:
        self.ws = ws
        self.worker_id = worker_id
        self.handlers: dict[str, Handler] = {}
        self.calls: dict[str, list[Any]] = {}
        self._results: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def connect(cls, url: str) -> Worker:
        ws = await websockets.connect(url, compression=None, max_size=None)
        first = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        assert first["type"] == "workerregistered", first
        return cls(ws, first["worker_id"])

    async def _read(self) -> None:
        try:
            await self._frames()
        finally:
            for task in list(self._tasks):  # a handler still waiting must not outlive the test's loop
                task.cancel()

    async def _frames(self) -> None:
        async for raw in self.ws:
            frame = json.loads(raw)
            if frame["type"] == "invocationresult":
                fut = self._results.pop(frame["invocation_id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(frame)
            elif frame["type"] == "invokefunction":
                task = asyncio.get_running_loop().create_task(self._serve(frame))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _serve(self, frame: dict[str, Any]) -> None:
        fid = frame["function_id"]
        self.calls.setdefault(fid, []).append(frame["data"])
        answer: dict[str, Any] = {"type": "invocationresult", "invocation_id": frame["invocation_id"],
                                  "function_id": fid}
        try:
            result = await self.handlers[fid](frame["data"])
        except WorkerError as exc:
            answer["error"] = {"code": exc.code, "message": exc.message}
        else:
            if result is not None:
                answer["result"] = result
        await self.ws.send(json.dumps(answer))

    async def register(self, function_id: str, handler: Handler) -> None:
        self.handlers[function_id] = handler
        await self.ws.send(json.dumps({"type": "registerfunction", "id": function_id}))

    async def trigger(self, trigger_type: str, function_id: str, config: Any, trigger_id: str | None = None) -> str:
        trigger_id = trigger_id or str(uuid.uuid4())
        await self.ws.send(json.dumps({"type": "registertrigger", "id": trigger_id, "trigger_type": trigger_type,
                                       "function_id": function_id, "config": config}))
        return trigger_id

    async def call(self, function_id: str, data: Any = None) -> dict[str, Any]:
        """The whole ``invocationresult`` frame."""
        invocation_id = str(uuid.uuid4())
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._results[invocation_id] = fut
        await self.ws.send(json.dumps({"type": "invokefunction", "invocation_id": invocation_id,
                                       "function_id": function_id, "data": data}))
        return await asyncio.wait_for(fut, WAIT)

    async def result(self, function_id: str, data: Any = None) -> Any:
        frame = await self.call(function_id, data)
        assert "error" not in frame, frame
        return frame.get("result")

    async def error(self, function_id: str, data: Any = None) -> dict[str, Any]:
        frame = await self.call(function_id, data)
        assert "error" in frame, frame
        error: dict[str, Any] = frame["error"]
        return error

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, *self._tasks, return_exceptions=True)


class WorkerError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Recorder:
    """A handler that records payloads and lets a test await the n-th one."""

    def __init__(self, answer: Any = None) -> None:
        self.payloads: list[Any] = []
        self.answer = answer
        self._changed = asyncio.Condition()

    async def __call__(self, data: Any) -> Any:
        async with self._changed:
            self.payloads.append(data)
            self._changed.notify_all()
        return self.answer

    async def wait_for(self, count: int, wait: float = WAIT) -> list[Any]:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.payloads) >= count), wait)
        return self.payloads


async def registered(engine: Engine, function_id: str) -> None:
    """Wait until ``function_id`` is in the engine's registry."""
    for _ in range(500):
        if engine.has_function(function_id):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{function_id} never registered")


async def trigger_active(engine: Engine, trigger_id: str) -> None:
    """Wait until a trigger is active in the engine."""
    for _ in range(500):
        if trigger_id in engine.registry.triggers:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"trigger {trigger_id} never became active")


def stream_module(engine: Engine) -> StreamModule:
    module = engine.module("stream")
    assert isinstance(module, StreamModule)
    return module


class SocketClient:
    """A client of the stream socket."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def connect(cls, engine: Engine, path: str = "/", **kwargs: Any) -> SocketClient:
        url = stream_module(engine).url.rstrip("/") + path
        return cls(await websockets.connect(url, compression=None, **kwargs))

    async def join(self, sub_id: str, stream: str, group: str, item: str | None = None) -> None:
        data: dict[str, Any] = {"subscriptionId": sub_id, "streamName": stream, "groupId": group}
        if item is not None:
            data["id"] = item
        await self.ws.send(json.dumps({"type": "join", "data": data}))

    async def leave(self, sub_id: str, stream: str, group: str, item: str | None = None) -> None:
        data: dict[str, Any] = {"subscriptionId": sub_id, "streamName": stream, "groupId": group}
        if item is not None:
            data["id"] = item
        await self.ws.send(json.dumps({"type": "leave", "data": data}))

    async def recv(self, wait: float = WAIT) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), wait))
        return frame

    async def nothing_for(self, seconds: float) -> None:
        """Assert that no frame arrives within ``seconds`` (only to prove an absence)."""
        try:
            frame = await asyncio.wait_for(self.ws.recv(), seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected frame {frame!r}")

    async def close(self) -> None:
        await self.ws.close()


def engine_config(**stream_settings: Any) -> Any:
    """The default modules on free loopback ports, with extra stream module settings."""
    from iii_engine import EngineConfig, ModuleSpec
    from iii_engine.modules.catalogue import DEFAULT_MODULES

    own_port = {"host": "127.0.0.1", "port": 0}
    modules = []
    for name in DEFAULT_MODULES:
        if name == "modules::stream::StreamModule":
            modules.append(ModuleSpec(name, {**own_port, **stream_settings}))
        elif name == "modules::api::RestApiModule":
            modules.append(ModuleSpec(name, dict(own_port)))
        else:
            modules.append(ModuleSpec(name, {}))
    return EngineConfig(host="127.0.0.1", port=0, modules=modules)
