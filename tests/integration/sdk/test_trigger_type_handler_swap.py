"""A trigger type registered again with a new handler: the triggers move to it, and the old one unbinds them (attack
on registrations, F1).

Before: the new handler never heard of a trigger bound before the swap (the engine sends the type's triggers again on
its new registration, and the host took the one sent again as already bound), the old handler kept it for good, and
its unbind went to the new handler, which had never bound it. The reference SDK on our engine binds it at the new
handler (and never tells the old one).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from iii.trigger_host import TriggerTypeHost
from iii.triggers import TriggerConfig, TriggerHandler

from .conftest import MakeWorkerAt, RealEngineThread


class Journal:
    """One log for several handlers: ``(handler name, bind | unbind, config)`` in the order they ran."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str, Any]] = []
        self.changed = threading.Condition()

    def note(self, *entry: Any) -> None:
        with self.changed:
            self.entries.append(entry)
            self.changed.notify_all()

    def wait(self, predicate: Any, timeout: float = 5.0) -> bool:
        with self.changed:
            return bool(self.changed.wait_for(predicate, timeout))


class Named(TriggerHandler[Any]):
    def __init__(self, name: str, journal: Journal) -> None:
        self.name, self.journal = name, journal

    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        self.journal.note(self.name, "bind", config.config)

    async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
        self.journal.note(self.name, "unbind", config.config)


def test_a_new_handler_gets_the_types_triggers_and_the_old_one_unbinds_them(
        real: RealEngineThread, workers: MakeWorkerAt) -> None:
    journal = Journal()
    owner, user = workers(real.url, "owner"), workers(real.url, "user")
    user.register_function("u::f", lambda data: data)
    owner.register_trigger_type({"id": "tick", "description": "v1"}, Named("h1", journal))
    real.wait_for(lambda: "tick" in real.worker_trigger_types())
    first = user.register_trigger({"type": "tick", "function_id": "u::f", "config": {"a": 1}})
    assert journal.wait(lambda: journal.entries == [("h1", "bind", {"a": 1})])

    owner.register_trigger_type({"id": "tick", "description": "v2"}, Named("h2", journal))
    # before: nothing (h2 never heard of a1, h1 kept it)
    assert journal.wait(lambda: len(journal.entries) == 3), journal.entries
    assert journal.entries[1:] == [("h1", "unbind", {"a": 1}), ("h2", "bind", {"a": 1})]

    user.register_trigger({"type": "tick", "function_id": "u::f", "config": {"a": 2}})
    first.unregister()
    assert journal.wait(lambda: len(journal.entries) == 5), journal.entries
    owner.list_functions()  # a round trip: every frame the engine sent the owner so far is handled
    # two triggers, each hook in its own task: their order is not one the engine or the SDK promises
    assert sorted(journal.entries[3:], key=str) == [("h2", "bind", {"a": 2}), ("h2", "unbind", {"a": 1})]
    held = {name: {str(c) for n, op, c in journal.entries if n == name and op == "bind"}
            - {str(c) for n, op, c in journal.entries if n == name and op == "unbind"} for name in ("h1", "h2")}
    assert held == {"h1": set(), "h2": {str({"a": 2})}}  # no handler holds what nobody will unbind


def test_the_same_handler_registered_again_binds_nothing_twice(
        real: RealEngineThread, workers: MakeWorkerAt) -> None:
    # (a description update: the engine sends the triggers again, each is held already by the same handler)
    journal = Journal()
    handler = Named("h", journal)
    owner, user = workers(real.url, "owner"), workers(real.url, "user")
    owner.register_trigger_type({"id": "tick", "description": "v1"}, handler)
    real.wait_for(lambda: "tick" in real.worker_trigger_types())
    user.register_trigger({"type": "tick", "function_id": "u::f", "config": {"a": 1}})
    assert journal.wait(lambda: len(journal.entries) == 1)
    owner.register_trigger_type({"id": "tick", "description": "v2"}, handler)
    real.wait_for(lambda: real.engine.registry.trigger_types["tick"].description == "v2")
    owner.list_functions()
    assert journal.entries == [("h", "bind", {"a": 1})]


async def test_an_unbind_goes_to_the_handler_that_bound_the_trigger() -> None:
    # The engine's unregistertrigger for a trigger bound before the swap and not sent again since: the handler that
    # bound it unbinds it (before: the new one, which never bound it, and the old one kept it).
    journal = Journal()
    host = TriggerTypeHost()
    host.add("tick", Named("h1", journal))
    assert await host.register("tick", "t1", "f", {"a": 1}, generation=1) is None
    host.add("tick", Named("h2", journal))
    await host.unregister("tick", "t1", "f", {"a": 1})
    assert journal.entries == [("h1", "bind", {"a": 1}), ("h1", "unbind", {"a": 1})]


async def test_releasing_a_swapped_type_unbinds_each_trigger_at_the_handler_holding_it() -> None:
    journal = Journal()
    host = TriggerTypeHost()
    host.add("tick", Named("h1", journal))
    await host.register("tick", "t1", "f", {"a": 1}, generation=1)
    host.add("tick", Named("h2", journal))
    await host.register("tick", "t2", "f", {"a": 2}, generation=1)
    released = host.release("tick")
    assert released is not None
    await released
    assert sorted(journal.entries[2:], key=str) == [("h1", "unbind", {"a": 1}), ("h2", "unbind", {"a": 2})]


async def test_a_bind_running_as_the_handler_changes_is_moved_when_the_engine_sends_it_again() -> None:
    # h1 binds t1 slowly; meanwhile the type gets h2 and the engine sends t1 again: h1's binding is undone by h1,
    # then h2 binds it (before: the send waiting its turn was taken as bound already and h2 never heard of t1).
    journal = Journal()
    started, go = asyncio.Event(), asyncio.Event()

    class Slow(Named):
        async def register_trigger(self, config: TriggerConfig[Any]) -> None:
            started.set()
            await go.wait()
            await super().register_trigger(config)

    host = TriggerTypeHost()
    host.add("tick", Slow("h1", journal))
    first = asyncio.ensure_future(host.register("tick", "t1", "f", {"a": 1}, generation=1))
    await started.wait()
    host.add("tick", Named("h2", journal))
    again = asyncio.ensure_future(host.register("tick", "t1", "f", {"a": 1}, generation=1))
    go.set()
    assert await first is None and await again is None
    assert journal.entries == [("h1", "bind", {"a": 1}), ("h1", "unbind", {"a": 1}), ("h2", "bind", {"a": 1})]
