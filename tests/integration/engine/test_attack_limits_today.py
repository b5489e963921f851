"""Attacks on the engine's count limits (iii_engine.limits, 3493a4b): ways past them, counts drifting from what a
worker really holds, and the 1013 refusal against a peer that never answers the close.

Each test names what it broke before the fix beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bench.chaos.common import RawWebSocket
from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.limits import CountLimits
from iii_engine.modules.http.functions import HttpFunctionsModule

from .raw import RawWorker
from .raw import disconnect as _gone

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("engine-core test: our count limits")]

HTTP_FUNCTIONS = "modules::http_functions::HttpFunctionsModule"
LOCAL_RULES = {"url_allowlist": ["127.0.0.1"], "block_private_ips": False, "require_https": False}
HOOK = {"url": "http://127.0.0.1:9/hook"}  # registering never calls it


async def _engine(**limits: Any) -> Engine:
    config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(HTTP_FUNCTIONS, {"security": LOCAL_RULES})],
                          **limits)
    engine = Engine(config=config)
    await engine.start()
    return engine


@pytest.fixture
async def small() -> AsyncIterator[Engine]:
    engine = await _engine(max_workers=3, max_registrations_per_worker=3, max_services=2)
    yield engine
    await engine.stop()


def _truth(engine: Engine, worker_id: str) -> int:
    """What ``worker_id`` makes the engine hold, counted from the registry's tables (not the limit's counters)."""
    registry = engine.registry
    functions = sum(1 for e in registry.functions.values() if e.owner == worker_id)
    shadowed = sum(1 for stack in registry._shadowed.values() for owner in stack if owner == worker_id)
    types = sum(1 for t in registry.trigger_types.values() if t.owner == worker_id)
    triggers = sum(1 for t in [*registry.triggers.values(), *registry.pending_triggers.values()]
                   if t.registrant == worker_id)
    replaced = sum(1 for kept in registry._shadowed_triggers.values() for registrant in kept if registrant == worker_id)
    return functions + shadowed + types + triggers + replaced


def _held(engine: Engine, worker_id: str) -> int:
    return CountLimits.held(engine.workers[worker_id], engine.registry)


async def test_an_implicit_service_made_explicit_counts_against_max_services(small: Engine) -> None:
    # before: registerservice on a function's implicit service was "replacing a known one", never refused, and
    # the explicit service it left outlived the function: one connection piled up services without end
    worker = await RawWorker.connect(small.url)
    for i in range(6):
        await worker.register(f"s{i}::f")
        await worker.send({"type": "registerservice", "id": f"s{i}", "name": f"s{i}"})
        await worker.send({"type": "unregisterfunction", "id": f"s{i}::f"})
    await worker.sync()
    assert sorted(small.registry.services) == ["s0", "s1"]
    assert small.registry.explicit_services == 2


async def test_implicit_services_do_not_use_up_max_services(small: Engine) -> None:
    # before: two workers' function prefixes (implicit services, bounded through the functions) filled max_services
    # and every explicit registerservice of any worker was refused
    worker = await RawWorker.connect(small.url)
    await worker.register("a::f")
    await worker.register("b::f")
    await worker.send({"type": "registerservice", "id": "orders", "name": "orders"})
    await worker.sync()
    assert small.registry.services["orders"].explicit
    # an explicit service emptied of its functions goes (as before) and gives its place back
    await worker.send({"type": "registerservice", "id": "a", "name": "a"})
    await worker.register("a::g")
    await worker.send({"type": "unregisterfunction", "id": "a::g"})
    await worker.send({"type": "registerservice", "id": "c", "name": "c"})
    await worker.sync()
    assert sorted(n for n, s in small.registry.services.items() if s.explicit) == ["c", "orders"]
    assert small.registry.explicit_services == 2


@pytest.mark.parametrize("first_http", [True, False])
async def test_a_function_switched_between_http_and_worker_counts_once_and_leaves_no_endpoint(
        small: Engine, first_http: bool) -> None:
    # before: the id went into both of the worker's sets (counted twice), and the HTTP endpoint of an id that
    # became a worker function stayed in the HTTP functions module after unregister or disconnect (one leaked
    # endpoint per cycle, however low the limit)
    http = small.modules["http_functions"]
    assert isinstance(http, HttpFunctionsModule)
    worker = await RawWorker.connect(small.url)
    for round_ in range(3):
        first, second = ({"invocation": HOOK}, {}) if first_http else ({}, {"invocation": HOOK})
        await worker.register(f"f::{round_}", **first)
        await worker.register(f"f::{round_}", **second)
        await worker.sync()
        assert _held(small, worker.worker_id) == _truth(small, worker.worker_id) == 1
        assert (f"f::{round_}" in http.functions) is (not first_http)
        await worker.send({"type": "unregisterfunction", "id": f"f::{round_}"})
        await worker.sync()
        assert _held(small, worker.worker_id) == 0
    assert http.functions == {}
    await worker.register("last", **({"invocation": HOOK} if first_http else {}))
    await worker.register("last", **({} if first_http else {"invocation": HOOK}))
    await _gone(small, worker)
    assert http.functions == {} and "last" not in small.registry.functions


async def test_overwritten_functions_still_count_for_their_first_owner(small: Engine) -> None:
    # before: a function another worker overwrote left its first owner's count while the engine kept it to
    # restore (E5); the first owner registered as many again and held twice the limit once the other left
    a = await RawWorker.connect(small.url)
    b = await RawWorker.connect(small.url)
    for i in range(3):
        await a.register(f"f::{i}")
    await a.sync()
    for i in range(3):
        await b.register(f"f::{i}")
    await b.sync()
    for i in range(3):
        await a.register(f"g::{i}")  # refused: a still holds 3 (overwritten, kept for it)
    await a.register("f::0", description="a again")  # what it holds may always be registered again
    await a.sync()
    assert "g::0" not in small.registry.functions
    assert small.registry.functions["f::0"].owner == a.worker_id
    await _gone(small, b)
    assert sorted(small.workers[a.worker_id].functions) == ["f::0", "f::1", "f::2"]
    assert _held(small, a.worker_id) == _truth(small, a.worker_id) == 3


async def _random_op(rng: random.Random, worker: RawWorker) -> None:
    fid, tid, ttype = f"svc::f{rng.randrange(6)}", f"t{rng.randrange(6)}", f"type{rng.randrange(4)}"
    op = rng.randrange(8)
    if op == 0:
        await worker.register(fid, **({"invocation": HOOK} if rng.random() < 0.3 else {}))
    elif op == 1:
        await worker.send({"type": "unregisterfunction", "id": fid})
    elif op == 2:
        await worker.send({"type": "registertriggertype", "id": ttype, "description": "x"})
    elif op == 3:
        await worker.send({"type": "unregistertriggertype", "id": ttype})
    elif op in (4, 5):
        await worker.send({"type": "registertrigger", "id": tid, "trigger_type": ttype, "function_id": fid,
                           "config": {}})
    elif op == 6:
        await worker.send({"type": "unregistertrigger", "id": tid})
    else:
        await worker.send({"type": "registerservice", "id": fid.split("::")[0], "name": ""})


@pytest.mark.parametrize("seed", range(8))
async def test_the_count_the_limit_sees_is_what_each_worker_holds_after_random_sequences(seed: int) -> None:
    # model check: after random registrations, overwrites, unregistrations and disconnects (E5 restores), the
    # limit's count of each worker equals the registry's truth and never passes the limit
    rng = random.Random(seed)
    engine = await _engine(max_workers=4, max_registrations_per_worker=5, max_services=3)
    try:
        workers = [await RawWorker.connect(engine.url) for _ in range(3)]
        for _ in range(40):
            for _ in range(8):
                await _random_op(rng, rng.choice(workers))
            if rng.random() < 0.15:
                gone = rng.randrange(len(workers))
                await _gone(engine, workers[gone])
                workers[gone] = await RawWorker.connect(engine.url)
            for worker in workers:
                await worker.sync()
            for worker in workers:
                held = _held(engine, worker.worker_id)
                assert held == _truth(engine, worker.worker_id)
                assert held <= 5
            assert engine.registry.explicit_services == sum(s.explicit for s in engine.registry.services.values())
            assert engine.registry.explicit_services <= 3
        for worker in workers:
            await _gone(engine, worker)
        assert _user(engine) == ([], [], [], [])
    finally:
        await engine.stop()


def _user(engine: Engine) -> tuple[list[str], list[str], list[str], list[str]]:
    registry = engine.registry
    return ([f for f, e in registry.functions.items() if e.owner is not None],
            [t for t, e in registry.trigger_types.items() if e.owner is not None],
            [*registry.triggers, *registry.pending_triggers],
            [s for s, e in registry.services.items() if not e.explicit])


async def _until_dropped(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError):
        while await reader.read(1 << 16):
            pass


async def test_a_refused_peer_that_never_answers_the_close_is_dropped_within_the_deadline() -> None:
    # before: the refusal waited websockets' 10 s close timeout for each such peer, uncounted by max_workers
    engine = await _engine(max_workers=1)
    try:
        await RawWorker.connect(engine.url)
        silent = await RawWebSocket.connect(engine.port, drain=False)
        head = await asyncio.wait_for(silent.reader.readexactly(4), 5)
        assert (head[0], int.from_bytes(head[2:4], "big")) == (0x88, 1013)  # the close frame; never answered
        await asyncio.wait_for(_until_dropped(silent.reader), 6)
        silent.writer.transport.abort()
    finally:
        await engine.stop()


async def test_a_trigger_id_moved_to_another_type_leaves_nothing_behind_on_the_first() -> None:
    # before: the registry replaced the entry but its first type was never told: each id moved from cron to another
    # type left a cron schedule running (firing its function) that no listing, unregister or disconnect reached,
    # so a worker holding one registration piled up schedules without end
    config = EngineConfig(host="127.0.0.1", port=0, max_registrations_per_worker=1,
                          modules=[ModuleSpec("modules::cron::CronModule", {})])
    async with Engine(config=config) as engine:
        cron = engine.modules["cron"]
        worker = await RawWorker.connect(engine.url)
        other = await RawWorker.connect(engine.url)
        await other.send({"type": "registertriggertype", "id": "mine", "description": "x"})
        await other.sync()
        for i, second in enumerate(["not-yet-known", "mine", "not-yet-known"]):
            await worker.send({"type": "registertrigger", "id": f"t{i}", "trigger_type": "cron", "function_id": "f",
                               "config": {"expression": "0 0 0 1 1 *"}})
            await worker.sync()
            assert f"t{i}" in cron._schedules  # type: ignore[attr-defined]
            await worker.send({"type": "registertrigger", "id": f"t{i}", "trigger_type": second, "function_id": "f",
                               "config": {}})
            await worker.send({"type": "unregistertrigger", "id": f"t{i}"})
            await worker.sync()
        assert cron._schedules == {}  # type: ignore[attr-defined]
        # and the other way: the worker type's owner is told the trigger left it
        await worker.send({"type": "registertrigger", "id": "back", "trigger_type": "mine", "function_id": "f",
                           "config": {}})
        await other.expect("registertrigger", id="back")
        await worker.send({"type": "registertrigger", "id": "back", "trigger_type": "cron", "function_id": "f",
                           "config": {"expression": "0 0 0 1 1 *"}})
        await other.expect("unregistertrigger", id="back")
        assert engine.registry.triggers["back"].trigger_type == "cron"
