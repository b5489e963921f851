"""``unregister_trigger_type`` then ``register_trigger_type`` at once: each trigger's unbind by the release finishes
before the type's new bind of it (attack on the SDK fix, A).

The engine sends every trigger of the type again on its new registration. Before, the release's unbinds ran later, on
the loop, outside the triggers' turns: the new binds overtook them. With the same handler it saw bind, bind, unbind
and held none of the 3 triggers the engine listed (dead triggers, no log); with another one, each trigger was bound at
both handlers at once until the old handler's unbind ran.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from iii import III
from iii.triggers import TriggerConfig, TriggerHandler
from tests.polling import until

from .conftest import MakeWorker, RealEngineThread

_TRIGGERS = 3


class _Ledger:
    """Who holds each trigger (shared by the handlers): a bind of one another handler holds is an overlap."""

    def __init__(self) -> None:
        self.holder: dict[str, str] = {}
        self.overlaps: list[str] = []
        self.changed = threading.Condition()

    def wait(self, predicate: Any) -> bool:
        with self.changed:
            return bool(self.changed.wait_for(predicate, 10))


class _Gated(TriggerHandler[Any]):
    """Records what it holds in the ledger; its unbinds wait for ``go`` once ``gate`` is set."""

    def __init__(self, name: str, ledger: _Ledger) -> None:
        self.name, self.ledger = name, ledger
        self.held: set[str] = set()
        self.events: list[tuple[str, str]] = []
        self.gate, self.go = False, threading.Event()

    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        with self.ledger.changed:
            holder = self.ledger.holder.get(config.id)
            if holder is not None:
                self.ledger.overlaps.append(f"{config.id[:8]} bound at {self.name} while {holder} holds it")
            self.held.add(config.id)
            self.ledger.holder[config.id] = self.name
            self.events.append(("bind", config.id))
            self.ledger.changed.notify_all()

    async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
        if self.gate:
            assert await asyncio.to_thread(self.go.wait, 10)
        with self.ledger.changed:
            self.held.discard(config.id)
            if self.ledger.holder.get(config.id) == self.name:
                del self.ledger.holder[config.id]
            self.events.append(("unbind", config.id))
            self.ledger.changed.notify_all()


def _owner_of_three(real: RealEngineThread, make_real_worker: MakeWorker, first: _Gated) -> III:
    """A worker owning type ``tick`` through ``first``, which has bound the type's 3 triggers (another worker's)."""
    owner, user = make_real_worker("owner"), make_real_worker("user")
    owner.register_trigger_type({"id": "tick", "description": "d"}, first)
    real.wait_for(lambda: "tick" in real.worker_trigger_types())
    for i in range(_TRIGGERS):
        user.register_trigger({"type": "tick", "function_id": "u::f", "config": {"i": i}})
    assert first.ledger.wait(lambda: len(first.held) == _TRIGGERS)
    return owner


def _engine_sent_again(owner: III) -> bool:
    """The owner has read the engine's registertrigger of each trigger again (noted as each frame is read)."""
    return len(owner._trigger_host._sent) == _TRIGGERS


@pytest.mark.parametrize("same_handler", [True, False], ids=["same-handler", "other-handler"])
def test_the_release_unbinds_each_trigger_before_the_types_new_bind_of_it(
        real: RealEngineThread, make_real_worker: MakeWorker, same_handler: bool) -> None:
    ledger = _Ledger()
    h1 = _Gated("h1", ledger)
    h2 = h1 if same_handler else _Gated("h2", ledger)
    owner = _owner_of_three(real, make_real_worker, h1)
    h1.gate = True  # the old handler's unbinds hang until the engine's new sends have been handled
    owner.unregister_trigger_type({"id": "tick"})
    owner.register_trigger_type({"id": "tick", "description": "d"}, h2)
    real.run(until(lambda: _engine_sent_again(owner)))
    owner.list_functions()  # a round trip: every frame the engine sent before it is handled, each bind started
    h1.go.set()
    # each trigger is unbound by h1 and bound again (by h2): 3 binds, then 3 unbinds and 3 binds in all
    assert ledger.wait(lambda: len(h1.events) + (0 if same_handler else len(h2.events)) == 3 * _TRIGGERS), \
        (h1.events, h2.events)
    owner.list_functions()
    assert ledger.overlaps == [], (h1.events, h2.events)  # before: each bound at h2 while h1 held it
    engine_ids = {t["id"] for t in owner.trigger({"function_id": "engine::triggers::list",
                                                 "payload": {"include_internal": True}})["triggers"]
                  if t.get("trigger_type") == "tick"}
    assert h2.held == engine_ids  # before (same handler): bind, bind, unbind: 0 held, 3 listed
    if same_handler:
        rebound = h1.events[_TRIGGERS:]
        for trigger_id in engine_ids:
            assert [e for e in rebound if e[1] == trigger_id] == [("unbind", trigger_id), ("bind", trigger_id)]
