"""stream::update's per-call path (issue 10): no custom-function lookups for a stream no worker serves, and the
full checks again as soon as a worker registers one (a real engine, a real worker socket)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import websockets

from iii.wire import dumps, loads
from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.stream.api import StreamFunctions
from iii_engine.modules.stream.module import StreamModule

UPDATE = {"stream_name": "plain", "group_id": "g", "item_id": "i", "ops": [{"type": "increment", "path": "n", "by": 1}]}


@pytest.fixture
async def engine() -> Any:
    modules = [ModuleSpec("modules::stream::StreamModule", {"host": "127.0.0.1", "port": 0, "store_url": "memory://"})]
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=modules)) as running:
        yield running


def _functions(engine: Engine) -> StreamFunctions:
    module = engine.module("StreamModule") or next(m for m in engine.modules.values() if isinstance(m, StreamModule))
    assert isinstance(module, StreamModule) and module.functions is not None
    return module.functions


async def test_plain_update_looks_up_no_custom_function(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    looked_up: list[str] = []
    real = engine.has_function

    def counting(function_id: str) -> bool:
        looked_up.append(function_id)
        return real(function_id)

    monkeypatch.setattr(engine, "has_function", counting)
    assert await engine.invoke("stream::update", dict(UPDATE)) == {"old_value": None, "new_value": {"n": 1}}
    assert await engine.invoke("stream::update", dict(UPDATE)) == {"old_value": {"n": 1}, "new_value": {"n": 2}}
    assert looked_up == []  # before: stream::update(plain), stream::get(plain), stream::set(plain) per update


async def test_worker_stream_is_still_found(engine: Engine) -> None:
    """Once a worker serves ``custom``, its update function answers (the skipped lookups are back)."""
    async with websockets.connect(engine.url, compression=None) as worker:
        await worker.recv()  # workerregistered
        await worker.send(dumps({"type": "registerfunction", "id": "stream::update(custom)"}))
        await worker.send('{"type":"ping"}')
        assert loads(await worker.recv())["type"] == "pong"  # registration handled (frames are in order)

        async def serve() -> None:
            msg = loads(await worker.recv())
            assert msg["function_id"] == "stream::update(custom)"
            await worker.send(dumps({"type": "invocationresult", "invocation_id": msg["invocation_id"],
                                     "function_id": msg["function_id"],
                                     "result": {"old_value": None, "new_value": {"from": "worker"}}}))

        served = asyncio.create_task(serve())
        result = await engine.invoke("stream::update", {**UPDATE, "stream_name": "custom"}, timeout_s=10)
        await served
    assert result == {"old_value": None, "new_value": {"from": "worker"}}
    assert "custom" in _functions(engine)._served
