"""A raw worker for engine tests: plain ``websockets`` and JSON frames, no SDK."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import TYPE_CHECKING, Any

import websockets
from websockets.asyncio.client import ClientConnection

if TYPE_CHECKING:
    from iii_engine import Engine

TIMEOUT = 5.0


class RawWorker:
    """One control-socket connection; frames not yet asked for are kept in order."""

    def __init__(self, ws: ClientConnection, worker_id: str) -> None:
        self.ws = ws
        self.worker_id = worker_id
        self.backlog: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, url: str, **kwargs: Any) -> RawWorker:
        ws = await websockets.connect(url, compression=None, max_size=None, **kwargs)
        first = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert first["type"] == "workerregistered", first
        return cls(ws, first["worker_id"])

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def send_raw(self, raw: str | bytes) -> None:
        await self.ws.send(raw)

    async def recv(self, wait: float = TIMEOUT) -> dict[str, Any]:
        if self.backlog:
            return self.backlog.pop(0)
        frame = json.loads(await asyncio.wait_for(self.ws.recv(), wait))
        assert isinstance(frame, dict)
        return frame

    async def expect(self, kind: str, wait: float = TIMEOUT, **match: Any) -> dict[str, Any]:
        """The first frame of type ``kind`` whose keys equal ``match``; others stay in the backlog."""
        for i, frame in enumerate(self.backlog):
            if frame.get("type") == kind and all(frame.get(k) == v for k, v in match.items()):
                return self.backlog.pop(i)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), max(0.0, deadline - loop.time()))
            frame = json.loads(raw)
            if frame.get("type") == kind and all(frame.get(k) == v for k, v in match.items()):
                return frame  # type: ignore[no-any-return]
            self.backlog.append(frame)

    async def nothing_for(self, seconds: float) -> None:
        """Assert no frame arrives within ``seconds`` (used only to prove an absence)."""
        assert not self.backlog, self.backlog
        try:
            frame = await asyncio.wait_for(self.ws.recv(), seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected frame {frame!r}")

    async def register(self, function_id: str, **extra: Any) -> None:
        await self.send({"type": "registerfunction", "id": function_id, **extra})

    async def call(self, function_id: str, data: Any = None, **extra: Any) -> dict[str, Any]:
        """Invoke and return the whole ``invocationresult`` frame."""
        invocation_id = str(uuid.uuid4())
        await self.send({"type": "invokefunction", "invocation_id": invocation_id, "function_id": function_id,
                         "data": data, **extra})
        return await self.expect("invocationresult", invocation_id=invocation_id)

    async def result_of(self, function_id: str, data: Any = None) -> Any:
        """Invoke and return ``result``, failing on an error result."""
        frame = await self.call(function_id, data)
        assert "error" not in frame, frame
        return frame.get("result")

    async def serve_one(self, result: Any = None, **match: Any) -> dict[str, Any]:
        """Answer the next ``invokefunction`` (matching ``match``) with ``result``; returns the request."""
        request = await self.expect("invokefunction", **match)
        answer: dict[str, Any] = {"type": "invocationresult", "invocation_id": request["invocation_id"],
                                  "function_id": request["function_id"]}
        if result is not None:
            answer["result"] = result
        await self.send(answer)
        return request

    async def sync(self) -> None:
        """Round trip through the engine: every frame sent before this one has been handled."""
        await self.send({"type": "ping"})
        await self.expect("pong")

    async def close(self) -> None:
        await self.ws.close()


async def disconnect(engine: Engine, worker: RawWorker) -> None:
    """Close ``worker`` and wait until the engine finished its disconnect cleanup."""
    done = asyncio.Event()
    engine.add_worker_listener(lambda event, wid: done.set() if (event, wid) == (
        "worker_disconnected", worker.worker_id) else None)
    await worker.close()
    await asyncio.wait_for(done.wait(), 5)


def counters_left(engine: Engine) -> dict[str, int]:
    """The engine's call and fired-call counters that are not 0, by name (``<worker id>.call_bytes`` …): empty
    once everything a scenario started is over."""
    fired = engine.fired_calls
    counters = {"in_flight": fired.in_flight, "bytes_in_flight": fired.bytes_in_flight, "waiting": fired.waiting}
    for worker in engine.workers.values():
        counters |= {f"{worker.id}.calls": worker.calls, f"{worker.id}.builtin_calls": worker.builtin_calls,
                     f"{worker.id}.call_bytes": worker.call_bytes}
    return {name: count for name, count in counters.items() if count}
