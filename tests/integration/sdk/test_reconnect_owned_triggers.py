"""A trigger type's owner after a reconnect holds what the engine holds, each trigger bound once (attack report on
reconnects, F1; docs/protocol.md S6).

Before: the engine's replay of the type's triggers bound each one the owner still held a second time (an interval
trigger then fired twice per tick), and a trigger unregistered while the owner was away was never unbound (it fired on
until the owner shut down): an engine restart, or only the owner's connection cut for 0.6 s, left ``w::job`` running
10 times in 2 s for a removed trigger and 20 times instead of 10 for the kept one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from iii import III
from iii.triggers import TriggerConfig, TriggerHandler
from tests.stall_relay import Relay

from .conftest import MakeWorker, MakeWorkerAt, RealEngineThread, reconnected, wait_until


class Ledger(TriggerHandler[Any]):
    """Records every bind and unbind: ``bound`` is what it holds now, ``twice`` each id bound while already held."""

    def __init__(self, slow_bind: threading.Event | None = None) -> None:
        self.events: list[tuple[str, str, Any]] = []  # (bind | unbind, trigger id, config)
        self.bound: dict[str, Any] = {}
        self.twice: list[str] = []
        self.changed = threading.Condition()
        self.binding = threading.Event()  # a bind started (with ``slow_bind``: it waits for that event)
        self._slow_bind = slow_bind

    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        self.binding.set()
        if self._slow_bind is not None:
            await asyncio.to_thread(self._slow_bind.wait, 5)
        with self.changed:
            if config.id in self.bound:
                self.twice.append(config.id)
            self.bound[config.id] = config.config
            self.events.append(("bind", config.id, config.config))
            self.changed.notify_all()

    async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
        with self.changed:
            self.bound.pop(config.id, None)
            self.events.append(("unbind", config.id, config.config))
            self.changed.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        with self.changed:
            return bool(self.changed.wait_for(predicate, timeout))

    def id_of(self, config: Any) -> str:
        """The id of the trigger it was bound with ``config`` (the SDK's ``Trigger`` handle does not say it)."""
        with self.changed:
            return next(trigger_id for op, trigger_id, seen in self.events if op == "bind" and seen == config)


def _set_flowing(real: RealEngineThread, relay: Relay, flowing: bool, cut: bool = False) -> None:
    async def change() -> None:
        if flowing:
            relay.flowing.set()
        else:
            relay.flowing.clear()
        if cut:
            relay.cut()

    real.run(change())


def _owner(real: RealEngineThread, workers: MakeWorkerAt, url: str, handler: Ledger) -> III:
    owner = workers(url, "owner")
    owner.register_trigger_type({"id": "tick", "description": "every tick"}, handler)
    real.wait_for(lambda: "tick" in real.worker_trigger_types())
    return owner


def _engine_holds(real: RealEngineThread, trigger_id: str) -> bool:
    registry = real.engine.registry
    return trigger_id in registry.triggers or trigger_id in registry.pending_triggers


def test_a_trigger_unregistered_while_its_owner_was_cut_off_is_unbound_and_the_kept_one_not_bound_twice(
        real: RealEngineThread, relay: Relay, workers: MakeWorkerAt) -> None:
    handler = Ledger()
    owner = _owner(real, workers, relay.url, handler)
    user = workers(real.url, "user")
    user.register_trigger({"type": "tick", "function_id": "u::job", "config": {"n": 1}})
    gone = user.register_trigger({"type": "tick", "function_id": "u::job", "config": {"n": 2}})
    assert handler.wait(lambda: len(handler.bound) == 2)
    keep_id, gone_id = handler.id_of({"n": 1}), handler.id_of({"n": 2})
    old = owner.worker_id
    _set_flowing(real, relay, False, cut=True)  # the owner's next connection waits in its handshake
    real.wait_for(lambda: "tick" not in real.worker_trigger_types())  # the engine saw it go
    gone.unregister()  # reaches the engine; nothing reaches the owner
    real.wait_for(lambda: not _engine_holds(real, gone_id))
    _set_flowing(real, relay, True)
    wait_until(lambda: reconnected(owner, old))
    # before: never unbound (the 5 s wait ran out), and the engine's replay bound the kept one a second time
    assert handler.wait(lambda: gone_id not in handler.bound), handler.events
    owner.list_functions()  # a round trip: every frame the engine sent the owner so far is handled
    assert handler.twice == []
    assert handler.bound == {keep_id: {"n": 1}}
    assert [op for op, trigger_id, _ in handler.events if trigger_id == keep_id] == ["bind"]


def test_after_an_engine_restart_the_owner_holds_what_the_engine_holds_each_once(
        real: RealEngineThread, workers: MakeWorkerAt) -> None:
    handler = Ledger()
    owner = _owner(real, workers, real.url, handler)
    user = workers(real.url, "user")
    user.register_trigger({"type": "tick", "function_id": "u::job", "config": {"n": 1}})
    gone = user.register_trigger({"type": "tick", "function_id": "u::job", "config": {"n": 2}})
    assert handler.wait(lambda: len(handler.bound) == 2)
    keep_id, gone_id = handler.id_of({"n": 1}), handler.id_of({"n": 2})
    old_owner, old_user = owner.worker_id, user.worker_id
    real.stop()
    gone.unregister()  # while the engine is down: the user's replay leaves it out
    real.start()
    wait_until(lambda: reconnected(owner, old_owner) and reconnected(user, old_user))
    real.wait_for(lambda: [t["id"] for t in real.worker_triggers()] == [keep_id])
    # (whichever worker came back first: the owner first finds neither trigger listed and unbinds both, then binds the
    # kept one as the user's replay brings it back)
    assert handler.wait(lambda: handler.bound == {keep_id: {"n": 1}}), handler.events
    owner.list_functions()
    assert handler.twice == []  # before: the kept one bound twice
    assert handler.bound == {keep_id: {"n": 1}}
    assert ("unbind", gone_id, {"n": 2}) in handler.events


def test_a_replay_longer_than_the_engines_outbox_unbinds_nothing_that_stays(
        real: RealEngineThread, relay: Relay, workers: MakeWorkerAt) -> None:
    # The engine sends an owner its type's triggers 64 frames at a time (OUTBOX_LIMIT), and its answers overtake them:
    # a check unbinding every trigger of the owner not re-sent before the answer to a round trip unbound (then bound
    # again) 2,744 of these 3,000. The engine's listing says they are on their way.
    handler = Ledger()
    owner = _owner(real, workers, relay.url, handler)
    user = workers(real.url, "user")
    count = 3000
    for n in range(count):
        user.register_trigger({"type": "tick", "function_id": "u::job", "config": {"n": n}})
    assert handler.wait(lambda: len(handler.bound) == count, 10)
    before = len(handler.events)
    old = owner.worker_id
    _set_flowing(real, relay, True, cut=True)
    wait_until(lambda: reconnected(owner, old))
    worker_id = owner.worker_id
    assert worker_id is not None

    def replayed() -> bool:
        feed = real.engine._feeds.get(worker_id)
        return feed is not None and len(feed.held) == count and len(feed) == 0

    real.wait_for(replayed)
    # A round trip: every frame the engine sent the owner is handled, the check's first listing answered before it.
    owner.list_functions()
    assert handler.events[before:] == []  # before: each of the 3,000 bound a second time
    assert len(handler.bound) == count


def test_a_trigger_sent_again_is_bound_once_and_rebound_only_when_changed(
        real: RealEngineThread, make_real_worker: MakeWorker) -> None:
    handler = Ledger()
    owner = make_real_worker("owner")
    owner.register_trigger_type({"id": "tick", "description": "every tick"}, handler)
    real.wait_for(lambda: "tick" in real.worker_trigger_types())
    user = make_real_worker("user")
    user.register_trigger({"type": "tick", "function_id": "u::job", "config": {"n": 1}})
    assert handler.wait(lambda: len(handler.bound) == 1)
    trigger_id = handler.id_of({"n": 1})
    again = {"type": "registertrigger", "id": trigger_id, "trigger_type": "tick", "function_id": "u::job"}
    real.send_to(owner, {**again, "config": {"n": 1}})  # as a reconnect's replay sends it
    real.send_to(owner, {**again, "config": {"n": 2}})  # as a re-registration with another config would
    assert handler.wait(lambda: len(handler.events) >= 3)
    owner.list_functions()
    # before: bound again with the same config, then with the new one on top (the old binding never unbound)
    assert handler.events == [("bind", trigger_id, {"n": 1}), ("unbind", trigger_id, {"n": 1}),
                              ("bind", trigger_id, {"n": 2})]
    assert handler.twice == []


def test_a_trigger_unregistered_while_its_bind_runs_is_unbound_after_it(
        real: RealEngineThread, make_real_worker: MakeWorker) -> None:
    go = threading.Event()
    handler = Ledger(slow_bind=go)
    owner = make_real_worker("owner")
    owner.register_trigger_type({"id": "tick", "description": "every tick"}, handler)
    real.wait_for(lambda: "tick" in real.worker_trigger_types())
    user = make_real_worker("user")
    trigger = user.register_trigger({"type": "tick", "function_id": "u::job", "config": {"n": 1}})
    assert handler.binding.wait(5)
    trigger.unregister()
    real.wait_for(lambda: not real.worker_triggers())
    owner.list_functions()  # the engine's unregistertrigger has reached the owner while the bind still runs
    go.set()
    # before: the unbind ran first, on nothing, and the bind that ended after it stayed for good
    assert handler.wait(lambda: [op for op, _, _ in handler.events] == ["bind", "unbind"]), handler.events
    assert handler.bound == {}
