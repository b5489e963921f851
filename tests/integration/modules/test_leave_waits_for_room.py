"""A ``stream:leave`` fired by a disconnect waits its turn for room under ``max_fired_calls`` (at most
``fire_wait_timeout_ms``) instead of being skipped at once. Before, a leave that found every slot taken was only
counted and logged: its handlers never heard that a client they had let join was gone."""

from __future__ import annotations

import pytest
from module_worker import ModuleWorker

from iii_engine import ModuleSpec
from tests.integration.engine_streams.helpers import SocketClient, stream_module
from tests.integration.modules.test_fired_calls_bound import Slow, engine_with, until

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("our max_fired_calls bound")]

STREAM = ModuleSpec("modules::stream::StreamModule", {"host": "127.0.0.1", "port": 0})


async def _joined(engine: object, sub_id: str) -> SocketClient:
    client = await SocketClient.connect(engine)  # type: ignore[arg-type]
    await client.join(sub_id, "rooms", "g")
    assert (await client.recv())["event"]["type"] == "sync"
    return client


async def test_a_leave_that_finds_no_room_waits_for_it_and_is_heard() -> None:
    leaves = Slow()
    async with engine_with(STREAM, limit=1, wait_ms=10_000) as engine, ModuleWorker(engine.url) as worker:
        await worker.function("rooms::left", leaves)
        await worker.trigger("left", "stream:leave", "rooms::left", {"stream_name": "rooms"})
        first, second = await _joined(engine, "a"), await _joined(engine, "b")
        await first.close()
        assert (await leaves.next())["subscription_id"] == "a"  # holds the one slot
        await second.close()
        await until(lambda: engine.fired_calls.waiting == 1)  # before: skipped at once, never heard
        await leaves.let_go()
        assert (await leaves.next())["subscription_id"] == "b"
        await leaves.let_go()
        assert engine.fired_calls.skipped == 0 and engine.fired_calls.refused == 0
        await until(lambda: engine.fired_calls.in_flight == 0)
        socket = stream_module(engine).socket
        assert socket is not None and not socket._clients


async def test_a_leave_still_without_room_after_fire_wait_timeout_is_refused_and_counted() -> None:
    leaves = Slow()
    async with engine_with(STREAM, limit=1, wait_ms=200) as engine, ModuleWorker(engine.url) as worker:
        await worker.function("rooms::left", leaves)
        await worker.trigger("left", "stream:leave", "rooms::left", {"stream_name": "rooms"})
        first, second = await _joined(engine, "a"), await _joined(engine, "b")
        await first.close()
        await leaves.next()
        await second.close()
        await until(lambda: engine.fired_calls.refused == 1)  # bounded: the wait ended, counted
        assert engine.fired_calls.waiting == 0
        await leaves.let_go()
        await until(lambda: engine.fired_calls.in_flight == 0)
