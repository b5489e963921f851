"""A trigger type's ``register_trigger`` (or ``unregister_trigger``) that never returns blocks nothing for good
(attack A F5): letting the type go frees its trigger's turn and the worker's slot at once, and each hook has a
deadline (``InitOptions.invocation_timeout_ms``) past which a bind is answered to the engine as refused.

Before: the hung bind held its trigger's turn for good, so the type owned again with a working handler never bound
the trigger the engine listed as active (8 s waited); ``max_invocations`` hung binds of one type left another type's
trigger unbound (5 s waited), listed as active, with nothing logged.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest

from iii.trigger_host import TriggerTypeHost
from iii.triggers import TriggerConfig, TriggerHandler
from tests.polling import until

from .conftest import MakeWorker, RealEngineThread


class _Hung(TriggerHandler[Any]):
    """Its binds never return; tells ``started`` of each."""

    def __init__(self) -> None:
        self.started: list[str] = []

    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        self.started.append(config.id)
        await asyncio.Event().wait()

    async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
        pass


class _Good(TriggerHandler[Any]):
    def __init__(self) -> None:
        self.bound: list[str] = []
        self.changed = threading.Condition()

    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        with self.changed:
            self.bound.append(config.id)
            self.changed.notify_all()

    async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
        pass

    def wait(self, predicate: Any, timeout: float = 10.0) -> bool:
        with self.changed:
            return bool(self.changed.wait_for(predicate, timeout))


def test_a_hung_bind_does_not_keep_its_trigger_from_the_types_next_handler(
        real: RealEngineThread, make_real_worker: MakeWorker) -> None:
    # the default deadline (30 s) is not what frees it here: the release is
    owner, user = make_real_worker("owner"), make_real_worker("user")
    hung, good = _Hung(), _Good()
    owner.register_trigger_type({"id": "hook", "description": "d"}, hung)
    real.wait_for(lambda: "hook" in real.worker_trigger_types())
    user.register_trigger({"type": "hook", "function_id": "u::f", "config": {"a": 1}})
    real.run(until(lambda: len(hung.started) == 1))
    owner.unregister_trigger_type({"id": "hook"})
    owner.register_trigger_type({"id": "hook", "description": "d"}, good)
    # before: never bound (the hung bind held the trigger's turn), while the engine listed it as active
    assert good.wait(lambda: good.bound == hung.started), (good.bound, hung.started)
    listed = [t["id"] for t in user.trigger({"function_id": "engine::triggers::list", "payload": {}})["triggers"]
              if t["trigger_type"] == "hook"]
    assert listed == good.bound


def test_hung_binds_past_their_deadline_free_the_workers_slots_for_other_types(
        real: RealEngineThread, make_real_worker: MakeWorker, caplog: pytest.LogCaptureFixture) -> None:
    owner = make_real_worker("owner", max_invocations=2, invocation_timeout_ms=300)
    user = make_real_worker("user")
    hung, good = _Hung(), _Good()
    owner.register_trigger_type({"id": "hung", "description": "d"}, hung)
    owner.register_trigger_type({"id": "good", "description": "d"}, good)
    real.wait_for(lambda: {"hung", "good"} <= real.worker_trigger_types())
    with caplog.at_level(logging.ERROR, logger="iii.trigger_host"):
        for i in range(2):
            user.register_trigger({"type": "hung", "function_id": "u::f", "config": {"i": i}})
        real.run(until(lambda: len(hung.started) == 2))
        user.register_trigger({"type": "good", "function_id": "u::f", "config": {}})
        # before: never bound (both slots held by the hung binds for good)
        assert good.wait(lambda: len(good.bound) == 1)
        # the hung ones were answered as refused: the engine parks them (pending, not listed)
        pending = real.engine.registry.pending_triggers
        real.wait_for(lambda: len(pending) == 2)
    lines = [r.getMessage() for r in caplog.records if "did not finish within" in r.getMessage()]
    assert len(lines) == 2, lines
    assert all("_Hung.register_trigger" in line and "0.3 s" in line and "trigger_registration_failed" in line
               for line in lines), lines
    listed = {t["trigger_type"] for t in user.trigger({"function_id": "engine::triggers::list",
                                                        "payload": {}})["triggers"]}
    assert "hung" not in listed and "good" in listed



def test_releasing_a_type_frees_the_slots_its_hung_binds_held(real: RealEngineThread,
                                                              make_real_worker: MakeWorker) -> None:
    # the default deadline (30 s) is not what frees them here: the release is
    owner, user = make_real_worker("owner", max_invocations=2), make_real_worker("user")
    hung, good = _Hung(), _Good()
    owner.register_trigger_type({"id": "hung", "description": "d"}, hung)
    owner.register_trigger_type({"id": "good", "description": "d"}, good)
    real.wait_for(lambda: {"hung", "good"} <= real.worker_trigger_types())
    for i in range(2):
        user.register_trigger({"type": "hung", "function_id": "u::f", "config": {"i": i}})
    real.run(until(lambda: len(hung.started) == 2))
    user.register_trigger({"type": "good", "function_id": "u::f", "config": {}})
    real.run(until(lambda: len(owner._owning_waiting) == 1))  # (read: the good one waits for a slot)
    owner.unregister_trigger_type({"id": "hung"})
    # before: never bound (both slots held by the hung binds for good, the type let go or not)
    assert good.wait(lambda: len(good.bound) == 1)

async def test_a_hung_unbind_past_its_deadline_lets_the_triggers_next_bind_run() -> None:
    journal: list[tuple[str, str]] = []

    class HungUnbind(TriggerHandler[Any]):
        async def register_trigger(self, config: TriggerConfig[Any]) -> None:
            journal.append(("bind", config.id))

        async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
            journal.append(("unbind", config.id))
            await asyncio.Event().wait()

    host = TriggerTypeHost(hook_deadline=0.2)
    host.add("hook", HungUnbind())
    assert await host.register("hook", "t1", "f", {}, generation=1) is None
    unbinding = asyncio.ensure_future(host.unregister("hook", "t1", "f", {}))
    await until(lambda: len(journal) == 2)
    # the engine sends t1 again: its bind waits for the hung unbind's turn, at most its deadline
    assert await asyncio.wait_for(host.register("hook", "t1", "f", {}, generation=1), 5) is None
    await unbinding
    assert journal == [("bind", "t1"), ("unbind", "t1"), ("bind", "t1")]


async def test_a_hung_bind_past_its_deadline_is_answered_as_refused() -> None:
    host = TriggerTypeHost(hook_deadline=0.2)
    host.add("hook", _Hung())
    answer = await asyncio.wait_for(host.register("hook", "t1", "f", {}, generation=1), 5)
    assert answer == {"code": "trigger_registration_failed", "message": "register_trigger did not finish within 0.2 s"}
    assert not host.holds  # (the engine parks a refused trigger: nothing noted of it here)
