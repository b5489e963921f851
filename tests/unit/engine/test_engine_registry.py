"""Registry bookkeeping: last writer wins, owner-aware removal (E5), implicit services, pending triggers."""

from __future__ import annotations

from iii_engine.registry import FunctionEntry, Registry, TriggerEntry


def test_overwrite_keeps_the_id_set_and_restores_in_order() -> None:
    reg = Registry()
    reg.add_function(FunctionEntry("f", owner="a"))
    version = reg.version
    reg.add_function(FunctionEntry("f", owner="b"))
    reg.add_function(FunctionEntry("f", owner="c"))
    assert reg.version == version  # same id set
    assert reg.drop_owned_function("f", "a") is None  # a no longer owns it: nothing happens
    assert reg.functions["f"].owner == "c"
    restored = reg.drop_owned_function("f", "c")
    assert restored is not None and restored.owner == "b"  # a's shadow was dropped when a left
    assert reg.drop_owned_function("f", "b") is None
    assert "f" not in reg.functions and reg.version == version + 1


def test_forget_owner_prevents_restoring_a_departed_worker() -> None:
    reg = Registry()
    reg.add_function(FunctionEntry("f", owner="a"))
    reg.add_function(FunctionEntry("f", owner="b"))
    reg.forget_owner("a")
    assert reg.drop_owned_function("f", "b") is None
    assert "f" not in reg.functions


def test_explicit_remove_forgets_everyone() -> None:
    reg = Registry()
    reg.add_function(FunctionEntry("s::f", owner="a"))
    reg.add_function(FunctionEntry("s::f", owner="b"))
    removed = reg.remove_function("s::f")
    assert removed is not None and removed.owner == "b"
    assert reg.drop_owned_function("s::f", "b") is None and "s::f" not in reg.functions
    assert "s" not in reg.services


def test_services_keyed_by_name_and_reset_on_replace() -> None:
    reg = Registry()
    reg.add_function(FunctionEntry("a::x", owner="w"))
    assert reg.register_service("a", "", None) is not None  # replaces the implicit one, function set reset
    assert reg.services["a"].functions == set() and reg.services["a"].explicit
    reg.register_service("id1", "Name", "parent")
    assert reg.services["Name"].parent_service_id == "parent"
    assert reg.owned_functions("w") == ["a::x"]


def test_pending_triggers_are_taken_per_type() -> None:
    reg = Registry()
    reg.park_trigger(TriggerEntry("t1", "x", "f", {}, "w"))
    reg.park_trigger(TriggerEntry("t2", "y", "f", None, "w"))
    assert [t.id for t in reg.take_pending("x")] == ["t1"]
    assert list(reg.pending_triggers) == ["t2"]
    found = reg.find_trigger("t2")
    assert found is not None and found.info() == {"id": "t2", "trigger_type": "y", "function_id": "f",
                                                  "config": None}
    assert reg.discard_trigger("t2") is not None and reg.find_trigger("t2") is None


def test_triggers_are_indexed_by_type_and_registrant() -> None:
    reg = Registry()
    reg.park_trigger(TriggerEntry("t1", "x", "f", {}, "w1"))
    reg.store_trigger(TriggerEntry("t2", "x", "f", {}, "w2"))
    reg.store_trigger(TriggerEntry("t3", "y", "f", {}, "w1"))
    assert [t.id for t in reg.triggers_of_type("x")] == ["t2"]  # active ones only
    assert sorted(t.id for t in reg.triggers_of_registrant("w1")) == ["t1", "t3"]
    reg.store_trigger(TriggerEntry("t1", "z", "g", {}, "w2"))  # the pending t1 becomes an active one of w2
    assert "t1" not in reg.pending_triggers and reg.take_pending("x") == []
    assert [t.id for t in reg.triggers_of_type("z")] == ["t1"]
    assert [t.id for t in reg.triggers_of_registrant("w1")] == ["t3"]
    assert reg.discard_trigger("t3") is not None
    assert reg.triggers_of_registrant("w1") == [] and reg.triggers_of_type("y") == []
    assert reg._of_registrant.keys() == {"w2"}  # no empty buckets left behind
