"""Count bounds (iii_engine.limits): connected workers, registrations per worker, services kept.

Before them a worker could connect, or register functions, triggers, trigger types and services, without end: the
engine grew until it ran out of memory. Each test fails on an engine without the bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from iii import InitOptions, ReconnectionConfig, register_worker
from iii_engine import Engine, EngineConfig

from .raw import RawWorker
from .raw import disconnect as _gone

pytestmark = [pytest.mark.timeout(20), pytest.mark.our_engine("engine-core test: our count limits")]


@pytest.fixture
async def small() -> AsyncIterator[Engine]:
    """An engine with tiny count limits."""
    config = EngineConfig(host="127.0.0.1", port=0, modules=[], max_workers=2, max_registrations_per_worker=3,
                          max_services=2)
    async with Engine(config=config) as running:
        yield running


async def _ids(worker: RawWorker) -> list[str]:
    result = await worker.result_of("engine::functions::list", {})
    return sorted(f["function_id"] for f in result["functions"] if not f["function_id"].startswith("engine::"))


async def test_a_worker_past_max_workers_is_closed_with_1013_and_gets_in_once_one_leaves(small: Engine) -> None:
    a = await RawWorker.connect(small.url)
    await RawWorker.connect(small.url)
    async with websockets.connect(small.url, compression=None) as third:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(third.recv(), 5)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1013, "too many workers connected (max_workers 2)")
    assert len(small.workers) == 2
    await _gone(small, a)
    fourth = await RawWorker.connect(small.url)  # room again
    assert fourth.worker_id in small.workers


async def test_the_sdk_reconnects_after_1013_and_registers_once_there_is_room(small: Engine) -> None:
    a = await RawWorker.connect(small.url)
    await RawWorker.connect(small.url)
    loop = asyncio.get_running_loop()
    refused, registered = asyncio.Event(), asyncio.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("refused a worker"):
                loop.call_soon_threadsafe(refused.set)

    seen = Seen()
    logging.getLogger("iii_engine.engine").addHandler(seen)
    small.add_functions_listener(lambda: registered.set() if "limited::echo" in small.registry.functions else None)
    backoff = ReconnectionConfig(initial_delay_ms=20, max_delay_ms=50, jitter_factor=0.0)
    sdk = await asyncio.to_thread(register_worker, small.url, InitOptions(reconnection_config=backoff,
                                                                           otel={"enabled": False}))
    try:
        sdk.register_function("limited::echo", lambda data: data)
        await asyncio.wait_for(refused.wait(), 5)
        assert "limited::echo" not in small.registry.functions
        await _gone(small, a)
        await asyncio.wait_for(registered.wait(), 5)
    finally:
        logging.getLogger("iii_engine.engine").removeHandler(seen)
        await asyncio.to_thread(sdk.shutdown)


async def test_registrations_past_the_limit_are_refused_and_logged_once(
        small: Engine, caplog: pytest.LogCaptureFixture) -> None:
    worker = await RawWorker.connect(small.url)
    caplog.set_level(logging.WARNING, "iii_engine.limits")
    for i in range(5):
        await worker.register(f"f::{i}")
    await worker.send({"type": "registertriggertype", "id": "tick", "description": "x"})
    await worker.send({"type": "registertrigger", "id": "t1", "trigger_type": "later", "function_id": "f::0",
                       "config": {}})
    await worker.register("f::0", description="again")  # what it holds may always be registered again
    await worker.sync()
    assert await _ids(worker) == ["f::0", "f::1", "f::2"]
    assert "tick" not in small.registry.trigger_types and small.registry.trigger_count(worker.worker_id) == 0
    assert small.registry.functions["f::0"].description == "again"
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refusals == [f"worker {worker.worker_id}: function 'f::3' refused: it holds 3 registrations "
                        "(max_registrations_per_worker 3); later refusals are counted and logged when it disconnects"]
    call = await worker.call("f::4", {})
    assert call["error"]["code"] == "function_not_found"
    await _gone(small, worker)
    assert any(r.getMessage() == f"worker {worker.worker_id}: 4 registrations were refused over the engine's "
               "count limits" for r in caplog.records)


async def test_unregistering_makes_room_and_each_kind_counts(small: Engine) -> None:
    worker = await RawWorker.connect(small.url)
    await worker.send({"type": "registertriggertype", "id": "tick", "description": "x"})
    await worker.send({"type": "registertrigger", "id": "t1", "trigger_type": "tock", "function_id": "f",
                       "config": {}})
    await worker.register("f::a")
    await worker.register("f::b")  # refused: 3 held
    await worker.sync()
    assert await _ids(worker) == ["f::a"]
    await worker.send({"type": "unregistertrigger", "id": "t1"})
    await worker.register("f::b")
    await worker.sync()
    assert await _ids(worker) == ["f::a", "f::b"]


async def test_services_past_max_services_are_refused_but_known_ones_replaced(small: Engine) -> None:
    worker = await RawWorker.connect(small.url)
    for name in ("one", "two", "three"):
        await worker.send({"type": "registerservice", "id": name, "name": name})
    await worker.send({"type": "registerservice", "id": "one-again", "name": "one"})
    await worker.sync()
    services = small.registry.services
    assert sorted(services) == ["one", "two"] and services["one"].id == "one-again"


async def test_a_replaced_trigger_type_is_no_longer_counted_for_its_first_owner(small: Engine) -> None:
    a = await RawWorker.connect(small.url)
    b = await RawWorker.connect(small.url)
    await a.send({"type": "registertriggertype", "id": "shared", "description": "a"})
    await a.sync()
    await b.send({"type": "registertriggertype", "id": "shared", "description": "b"})
    await b.sync()
    assert small.workers[a.worker_id].trigger_types == set()
    await _gone(small, a)  # a's disconnect must not delete b's type
    assert small.registry.trigger_types["shared"].owner == b.worker_id
    await _gone(small, b)
    assert "shared" not in small.registry.trigger_types


@pytest.mark.parametrize(("key", "value", "message"), [
    ("max_workers", 0, "max_workers: must be >= 1, got 0"),
    ("max_registrations_per_worker", "x", "max_registrations_per_worker: must be an integer, got 'x'"),
    ("max_services", -1, "max_services: must be >= 1, got -1"),
])
def test_bad_limits_are_refused_naming_the_key(key: str, value: object, message: str) -> None:
    from iii_engine.config import ConfigError, config_from_mapping
    with pytest.raises(ConfigError, match=f"^{message}$"):
        config_from_mapping({key: value})


async def test_engine_channels_create_past_channels_max_open_fails_with_channel_limit() -> None:
    from iii_engine.config import ChannelSettings

    config = EngineConfig(host="127.0.0.1", port=0, modules=[], channels=ChannelSettings(max_open=1))
    async with Engine(config=config) as engine:
        worker = await RawWorker.connect(engine.url)
        assert "writer" in await worker.result_of("engine::channels::create", {})
        refused = await worker.call("engine::channels::create", {})
        assert refused["error"] == {"code": "channel_limit", "message": "engine::channels::create: too many open "
                                    "channels (channels.max_open 1)"}
        engine.channels.orphan_grace_s = 0  # (at once: the grace is tests/unit/channels/test_relay.py's)
        await _gone(engine, worker)  # the worker's unattached channel goes with it
        other = await RawWorker.connect(engine.url)
        assert "writer" in await other.result_of("engine::channels::create", {})
