"""Byte bounds on registrations (iii_engine.limits): ``max_registration_bytes_per_worker`` and ``max_service_bytes``.

Before them only counts bounded what a worker's registrations kept: 600 pending triggers with 3 MB configs took an
engine from 108 to 1,830 MB while their worker stayed connected, and explicit services of 4 MB names could be kept
100,000 at a time. The books are kept by the registry, where every table changes; the random walk below checks
them against a recount after every step.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator

import pytest

from iii.iii_types import TriggerInfo
from iii_engine import Engine, EngineConfig

from .raw import RawWorker
from .raw import disconnect as _gone

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("engine-core test: our registration byte bounds")]

BUDGET = 40_000
BIG = "x" * 5_000  # a frame of a little over 5 KB, held as ~11.5 KB: three fit in BUDGET, four do not


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    config = EngineConfig(host="127.0.0.1", port=0, modules=[], max_registration_bytes_per_worker=BUDGET,
                          max_service_bytes=BUDGET)
    async with Engine(config=config) as running:
        yield running


def _trigger(trigger_id: str, pad: str = BIG, trigger_type: str = "later") -> dict[str, object]:
    return {"type": "registertrigger", "id": trigger_id, "trigger_type": trigger_type, "function_id": "f::a",
            "config": {"pad": pad}}


def _books_agree(engine: Engine) -> None:
    registry = engine.registry
    assert registry.audit_bytes() == {owner: registry.bytes_held(owner) for owner in registry.audit_bytes()}
    assert registry._bytes == registry.audit_bytes()  # nothing kept for what the tables no longer hold


async def test_triggers_past_the_byte_budget_are_refused_and_named(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "iii_engine.limits")
    worker = await RawWorker.connect(engine.url)
    for i in range(6):
        await worker.send(_trigger(f"t{i}"))
    await worker.sync()
    kept = sorted(t.id for t in engine.registry.triggers_of_registrant(worker.worker_id))
    assert kept == ["t0", "t1", "t2"]
    assert 30_000 < engine.registry.bytes_held(worker.worker_id) <= BUDGET
    refusal = next(r.getMessage() for r in caplog.records if "refused" in r.getMessage())
    assert refusal.startswith(f"worker {worker.worker_id}: trigger 't3' (")
    assert f"(max_registration_bytes_per_worker {BUDGET})" in refusal
    other = await RawWorker.connect(engine.url)  # a budget per worker: another one is not held back
    await other.send(_trigger("o1"))
    await other.sync()
    assert engine.registry.find_trigger("o1") is not None
    await _gone(engine, worker)
    assert engine.registry.bytes_held(worker.worker_id) == 0
    _books_agree(engine)


async def test_a_re_registration_may_shrink_or_keep_its_size_but_not_grow_past_the_budget(engine: Engine) -> None:
    worker = await RawWorker.connect(engine.url)
    for i in range(3):
        await worker.send(_trigger(f"t{i}"))
    await worker.send(_trigger("t0", pad="y" * 5_000))  # same size: fits in place of the old one
    await worker.send(_trigger("t1", pad="y" * 12_000))  # grows by ~14 KB past the budget: refused, the old one stays
    await worker.sync()
    assert engine.registry.find_trigger("t0").config == {"pad": "y" * 5_000}  # type: ignore[union-attr]
    assert engine.registry.find_trigger("t1").config == {"pad": BIG}  # type: ignore[union-attr]
    await worker.send(_trigger("t2", pad="small"))  # shrinks: room for one more big one
    await worker.send(_trigger("t3"))
    await worker.sync()
    assert engine.registry.find_trigger("t3") is not None
    _books_agree(engine)


async def test_functions_and_trigger_types_count_and_an_overwritten_function_still_counts_for_its_owner(
        engine: Engine) -> None:
    a = await RawWorker.connect(engine.url)
    b = await RawWorker.connect(engine.url)
    await a.register("f::one", description=BIG)
    await a.send({"type": "registertriggertype", "id": "tick", "description": BIG})
    await a.sync()
    await b.register("f::one", description="b's")  # a's registration is kept to come back when b goes (E5)
    await b.sync()
    await a.register("f::two", description=BIG)
    await a.register("f::three", description=BIG)  # refused: a's kept f::one still counts
    await a.sync()
    assert "f::two" in engine.registry.functions and "f::three" not in engine.registry.functions
    _books_agree(engine)
    await _gone(engine, b)  # a's f::one is back: same bytes, same owner
    assert engine.registry.functions["f::one"].owner == a.worker_id
    _books_agree(engine)
    await a.send({"type": "unregistertriggertype", "id": "tick"})
    await a.register("f::three", description=BIG)  # the type's bytes are free again
    await a.sync()
    assert "f::three" in engine.registry.functions
    _books_agree(engine)


async def test_explicit_services_are_bounded_in_bytes_for_the_whole_engine(engine: Engine) -> None:
    worker = await RawWorker.connect(engine.url)
    for name in ("one", "two", "three", "four"):
        await worker.send({"type": "registerservice", "id": name, "name": name, "parent_service_id": BIG})
    await worker.sync()
    assert sorted(engine.registry.services) == ["one", "three", "two"]
    await _gone(engine, worker)  # explicit services outlive their worker: a new connection gets no new room
    again = await RawWorker.connect(engine.url)
    await again.send({"type": "registerservice", "id": "five", "name": "five", "parent_service_id": BIG})
    await again.send({"type": "registerservice", "id": "one", "name": "one"})  # replacing one with less fits
    await again.sync()
    assert "five" not in engine.registry.services and engine.registry.services["one"].parent_service_id is None
    await again.send({"type": "registerservice", "id": "five", "name": "five", "parent_service_id": BIG})
    await again.sync()
    assert "five" in engine.registry.services


async def test_the_books_match_a_recount_through_a_random_walk_of_registrations(engine: Engine) -> None:
    """Overwrites (E5), replaced triggers (E12), type takeovers and refusals (E10, E11), pending triggers (E2) and
    disconnects, in random order from three workers: after each step the books equal a recount of the tables."""
    rng = random.Random(7)
    workers = [await RawWorker.connect(engine.url) for _ in range(3)]
    for step in range(300):
        i = rng.randrange(len(workers))
        worker, pad = workers[i], "p" * rng.choice((10, 300, 3_000))
        action = rng.randrange(8)
        if action == 0:
            await worker.register(f"f::{rng.randrange(4)}", description=pad)
        elif action == 1:
            await worker.send({"type": "unregisterfunction", "id": f"f::{rng.randrange(4)}"})
        elif action == 2:
            await worker.send(_trigger(f"t{rng.randrange(5)}", pad, rng.choice(("tick", "tock", "later"))))
        elif action == 3:
            await worker.send({"type": "unregistertrigger", "id": f"t{rng.randrange(5)}"})
        elif action == 4:
            await worker.send({"type": "registertriggertype", "id": rng.choice(("tick", "tock")), "description": pad})
        elif action == 5:
            await worker.send({"type": "unregistertriggertype", "id": rng.choice(("tick", "tock"))})
        elif action == 6:
            await worker.send({"type": "triggerregistrationresult", "id": f"t{rng.randrange(5)}",
                               "trigger_type": rng.choice(("tick", "tock")), "function_id": "f::0",
                               "error": {"code": "no", "message": "refused"}})
        else:
            await _gone(engine, worker)
            workers[i] = await RawWorker.connect(engine.url)
        await workers[i].sync()
        assert engine.registry._bytes == engine.registry.audit_bytes(), f"step {step}, action {action}"
    for worker in workers:
        await _gone(engine, worker)
    assert engine.registry.audit_bytes() == {} and engine.registry._bytes == {}


@pytest.mark.parametrize("shape", [
    '"' + "x" * 200_000 + '"',
    "[" + ",".join(["{}"] * 50_000) + "]",
    "[" + ",".join(["[]"] * 50_000) + "]",
    "{" + ",".join(f'"k{i}":0' for i in range(30_000)) + "}",
    "[" + ",".join(["0.5"] * 50_000) + "]",
    "[" + ",".join(['{"type":"string","title":"t"}'] * 5_000) + "]",
    '"\U0001F600' + "x" * 200_000 + '"',
    '"\\ud83d\\ude00' + "x" * 200_000 + '"',
    "[" + ",".join(['"\u0109"'] * 50_000) + "]",
    "[" + ",".join(['"\U0001F600"'] * 50_000) + "]",
], ids=["string", "empty-objects", "empty-lists", "tiny-keys", "floats", "schema-like", "emoji-first", "escaped-emoji",
        "one-char-non-latin1", "one-char-emoji"])
def test_the_estimate_is_at_least_what_the_parsed_values_take(shape: str) -> None:
    """A budget of frame bytes let one worker hold ~23 MB per budget MiB with ``[{},{},…]`` (3 bytes of frame, ~72
    of objects each): the estimate must cover what parsing the frame keeps, whatever its shape."""
    import tracemalloc

    from iii.wire import loads
    from iii_engine.limits import retained_estimate

    frame = ('{"type":"registertrigger","id":"t","trigger_type":"x","function_id":"f","config":' + shape + "}")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = loads(frame)
        taken = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept["id"] == "t"
    assert retained_estimate(frame.encode()) >= taken


async def test_a_trigger_bound_while_its_registrant_left_is_withdrawn(engine: Engine) -> None:
    """Worker A's trigger replaced worker B's of the same id (E12). A leaves: its cleanup restores B's and the
    type's register of it waits (a Redis SUBSCRIBE, say) while B leaves too. Before, B's trigger was stored once
    the register returned, active for good with B gone (17 of 90 rounds with pub/sub on Redis)."""
    entered, release = asyncio.Event(), asyncio.Event()
    bound: dict[str, object] = {}  # what the type runs, by trigger id (a registration of an id replaces, as cron's)
    registered: list[object] = []

    class Slow:
        async def register(self, trigger: TriggerInfo) -> None:
            registered.append(trigger.config)
            if len(registered) == 3:  # B's, A's, then B's again once A is gone: wait here
                entered.set()
                await release.wait()
            bound[trigger.id] = trigger.config

        async def unregister(self, trigger: TriggerInfo) -> None:
            bound.pop(trigger.id, None)

    engine.register_trigger_type("slow", "waits to register", Slow())
    a, b = await RawWorker.connect(engine.url), await RawWorker.connect(engine.url)
    frame = {"type": "registertrigger", "id": "x", "trigger_type": "slow", "function_id": "f::a"}
    await b.send({**frame, "config": {"who": "b"}})
    await b.sync()
    await a.send({**frame, "config": {"who": "a"}})
    await a.sync()
    assert engine.registry.find_trigger("x").registrant == a.worker_id  # type: ignore[union-attr]
    await a.close()
    await asyncio.wait_for(entered.wait(), 5)
    await _gone(engine, b)
    release.set()
    for _ in range(100):  # A's cleanup ends once the register returns: wait for its disconnect
        if a.worker_id not in engine.workers:
            break
        await asyncio.sleep(0.01)
    assert a.worker_id not in engine.workers
    assert engine.registry.find_trigger("x") is None
    assert registered[2] == {"who": "b"} and bound == {}  # and the type was told to let it go
    assert engine.registry.audit_bytes() == {} == engine.registry._bytes


async def test_worker_telemetry_is_bounded(engine: Engine) -> None:
    worker = await RawWorker.connect(engine.url)
    big = await worker.call("engine::workers::register", {"_caller_worker_id": worker.worker_id,
                                                           "telemetry": {"x": [{}] * 100_000}})
    assert big["error"]["code"] == "deserialization_error"
    assert "'telemetry' would keep" in big["error"]["message"] and "(at most 65536)" in big["error"]["message"]
    small = await worker.call("engine::workers::register", {"_caller_worker_id": worker.worker_id,
                                                             "telemetry": {"language": "en"}})
    assert small["result"] == {"success": True}
    assert engine.workers[worker.worker_id].telemetry == {"language": "en"}


async def test_withdrawing_a_departed_workers_trigger_leaves_a_live_workers_registration_in_flight(
        engine: Engine) -> None:
    """Attack of the withdrawal above: B's restored trigger waits at its type while live worker C registers the same
    id (a type keeps one registration per id: C's replaces B's there, as pub/sub's does). Unregistering B's at the
    type took C's, still listed active (68 of 300 rounds with pub/sub on Redis); B's is now only forgotten."""
    gates = [asyncio.Event(), asyncio.Event()]
    entered = [asyncio.Event(), asyncio.Event()]
    bound: dict[str, object] = {}
    pending: dict[str, object] = {}
    registered: list[object] = []

    class ById:  # as pub/sub: a register of an id first forgets the id's registration; unregister takes the id's
        async def register(self, trigger: TriggerInfo) -> None:
            registered.append(trigger.config)
            bound.pop(trigger.id, None)
            pending[trigger.id] = trigger.config
            turn = len(registered) - 3  # B's, A's, then B's again (gate 0) and C's (gate 1)
            if turn >= 0:
                entered[turn].set()
                await gates[turn].wait()
            if pending.get(trigger.id) is trigger.config:
                bound[trigger.id] = pending.pop(trigger.id)

        async def unregister(self, trigger: TriggerInfo) -> None:
            bound.pop(trigger.id, None)
            pending.pop(trigger.id, None)

    engine.register_trigger_type("byid", "one registration per id", ById())
    a, b, c = [await RawWorker.connect(engine.url) for _ in range(3)]
    frame = {"type": "registertrigger", "id": "x", "trigger_type": "byid", "function_id": "f::a"}
    await b.send({**frame, "config": {"who": "b"}})
    await b.sync()
    await a.send({**frame, "config": {"who": "a"}})
    await a.sync()
    await a.close()  # A's cleanup restores B's x, whose register waits at gate 0
    await asyncio.wait_for(entered[0].wait(), 5)
    await c.send({**frame, "config": {"who": "c"}})  # C's register waits at gate 1
    await asyncio.wait_for(entered[1].wait(), 5)
    await _gone(engine, b)
    gates[0].set()
    for _ in range(100):
        if a.worker_id not in engine.workers:
            break
        await asyncio.sleep(0.01)
    gates[1].set()
    await c.sync()
    assert bound == {"x": {"who": "c"}}
    current = engine.registry.find_trigger("x")
    assert current is not None and current.registrant == c.worker_id


def test_one_non_latin1_character_does_not_multiply_a_schema_frame() -> None:
    """A first cut counted a whole frame at 8 bytes a byte for one em dash (or a Windows path's ``\\\\u``): 1,661 of
    10,000 SDK functions with schemas were refused. Characters past the BMP still count 8 (one emoji makes a whole
    string 4 bytes a character: the shapes above)."""
    import json

    from iii_engine.limits import retained_estimate

    schema = {"type": "object", "properties": {f"f{i}": {"type": "string", "title": f"F{i}"} for i in range(40)}}

    def frame(description: str) -> bytes:
        return json.dumps({"type": "registerfunction", "id": "orders::create", "description": description,
                           "request_format": schema, "response_format": schema}, ensure_ascii=False).encode()

    plain = retained_estimate(frame("Create an order - and return it"))
    assert retained_estimate(frame("C:\\users\\x and return it")) < plain * 1.05
    assert retained_estimate(frame("Create an order \u2014 and return it")) < plain * 1.5
    assert retained_estimate(frame("Create an order \U0001F600 and return it")) > plain * 1.5
