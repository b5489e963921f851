"""Answers over the engine's announced message size limit, dropped unsent, are logged one line each up to a burst, the
rest counted: an engine announcing a small limit and sending calls whose answers pass it had a worker write a warning
per frame (3,000 lines in an attack)."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from iii import register_worker

LIMIT = 4000
CALLS = 30


async def test_answers_over_the_engines_limit_are_a_burst_of_lines_and_a_count(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="iii")
    marker = asyncio.Event()

    def announce(connection: ServerConnection, request: Request, response: Response) -> Response:
        response.headers["X-III-Max-Message-Size"] = str(LIMIT)
        return response

    async def handle(ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "workerregistered", "worker_id": "w1"}))
        for i in range(CALLS):  # a missing function whose name makes its not-found answer too big to send
            await ws.send(json.dumps({"type": "invokefunction", "invocation_id": f"c{i}",
                                      "function_id": "x" * LIMIT + str(i), "data": {}}))
        await ws.send(json.dumps({"type": "invokefunction", "invocation_id": "last", "function_id": "marker",
                                  "data": {}}))
        async for raw in ws:
            if json.loads(raw).get("invocation_id") == "last":  # behind every dropped answer
                marker.set()

    async with serve(handle, "127.0.0.1", 0, process_response=announce) as server:
        port = server.sockets[0].getsockname()[1]
        client = await asyncio.to_thread(register_worker, f"ws://127.0.0.1:{port}")
        try:
            await asyncio.wait_for(marker.wait(), 20)
        finally:
            await asyncio.to_thread(client.shutdown)
    lines = [r for r in caplog.records if "over the engine's message size limit (4000 bytes)" in r.getMessage()]
    counted = [r.getMessage() for r in caplog.records if "more frame(s) over the engine's message size limit"
               in r.getMessage()]
    assert len(lines) == 10, len(lines)
    assert sum(int(line.split()[0]) for line in counted) == CALLS - 10, counted
