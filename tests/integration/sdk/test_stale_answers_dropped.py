"""Answers to an engine's requests (invocation results) still queued when their connection was lost are not sent on
the next connection: the engine ended those requests with the connection, and a hostile or stalled engine that made
a worker queue thousands of them had them all sent, out of date, to the next engine ahead of its own frames."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from iii import register_worker
from tests.polling import until

BIG = "x" * (1024 * 1024)
CALLS = 48  # 48 MiB of answers: more than the kernel's buffers on the way hold


async def test_answers_queued_for_a_lost_connection_are_not_sent_on_the_next(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="iii")
    connections: list[ServerConnection] = []
    second: list[dict[str, Any]] = []
    marker, stalled = asyncio.Event(), asyncio.Event()

    async def handle(ws: ServerConnection) -> None:
        connections.append(ws)
        await ws.send(json.dumps({"type": "workerregistered", "worker_id": f"w{len(connections)}"}))
        if len(connections) == 1:
            async for raw in ws:
                if json.loads(raw).get("type") == "registerfunction":
                    break
            for i in range(CALLS):  # then reads nothing: the answers pile up in the worker's queue
                await ws.send(json.dumps({"type": "invokefunction", "invocation_id": f"old-{i}",
                                          "function_id": "big", "data": {}}))
            await stalled.wait()  # the results fill the worker's queue: these answers queue behind them
            for i in range(20):  # answered best-effort (droppable): queued apart from the results
                await ws.send(json.dumps({"type": "invokefunction", "invocation_id": f"missing-{i}",
                                          "function_id": "nosuch", "data": {}}))
                await ws.send(json.dumps({"type": "registertrigger", "id": f"t{i}", "trigger_type": "nobody",
                                          "function_id": "f"}))
            await ws.wait_closed()
            return
        async for raw in ws:
            frame = json.loads(raw)
            second.append(frame)
            if frame.get("type") == "invokefunction" and frame.get("function_id") == "marker":
                marker.set()

    async with serve(handle, "127.0.0.1", 0, max_size=None, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        client = await asyncio.to_thread(register_worker, f"ws://127.0.0.1:{port}")
        try:
            client.register_function("big", lambda data: BIG)
            conn: Any = client._conn
            await until(lambda: len(conn._backlog) >= 4, within=20)  # results queued behind the stalled socket
            stalled.set()
            await until(lambda: conn._best_effort >= 40, within=20)  # and the best-effort answers behind them
            assert connections[0].transport is not None
            connections[0].transport.abort()
            await until(lambda: len(connections) == 2, within=20)
            await asyncio.to_thread(client.trigger, {"function_id": "marker", "payload": {},
                                                     "action": {"type": "void"}})
            await asyncio.wait_for(marker.wait(), 20)
        finally:
            await asyncio.to_thread(client.shutdown)
    # before: the old connection's answers (old-*, then missing-* and t*) went out on the new one, ahead of the marker
    assert not [f for f in second if f.get("type") in ("invocationresult", "triggerregistrationresult")]
    dropped = [r.getMessage() for r in caplog.records if "still queued when it was lost" in r.getMessage()]
    assert len(dropped) == 1, dropped
