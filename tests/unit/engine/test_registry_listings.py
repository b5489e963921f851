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


class _CountedEntry(FunctionEntry):
    """A function entry that counts how often its owner is read (the work of scanning earlier registrants)."""

    reads = 0

    @property
    def owner(self) -> str | None:
        _CountedEntry.reads += 1
        return self._owner

    @owner.setter
    def owner(self, value: str | None) -> None:
        self._owner = value


def test_replicas_of_one_function_cost_linear_work_to_come_and_go() -> None:
    reg = Registry()
    replicas = 300
    _CountedEntry.reads = 0
    for n in range(replicas):
        reg.add_function(_CountedEntry("svc::f", owner=f"w{n}"))
    for n in range(0, replicas - 1, 2):  # every other replica leaves (oldest first): nothing is restored ...
        assert reg.drop_owned_function("svc::f", f"w{n}") is None
        reg.forget_owner(f"w{n}")
    for n in range(replicas - 1, 0, -2):  # ... then the rest, newest first: each hands back to the one before
        restored = reg.drop_owned_function("svc::f", f"w{n}")
        assert (restored.owner if restored else None) == (f"w{n - 2}" if n > 1 else None)
        reg.forget_owner(f"w{n}")
    # a scan of the earlier registrants per registration or departure would read owners ~replicas**2 / 2 times
    assert _CountedEntry.reads < 10 * replicas
    assert "svc::f" not in reg.functions and reg._shadowed == {} and reg._shadowing == {}
