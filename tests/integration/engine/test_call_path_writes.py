"""The routed call path's writes (issue 10): a frame for an idle socket leaves from the task that handles the frame
it answers, in one write, with no wake-up of the outbox's sender task and no corked write left for a later
event-loop turn; a caller that stops reading is still closed with 1008 at ``max_outbox_bytes``."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from iii import ws_fastpath
from iii_engine import Engine, EngineConfig
from iii_engine.workers import OVERFLOW_CLOSE_CODE

from .raw import RawWorker, disconnect


async def _answer(callee: RawWorker, result: Any) -> None:
    """Answer every call ``callee`` receives with ``result`` until its socket closes."""
    async for raw in callee.ws:
        msg = json.loads(raw)
        if msg.get("type") == "invokefunction":
            await callee.send({"type": "invocationresult", "invocation_id": msg["invocation_id"],
                               "function_id": msg["function_id"], "result": result})


async def test_calls_one_at_a_time_are_written_by_the_reader_without_a_later_turn(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    callee = await RawWorker.connect(engine.url)
    caller = await RawWorker.connect(engine.url)
    await callee.register("w::echo")
    await callee.sync()
    await caller.sync()
    corked: list[bytes] = []
    queued: list[str] = []
    real_cork = ws_fastpath._Corked.cork

    def cork(self: ws_fastpath._Corked, parts: tuple[bytes, ...]) -> None:
        corked.append(b"".join(parts))
        real_cork(self, parts)

    monkeypatch.setattr(ws_fastpath._Corked, "cork", cork)
    for worker in engine.workers.values():
        real_send = worker.outbox._send

        async def sending(text: str, real_send: Any = real_send) -> None:
            queued.append(text)  # written by the outbox's sender task (or a send that had to wait)
            await real_send(text)

        monkeypatch.setattr(worker.outbox, "_send", sending)
    answering = asyncio.create_task(_answer(callee, "pong"))
    try:
        ids = []
        for _ in range(20):
            frame = await caller.call("w::echo", {"n": 1})
            assert frame["result"] == "pong", frame
            ids.append(frame["invocation_id"])
    finally:
        answering.cancel()
    ours = [frame for frame in corked + [text.encode() for text in queued] if any(i.encode() in frame for i in ids)]
    # before: every invoke was corked for the end of the turn (a loop turn and a callback of its own), and every
    # result woke the caller's sender task, which corked it too: 80 records for 20 calls
    assert ours == []
    await disconnect(engine, caller)
    await disconnect(engine, callee)


@pytest.fixture
async def small_outbox() -> AsyncIterator[Engine]:
    config = EngineConfig(host="127.0.0.1", port=0, modules=[], max_outbox_bytes=256 * 1024)
    async with Engine(config=config) as running:
        yield running


async def test_results_for_a_caller_that_stops_reading_overflow_with_1008(small_outbox: Engine) -> None:
    engine = small_outbox
    callee = await RawWorker.connect(engine.url)
    await callee.register("w::big")
    await callee.sync()
    answering = asyncio.create_task(_answer(callee, "r" * 16 * 1024))
    caller = await websockets.connect(engine.url, compression=None, max_size=None, max_queue=1)
    try:
        first = json.loads(await caller.recv())
        state = engine.workers[first["worker_id"]]
        caller.transport.pause_reading()  # reads nothing from here on
        peak = 0
        for sent in range(2000):
            if state.outbox.overflowed:
                break
            await caller.send(json.dumps({"type": "invokefunction", "invocation_id": str(uuid.uuid4()),
                                          "function_id": "w::big", "data": None}))
            peak = max(peak, state.outbox.queued_bytes)
            if sent % 8 == 0:
                await asyncio.sleep(0.01)  # the callee answers, the engine routes
        assert state.outbox.overflowed, sent
        # the queue (counting the frame being written, also one the reader wrote itself) never held more than the
        # bound, and the caller finds the close code once it reads again
        assert peak <= 256 * 1024, peak
        caller.transport.resume_reading()
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await asyncio.wait_for(caller.recv(), 10)
        assert info.value.rcvd is not None and info.value.rcvd.code == OVERFLOW_CLOSE_CODE, info.value
    finally:
        answering.cancel()
        await caller.close()
    await disconnect(engine, callee)
