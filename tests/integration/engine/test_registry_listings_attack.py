"""Attacks on the cached function and trigger listings over real sockets: the same id registered by several
workers, overwritten, restored on disconnect, unregistered and re-registered; triggers coming and going with
their workers. After every step the listing a worker gets equals the engine's tables."""

from __future__ import annotations

from typing import Any

import pytest

from iii_engine import Engine

from .raw import RawWorker, disconnect

pytestmark = pytest.mark.our_engine("compares the listings with the engine's own tables")


async def _functions(asker: RawWorker) -> dict[str, Any]:
    listing = (await asker.result_of("engine::functions::list", {}))["functions"]
    return {info["function_id"]: info["description"] for info in listing
            if not info["function_id"].startswith("engine::")}


async def _triggers(asker: RawWorker) -> dict[str, str]:
    listing = (await asker.result_of("engine::triggers::list", {}))["triggers"]
    return {info["id"]: info["function_id"] for info in listing}


def _truth_functions(engine: Engine) -> dict[str, Any]:
    return {fid: e.description for fid, e in engine.registry.functions.items() if not fid.startswith("engine::")
            and e.owner is not None}


def _truth_triggers(engine: Engine) -> dict[str, str]:
    return {tid: t.function_id for tid, t in engine.registry.triggers.items()
            if not t.function_id.startswith("engine::")}


async def test_listings_follow_overwrite_restore_unregister_and_disconnect(engine: Engine) -> None:
    asker = await RawWorker.connect(engine.url)
    a, b, c = [await RawWorker.connect(engine.url) for _ in range(3)]
    steps: list[dict[str, Any]] = []

    async def check(expected_functions: dict[str, Any]) -> None:
        await asker.sync()
        got = await _functions(asker)
        steps.append(got)
        assert got == _truth_functions(engine) == expected_functions
        assert await _triggers(asker) == _truth_triggers(engine)

    await asker.send({"type": "registertriggertype", "id": "ticker", "description": "ticks"})
    await check({})
    for worker, desc in ((a, "from a"), (b, "from b"), (c, "from c")):
        await worker.register("svc::f", description=desc)
        await worker.sync()
        await check({"svc::f": desc})
    await b.register("svc::g", description="g by b")
    await b.send({"type": "registertrigger", "id": "tb", "trigger_type": "ticker",
                  "function_id": "svc::g", "config": {"topic": "t"}})
    await b.sync()
    await check({"svc::f": "from c", "svc::g": "g by b"})
    assert (await _triggers(asker)).get("tb") == "svc::g"
    await disconnect(engine, c)  # c's registration goes: b's (the latest earlier one) comes back
    await check({"svc::f": "from b", "svc::g": "g by b"})
    await b.send({"type": "unregisterfunction", "id": "svc::f"})  # b takes its own back: a's comes back (E5)
    await b.sync()
    await check({"svc::f": "from a", "svc::g": "g by b"})
    await a.register("svc::f", description="a again")
    await a.sync()
    await check({"svc::f": "a again", "svc::g": "g by b"})
    await disconnect(engine, b)  # its function and trigger leave the listings
    await check({"svc::f": "a again"})
    assert "tb" not in await _triggers(asker)
    await disconnect(engine, a)
    await check({})
    await asker.close()
