"""A minimal raw-JSON worker for module tests: registers functions and serves them from a background task."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

Handler = Callable[[Any], Awaitable[Any]]
WAIT = 5.0


class ModuleWorker:
    """``async with ModuleWorker(url) as w``; ``await w.function(id, handler)``; ``await w.call(id, data)``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.handlers: dict[str, Handler] = {}
        self._results: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ModuleWorker:
        self._ws = await websockets.connect(self.url, compression=None, max_size=None)
        first = json.loads(await asyncio.wait_for(self._ws.recv(), WAIT))
        assert first["type"] == "workerregistered"
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._ws is not None and self._reader is not None
        for task in list(self._running):
            task.cancel()
        await self._ws.close()
        await asyncio.gather(self._reader, *self._running, return_exceptions=True)

    async def send(self, frame: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send(json.dumps(frame))

    async def function(self, function_id: str, handler: Handler) -> None:
        self.handlers[function_id] = handler
        await self.send({"type": "registerfunction", "id": function_id})
        await self.sync()

    async def trigger(self, trigger_id: str, trigger_type: str, function_id: str, config: Any) -> None:
        await self.send(
            {
                "type": "registertrigger",
                "id": trigger_id,
                "trigger_type": trigger_type,
                "function_id": function_id,
                "config": config,
            }
        )
        await self.sync()

    async def sync(self) -> None:
        """Everything sent before has been handled: an engine built-in answers after earlier frames."""
        await self.call("engine::workers::list", {})

    async def call(self, function_id: str, data: Any = None, **extra: Any) -> dict[str, Any]:
        """Invoke and return the whole ``invocationresult`` frame."""
        invocation_id = str(uuid.uuid4())
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._results[invocation_id] = future
        await self.send(
            {
                "type": "invokefunction",
                "invocation_id": invocation_id,
                "function_id": function_id,
                "data": data,
                **extra,
            }
        )
        return await asyncio.wait_for(future, WAIT)

    async def result(self, function_id: str, data: Any = None) -> Any:
        frame = await self.call(function_id, data)
        assert "error" not in frame, frame
        return frame.get("result")

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                frame = json.loads(raw)
                if frame.get("type") == "invocationresult":
                    future = self._results.pop(frame["invocation_id"], None)
                    if future is not None and not future.done():
                        future.set_result(frame)
                elif frame.get("type") == "invokefunction":
                    task = asyncio.create_task(self._serve(frame))
                    self._running.add(task)
                    task.add_done_callback(self._running.discard)
        except ConnectionClosed:
            return

    async def _serve(self, frame: dict[str, Any]) -> None:
        answer: dict[str, Any] = {
            "type": "invocationresult",
            "invocation_id": frame["invocation_id"],
            "function_id": frame["function_id"],
        }
        try:
            answer["result"] = await self.handlers[frame["function_id"]](frame["data"])
        except Exception as exc:
            answer["error"] = {"code": "invocation_failed", "message": str(exc)}
        try:
            await self.send(answer)
        except ConnectionClosed:
            pass
