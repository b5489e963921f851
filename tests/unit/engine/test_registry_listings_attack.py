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
        engine.registry.store_trigger(TriggerEntry("t1", "attack", "svc::f", {"every": 1}, None))
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



class _Model:
    """The registration rules in their plainest form: per id, one registration per owner in the order they came
    (a new one by the same owner moves to the end); the last one is current."""

    def __init__(self) -> None:
        self.regs: dict[str, list[tuple[str | None, str]]] = {}

    def add(self, fid: str, owner: str | None, desc: str) -> None:
        regs = [r for r in self.regs.get(fid, []) if r[0] != owner]
        self.regs[fid] = [*regs, (owner, desc)]

    def drop_owned(self, fid: str, owner: str) -> None:
        regs = self.regs.get(fid, [])
        if regs and regs[-1][0] == owner:
            regs.pop()
        else:
            regs[:] = [r for r in regs if r[0] != owner]
        if not regs:
            self.regs.pop(fid, None)

    def remove(self, fid: str) -> None:
        self.regs.pop(fid, None)

    def forget_owner(self, owner: str) -> None:
        for regs in self.regs.values():
            regs[:-1] = [r for r in regs[:-1] if r[0] != owner]

    def listing(self) -> list[tuple[str, str]]:
        return [(fid, regs[-1][1]) for fid, regs in sorted(self.regs.items())]


def test_listing_matches_a_plain_model_through_random_registration_storms() -> None:
    import random

    from iii_engine.registry import FunctionEntry, Registry

    for seed in range(20):
        rng = random.Random(seed)
        reg, model = Registry(), _Model()
        owners: list[str | None] = ["w1", "w2", "w3", "w4", None]
        ids = [f"svc::f{n}" for n in range(4)]
        for step in range(400):
            op, fid, owner = rng.random(), rng.choice(ids), rng.choice(owners)
            if op < 0.5:
                desc = f"{owner}-{step}"
                reg.add_function(FunctionEntry(fid, owner=owner, description=desc))
                model.add(fid, owner, desc)
            elif op < 0.75 and owner is not None:
                reg.drop_owned_function(fid, owner)
                model.drop_owned(fid, owner)
            elif op < 0.85:
                reg.remove_function(fid)
                model.remove(fid)
            elif owner is not None:
                reg.forget_owner(owner)
                model.forget_owner(owner)
            listing = reg.function_infos(True)
            assert [(i["function_id"], i["description"]) for i in listing] == model.listing(), (seed, step)
            listing.clear()  # a caller's own list: the next listing is whole
