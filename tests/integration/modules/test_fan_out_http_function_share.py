"""A fan-out counts a call of an HTTP-invoked function (an external function: run by the engine, registered by a
worker) on the share of the worker that registered it, not on the engine's built-in functions' one.

Before (c05f0ac8), ``within_callee_shares`` counted such calls on the built-ins' share (``function_owner`` is
``None`` for any entry with a ``builtin``): another worker's 10 catch-all state triggers of
``engine::functions::list`` (``max_fired_calls`` 40, share 10) left a worker's HTTP function 0 of 3 writes (2,500 of
them under the default config: 0 of 3 too); with no attacker at all, 11 workers each with one HTTP function
subscribed to one topic got 30 of 33 publishes, the 11th none, the publisher told "(the engine's built-in
functions)" had its share in flight.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from tests.integration.engine.raw import RawWorker, counters_left
from tests.integration.modules.test_http_functions import LOCAL_RULES
from tests.polling import until

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("our max_fired_calls_per_worker share")]

LIMIT = 40
SHARE = LIMIT // 4  # the default share: a quarter of max_fired_calls
WRITES = 3
HTTP = ModuleSpec("modules::http_functions::HttpFunctionsModule", {"security": LOCAL_RULES})


@pytest.fixture
async def hooks() -> AsyncIterator[tuple[str, dict[str, int]]]:
    """A local endpoint ``<base>/hook/<name>`` counting the calls per name."""
    hits: dict[str, int] = {}

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        name = request.match_info["name"]
        hits[name] = hits.get(name, 0) + 1
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook/{name}", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/hook", hits
    finally:
        await runner.cleanup()


def engine_with(module: str, limit: int | None) -> Engine:
    extra: dict[str, Any] = {"max_fired_calls": limit} if limit else {}
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, fire_wait_timeout_ms=1_000, **extra,
                                      modules=[ModuleSpec(module), HTTP]))


@pytest.mark.parametrize(("flood", "limit"), [(SHARE, LIMIT), (LIMIT + 1, LIMIT), (2_500, None)])
async def test_an_http_function_trigger_is_not_crowded_out_by_another_workers_builtin_triggers(
        hooks: tuple[str, dict[str, int]], flood: int, limit: int | None) -> None:
    base, hits = hooks
    async with engine_with("modules::state::StateModule", limit) as engine, ModuleWorker(engine.url) as attacker:
        share = engine.fired_calls.callee_limit
        for i in range(flood):
            await attacker.send({"type": "registertrigger", "id": f"a-{i}", "trigger_type": "state",
                                 "function_id": "engine::functions::list", "config": {}})
        await attacker.sync()
        victim = await RawWorker.connect(engine.url)
        await victim.register("v.hook", invocation={"url": f"{base}/v"})
        await victim.send({"type": "registertrigger", "id": "v-t", "trigger_type": "state",
                           "function_id": "v.hook", "config": {"scope": "orders"}})
        await victim.sync()
        for value in range(WRITES):
            frame = await victim.call("state::set", {"scope": "orders", "key": "o1", "value": value})
            assert "error" not in frame, frame
        # before: 0 of 3 (the built-ins' share filled by the attacker's triggers, the HTTP function's call past it)
        await until(lambda: hits.get("v", 0) == WRITES)
        await until(lambda: not counters_left(engine))
        stats = engine.fired_calls.stats()
        assert stats["refused"] == 0
        assert stats["skipped_callee_share"] == WRITES * max(0, flood - share)
        assert stats["busiest_callee"] == 0  # every place taken is back
        await victim.close()


async def test_workers_http_subscribers_past_one_share_each_get_every_publish(
        hooks: tuple[str, dict[str, int]]) -> None:
    """11 honest workers, each with its own HTTP function subscribed to one topic."""
    base, hits = hooks
    async with engine_with("modules::pubsub::PubSubModule", LIMIT) as engine:
        workers = [await RawWorker.connect(engine.url) for _ in range(SHARE + 1)]
        for n, worker in enumerate(workers):
            await worker.register(f"w{n}.hook", invocation={"url": f"{base}/{n}"})
            await worker.send({"type": "registertrigger", "id": f"t{n}", "trigger_type": "subscribe",
                               "function_id": f"w{n}.hook", "config": {"topic": "orders"}})
            await worker.sync()
        publisher = await RawWorker.connect(engine.url)
        for i in range(WRITES):
            frame = await publisher.call("publish", {"topic": "orders", "data": i})
            # before: "1 of the trigger-fired calls it set off not made ... worker (the engine's built-in functions)"
            assert "error" not in frame, frame
        await until(lambda: sum(hits.values()) == WRITES * len(workers))
        assert hits == {str(n): WRITES for n in range(len(workers))}  # before: worker 10 got 0 of 3
        await until(lambda: not counters_left(engine))
        assert engine.fired_calls.stats()["skipped_callee_share"] == 0
        for worker in (*workers, publisher):
            await worker.close()


async def test_one_workers_http_subscribers_count_on_its_own_share(hooks: tuple[str, dict[str, int]]) -> None:
    """A worker's HTTP functions past its share are left out, and the publisher is told that worker's id."""
    base, hits = hooks
    async with engine_with("modules::pubsub::PubSubModule", LIMIT) as engine:
        worker = await RawWorker.connect(engine.url)
        for n in range(SHARE + 1):
            await worker.register(f"w.hook{n}", invocation={"url": f"{base}/{n}"})
            await worker.send({"type": "registertrigger", "id": f"t{n}", "trigger_type": "subscribe",
                               "function_id": f"w.hook{n}", "config": {"topic": "orders"}})
        await worker.sync()
        publisher = await RawWorker.connect(engine.url)
        frame = await publisher.call("publish", {"topic": "orders", "data": 1})
        message = frame["error"]["message"]
        assert "1 of the trigger-fired calls it set off not made" in message, message
        assert worker.worker_id in message, message  # before: "(the engine's built-in functions)"
        await until(lambda: sum(hits.values()) == SHARE)
        await until(lambda: not counters_left(engine))
        assert engine.fired_calls.stats()["skipped_callee_share"] == 1
        await worker.close()
        await publisher.close()
