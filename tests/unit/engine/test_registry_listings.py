"""The registry's wire listings: built once per change of their table (a call costs a list copy, not one new dict
per function), and never stale after any change."""

from __future__ import annotations

from typing import Any

import pytest

from iii_engine.registry import FunctionEntry, Registry, TriggerEntry


def _ids(listing: list[dict[str, Any]], key: str = "function_id") -> list[str]:
    return [info[key] for info in listing]


def test_function_listing_is_built_once_until_the_table_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    reg = Registry()
    for n in range(50):
        reg.add_function(FunctionEntry(f"svc::f{n:02}", owner="w"))
    built: list[str] = []
    original = FunctionEntry.info

    def counting(entry: FunctionEntry) -> dict[str, Any]:
        built.append(entry.id)
        return original(entry)

    monkeypatch.setattr(FunctionEntry, "info", counting)
    first = reg.function_infos(False)
    assert len(built) == 50
    for _ in range(10):
        again = reg.function_infos(False)
        assert again == first and again is not first  # a new list: a caller may change its own copy
    assert len(built) == 50  # ten more listings, no entry asked again
    reg.add_function(FunctionEntry("svc::new", owner="w"))
    assert "svc::new" in _ids(reg.function_infos(False))
    assert len(built) == 101  # rebuilt after the change (each entry's dict is still its own cached one)


def test_function_listing_follows_every_change() -> None:
    reg = Registry()
    reg.add_function(FunctionEntry("engine::functions::list"))
    reg.add_function(FunctionEntry("b::f", owner="w1", description="one"))
    reg.add_function(FunctionEntry("a::f", owner="w1"))
    assert _ids(reg.function_infos(True)) == ["a::f", "b::f", "engine::functions::list"]
    assert _ids(reg.function_infos(False)) == ["a::f", "b::f"]
    reg.add_function(FunctionEntry("b::f", owner="w2", description="two"))  # same id set, new entry
    assert [i["description"] for i in reg.function_infos(False)] == [None, "two"]
    assert reg.drop_owned_function("b::f", "w2") is not None  # w1's registration comes back
    assert [i["description"] for i in reg.function_infos(False)] == [None, "one"]
    reg.drop_owned_function("b::f", "w1")
    assert _ids(reg.function_infos(False)) == ["a::f"]
    reg.remove_function("a::f")
    assert reg.function_infos(False) == [] and _ids(reg.function_infos(True)) == ["engine::functions::list"]


def test_trigger_listing_follows_every_change() -> None:
    reg = Registry()
    reg.store_trigger(TriggerEntry("t1", "x", "f", {"a": 1}, "w"))
    reg.store_trigger(TriggerEntry("t2", "x", "engine::functions::list", None, "w"))
    first = reg.trigger_infos(False)
    assert _ids(first, "id") == ["t1"] and reg.trigger_infos(False)[0] is first[0]
    assert _ids(reg.trigger_infos(True), "id") == ["t1", "t2"]
    reg.store_trigger(TriggerEntry("t1", "x", "g", {"a": 2}, "w"))  # replaced: moves to the end
    assert [(i["id"], i["config"]) for i in reg.trigger_infos(True)] == [("t2", None), ("t1", {"a": 2})]
    reg.park_trigger(TriggerEntry("t2", "unknown", "f", None, "w"))  # an active trigger becomes pending
    assert _ids(reg.trigger_infos(True), "id") == ["t1"]
    reg.discard_trigger("t1")
    assert reg.trigger_infos(True) == []
    reg.store_trigger(reg.take_pending("unknown")[0])
    assert _ids(reg.trigger_infos(False), "id") == ["t2"]
