"""Attack on the REST API's stop (f9544fe, 415e736): a request still on its way to a worker whose queue is full."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.http.api import RestApiModule
from tests.integration.engine.raw import RawWorker

pytestmark = pytest.mark.our_engine("configures the REST API module and stops our engine")


async def test_stop_answers_a_request_waiting_for_room_in_the_workers_queue() -> None:
    spec = ModuleSpec("modules::api::RestApiModule", {"host": "127.0.0.1", "port": 0, "default_timeout": 20_000})
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[spec]))
    await engine.start()
    stopped = False
    try:
        module = engine.module("http_api")
        assert isinstance(module, RestApiModule)
        worker = await RawWorker.connect(engine.url)
        await worker.register("slow::reader")
        await worker.send({"type": "registertrigger", "id": "t", "trigger_type": "http", "function_id": "slow::reader",
                           "config": {"api_path": "slow", "http_method": "GET"}})
        await worker.sync()
        # The worker stopped reading and its queue is full: a new call waits for room (as the outbox does then).
        outbox = engine.workers[worker.worker_id].outbox
        waiting = asyncio.Event()
        never = asyncio.Event()

        async def full(size: int = 0, call: object = None) -> None:
            waiting.set()
            await never.wait()

        outbox.wait_for_room = full  # type: ignore[method-assign]
        outbox.must_wait = lambda size=0: True  # type: ignore[method-assign]
        async with httpx.AsyncClient(base_url=module.base_url, timeout=20) as client:
            response: asyncio.Future[Any] = asyncio.ensure_future(client.get("/slow"))
            await asyncio.wait_for(waiting.wait(), 5)
            loop = asyncio.get_running_loop()
            started = loop.time()
            await asyncio.wait_for(engine.stop(), 15)
            stopped = True
            took = loop.time() - started
            answer = await asyncio.wait_for(response, 5)
        assert took < 5, f"stop waited {took:.1f} s for a request stuck on its way to the worker"
        assert answer.status_code == 503, answer.text
        assert not engine.invocations.pending
        await worker.close()
    finally:
        if not stopped:
            await engine.stop()
