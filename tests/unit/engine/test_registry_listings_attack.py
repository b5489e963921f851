"""Attacks on the cached registry listings: whatever an in-process caller does with a listing it got, the next
listing still tells the truth."""

from __future__ import annotations

from typing import Any

from iii_engine import Engine, EngineConfig
from iii_engine.modules.base import BuiltinFunction
from iii_engine.registry import TriggerEntry


async def _nothing(data: Any, ctx: Any) -> Any:
    return None


async def test_an_in_process_caller_changing_a_function_listing_does_not_change_the_next_one() -> None:
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0)) as engine:
        engine.register_function(BuiltinFunction("svc::f", _nothing, description="real", metadata={"k": "v"}))
        first = await engine.invoke("engine::functions::list", {})
        truth = [dict(info, metadata=dict(info["metadata"]) if info["metadata"] else None)
                 for info in first["functions"]]
        for info in first["functions"]:
            info["description"] = "forged"
            info["function_id"] = "forged::id"
            if info["metadata"] is not None:
                info["metadata"]["k"] = "forged"
        first["functions"].clear()
        again = await engine.invoke("engine::functions::list", {})
        assert again["functions"] == truth


async def test_an_in_process_caller_changing_a_trigger_listing_does_not_change_the_next_one() -> None:
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0)) as engine:
        engine.register_function(BuiltinFunction("svc::f", _nothing))
        engine.register_trigger_type("attack", "test type", _Accept())
        await engine._register_trigger(None, TriggerEntry("t1", "attack", "svc::f", {"every": 1}, None))  # type: ignore[arg-type]
        first = await engine.invoke("engine::triggers::list", {})
        assert [t["id"] for t in first["triggers"]] == ["t1"]
        first["triggers"][0]["config"]["every"] = "forged"
        first["triggers"][0]["function_id"] = "forged"
        again = await engine.invoke("engine::triggers::list", {})
        assert again["triggers"] == [{"id": "t1", "trigger_type": "attack", "function_id": "svc::f",
                                      "config": {"every": 1}}]


class _Accept:
    async def register(self, trigger: Any) -> None:
        return None

    async def unregister(self, trigger: Any) -> None:
        return None

