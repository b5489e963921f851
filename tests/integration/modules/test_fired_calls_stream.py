"""Stream writes wait for room for their triggers (``max_fired_calls``) like state writes and publishes.

Before, a stream write whose triggers found the engine full skipped them (counted and logged): the write
answered success while its triggers never ran. Now it waits its turn, at most ``fire_wait_timeout_ms``, and
otherwise fails with ``fire_limit`` saying the change was made and which triggers it did not reach.
"""

from __future__ import annotations

import asyncio

import pytest
from module_worker import ModuleWorker

from iii_engine import ModuleSpec
from tests.integration.modules.test_fired_calls_bound import Slow, engine_with, until, worker_holding

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("our max_fired_calls bound")]

STREAM = ModuleSpec("modules::stream::StreamModule", {"host": "127.0.0.1", "port": 0})
ITEM = {"stream_name": "orders", "group_id": "g"}


async def test_a_stream_write_waits_for_its_triggers_and_fails_with_fire_limit_after_writing() -> None:
    held = Slow()
    async with engine_with(STREAM, limit=1, wait_ms=200) as engine, ModuleWorker(engine.url) as worker:
        await worker.function("held::on", held)
        await worker.trigger("held", "stream", "held::on", {"stream_name": "orders"})
        assert "error" not in await worker.call("stream::set", {**ITEM, "item_id": "a", "data": 1})
        await held.next()
        frame = await worker.call("stream::set", {**ITEM, "item_id": "b", "data": 2})
        assert frame["error"] == {"code": "fire_limit", "message": (
            "stream::set of 'orders'/'g'/'b' (done): none of its 1 stream trigger handlers reached: no room within "
            "200 ms (fire_wait_timeout_ms): 1 trigger-fired calls in flight (max_fired_calls 1), 1 of them to worker "
            f"{worker_holding(engine, 'held::on')} (max_fired_calls_per_worker 1), 1 to held::on")}
        assert await worker.result("stream::get", {**ITEM, "item_id": "b"}) == 2  # made; only its trigger not run
        assert engine.fired_calls.stats()["skipped"] == 0  # refused and told, not skipped unseen
        # with room coming, each kind of write waits for it and then reaches its trigger
        for function_id, data in (("stream::update", {**ITEM, "item_id": "a",
                                                      "ops": [{"type": "increment", "path": "n", "by": 1}]}),
                                  ("stream::delete", {**ITEM, "item_id": "b"}),
                                  ("stream::send", {**ITEM, "type": "note", "data": {"x": 1}})):
            waiting = asyncio.create_task(worker.call(function_id, data))
            await until(lambda: engine.fired_calls.waiting == 1)
            await held.let_go()
            assert "error" not in await waiting, function_id
            await held.next()
        await held.let_go()


async def test_a_stream_send_refused_for_room_reaches_no_socket_and_says_so() -> None:
    held = Slow()
    async with engine_with(STREAM, limit=1, wait_ms=100) as engine, ModuleWorker(engine.url) as worker:
        await worker.function("held::on", held)
        await worker.trigger("held", "stream", "held::on", {"stream_name": "orders"})
        await worker.call("stream::send", {**ITEM, "type": "note", "data": 1})
        await held.next()
        frame = await worker.call("stream::send", {**ITEM, "type": "note", "data": 2})
        assert frame["error"]["code"] == "fire_limit"
        assert frame["error"]["message"].startswith("stream::send of 'orders'/'g'/None (not sent): ")
        await held.let_go()
