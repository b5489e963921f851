"""Attack A3 on 1bc0e66 (stream writes wait for room for their triggers, ``max_fired_calls``).

A change the engine publishes itself (a custom stream's, written by a worker's ``stream::set(NAME)``; also every
write through a store that does not publish its own events) went to the socket subscribers only after its
triggers had room: while full, the subscribers saw the change late, behind later ones, and when the wait ran out
(``fire_limit``: "done", the change was made) never at all, so their view of the stream stayed wrong. A store
write's event reaches them with the write, whatever its triggers wait for; a custom change's now does the same.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import ModuleSpec
from tests.integration.engine_streams.helpers import stream_module
from tests.integration.modules.test_fired_calls_bound import Slow, engine_with, until

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("our max_fired_calls bound")]

STREAM = ModuleSpec("modules::stream::StreamModule", {"host": "127.0.0.1", "port": 0})
ITEM = {"stream_name": "orders", "group_id": "g"}


async def custom_set(data: Any) -> Any:
    return {"old_value": None, "new_value": data["data"]}


async def test_a_custom_change_refused_for_room_still_reaches_the_socket_subscribers() -> None:
    held = Slow()
    async with engine_with(STREAM, limit=1, wait_ms=200) as engine, ModuleWorker(engine.url) as worker:
        await worker.function("stream::set(orders)", custom_set)
        await worker.function("held::on", held)
        await worker.trigger("held", "stream", "held::on", {"stream_name": "orders"})
        assert "error" not in await worker.call("stream::set", {**ITEM, "item_id": "a", "data": 1})
        await held.next()  # the one slot is held
        store = stream_module(engine).store
        assert store is not None
        async with store.watch("orders") as events:
            frame = await worker.call("stream::set", {**ITEM, "item_id": "b", "data": 2})
            assert frame["error"]["code"] == "fire_limit"
            assert frame["error"]["message"].startswith("stream::set of 'orders'/'g'/'b' (done): ")
            event = await asyncio.wait_for(anext(events), 5)  # the change was made: subscribers are told
            assert (event["id"], event["event"]) == ("b", {"type": "create", "data": 2})
        await held.let_go()


async def test_a_custom_change_waiting_for_room_reaches_the_socket_subscribers_at_once() -> None:
    held = Slow()
    async with engine_with(STREAM, limit=1, wait_ms=10_000) as engine, ModuleWorker(engine.url) as worker:
        await worker.function("stream::set(orders)", custom_set)
        await worker.function("held::on", held)
        await worker.trigger("held", "stream", "held::on", {"stream_name": "orders"})
        assert "error" not in await worker.call("stream::set", {**ITEM, "item_id": "a", "data": 1})
        await held.next()
        store = stream_module(engine).store
        assert store is not None
        async with store.watch("orders") as events:
            waiting = asyncio.create_task(worker.call("stream::set", {**ITEM, "item_id": "b", "data": 2}))
            await until(lambda: engine.fired_calls.waiting == 1)
            # as a store write's: the subscribers see the change while its trigger waits for room
            event = await asyncio.wait_for(anext(events), 5)
            assert event["id"] == "b"
            await held.let_go()
            assert "error" not in await waiting
            assert (await held.next())["id"] == "b"
            await held.let_go()
