"""A ``TriggerHandler`` hook no longer waited for (past ``InitOptions.invocation_timeout_ms``, or its type let go)
is never cancelled: it runs on in the background, a bind that ends there is unbound by the same handler (the engine
was told it was not bound), an unbind runs to its end, and the same handler's next hook of the trigger waits for it.

Before (attack C, regressions of a68e5d6a): the hook was cancelled at its deadline or by its trigger's next turn. A
bind whose work ran in a thread and finished 0.3 s past a 1 s deadline left a resource nobody unbound (the engine had
been told it was refused; a later unregister never called the unbind hook); an async unbind 0.3 s past the deadline,
cancelled, left the binding at the handler; and releasing a type twice, taking it back each time, while the release's
unbind ran, cancelled that unbind and bound the trigger again: two bindings for the one trigger the engine listed. A
storm of 30 release/re-register cycles over 20 triggers left 13-19 of them wrong, with no deadline at all.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import threading
import time
from typing import Any

import pytest

from iii import trigger_host
from iii.iii import III
from iii.trigger_host import TriggerTypeHost
from iii.triggers import TriggerConfig, TriggerHandler
from tests.polling import until

from .conftest import MakeWorker, RealEngineThread


class _Counting(TriggerHandler[Any]):
    """Counts its bindings per trigger id (what a handler holding webhooks or timers holds); ``most``: the most
    bindings of one id held at once. Each hook waits, in steps of the loop, for ``gate`` (if set by the test) after
    ``delay`` seconds."""

    def __init__(self, bind_delay: float = 0.0, unbind_delay: float = 0.0) -> None:
        self.bind_delay = bind_delay
        self.unbind_delay = unbind_delay
        self.bound: collections.Counter[str] = collections.Counter()
        self.most = 0
        self.log: list[str] = []
        self.running = 0
        self.unbind_gate: threading.Event | None = None
        self.lock = threading.Lock()

    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        with self.lock:
            self.running += 1
        try:
            await asyncio.sleep(self.delay(self.bind_delay))
            with self.lock:
                self.bound[config.id] += 1
                self.most = max(self.most, self.bound[config.id])
                self.log.append("bind")
        finally:
            with self.lock:
                self.running -= 1

    async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
        with self.lock:
            self.running += 1
            self.log.append("unbind-start")
        try:
            await asyncio.sleep(self.delay(self.unbind_delay))
            gate = self.unbind_gate
            if gate is not None:
                await until(gate.is_set, within=20)
            with self.lock:
                self.bound[config.id] -= 1
                self.log.append("unbind-done")
        except asyncio.CancelledError:
            with self.lock:
                self.log.append("unbind-CANCELLED")
            raise
        finally:
            with self.lock:
                self.running -= 1

    def delay(self, most: float) -> float:
        return most if most <= 0 else random.random() * most

    def held(self) -> dict[str, int]:
        with self.lock:
            return {key: count for key, count in self.bound.items() if count}


def _listed(user: III, type_id: str) -> list[str]:
    return sorted(t["id"] for t in user.trigger({"function_id": "engine::triggers::list", "payload": {}})["triggers"]
                  if t["trigger_type"] == type_id)


def _idle(owner: III) -> bool:
    host = owner._trigger_host
    return not host._busy and not host._detached and not host._background and owner._owning == 0


# ---- the host alone: deterministic ----------------------------------------------------------------------------------

async def test_a_bind_finishing_past_its_deadline_in_a_thread_is_unbound_by_its_handler() -> None:
    resources: list[str] = []
    unbinds: list[str] = []
    finish = threading.Event()

    def create(trigger_id: str) -> None:  # (e.g. a webhook made with a blocking client)
        finish.wait(10)
        resources.append(trigger_id)

    class Slow(TriggerHandler[Any]):
        async def register_trigger(self, config: TriggerConfig[Any]) -> None:
            await asyncio.get_running_loop().run_in_executor(None, create, config.id)

        async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
            unbinds.append(config.id)
            resources.remove(config.id)

    host = TriggerTypeHost(hook_deadline=0.1)
    host.add("hook", Slow())
    answer = await host.register("hook", "t1", "f", {}, generation=1)
    assert answer is not None and answer["code"] == "trigger_registration_failed"
    finish.set()
    # before: the bind's coroutine was cancelled at the deadline; the thread made the resource anyway and nothing
    # unbound it (the engine, told it was refused, sends no unregistertrigger)
    await until(lambda: unbinds == ["t1"])
    assert resources == []


async def test_an_unbind_finishing_past_its_deadline_runs_to_its_end() -> None:
    handler = _Counting(unbind_delay=0.0)
    handler.unbind_gate = threading.Event()
    host = TriggerTypeHost(hook_deadline=0.1)
    host.add("hook", handler)
    assert await host.register("hook", "t1", "f", {}, generation=1) is None
    await asyncio.wait_for(host.unregister("hook", "t1", "f", {}), 5)  # (no longer waited for past 0.1 s)
    assert handler.log == ["bind", "unbind-start"]
    handler.unbind_gate.set()
    # before: cancelled at the deadline, counted as unbound: the handler kept the binding
    await until(lambda: handler.running == 0 and not host._detached)
    assert handler.log == ["bind", "unbind-start", "unbind-done"]
    assert handler.held() == {}


async def test_the_handlers_next_bind_waits_for_its_unbind_a_second_release_stopped_waiting_for() -> None:
    handler = _Counting()
    handler.unbind_gate = threading.Event()
    host = TriggerTypeHost()  # (no deadline: a release alone stops the wait)
    host.add("hook", handler)
    assert await host.register("hook", "t1", "f", {}, generation=1) is None
    first = host.release("hook")
    assert first is not None
    unbinding = asyncio.ensure_future(first)
    await until(lambda: handler.log == ["bind", "unbind-start"])
    host.add("hook", handler)  # owned again: the engine sends t1 again; its bind waits for the unbind's turn
    resent = asyncio.ensure_future(host.register("hook", "t1", "f", {}, generation=1))
    assert ("hook", "t1") in host._busy  # (the unbind's turn)
    assert host.release("hook") is None  # let go again: the running unbind no longer waited for
    await asyncio.wait_for(unbinding, 5)
    # (the type let go before, or while, it waited: not bound)
    assert await asyncio.wait_for(resent, 5) in (None, {"code": "trigger_type_not_found",
                                                        "message": "Trigger type not found"})
    host.add("hook", handler)
    again = asyncio.ensure_future(host.register("hook", "t1", "f", {}, generation=1))
    await until(lambda: ("hook", "t1") in host._busy)
    # before: this bind cancelled the unbind and bound t1 a second time
    assert handler.log == ["bind", "unbind-start"] and not again.done()
    handler.unbind_gate.set()
    assert await asyncio.wait_for(again, 5) is None
    assert handler.log == ["bind", "unbind-start", "unbind-done", "bind"]
    assert handler.held() == {"t1": 1} and handler.most == 1


async def test_the_handlers_next_bind_waits_for_its_hung_bind_at_most_the_deadline_then_is_refused(
        caplog: pytest.LogCaptureFixture) -> None:
    journal: list[str] = []

    class FirstHangs(TriggerHandler[Any]):
        async def register_trigger(self, config: TriggerConfig[Any]) -> None:
            journal.append("bind")
            if len(journal) == 1:
                await asyncio.Event().wait()

        async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
            journal.append("unbind")

    host = TriggerTypeHost(hook_deadline=0.1)
    host.add("hook", FirstHangs())
    refused = await asyncio.wait_for(host.register("hook", "t1", "f", {}, generation=1), 5)
    assert refused is not None and refused["code"] == "trigger_registration_failed"
    with caplog.at_level(logging.ERROR, logger="iii.trigger_host"):
        # sent again (the type registered again): waits for the hung bind 0.1 s more, then is refused, logged, the
        # hook not called a second time alongside it (before re-attack G F4: called again on every retry)
        again = await asyncio.wait_for(host.register("hook", "t1", "f", {}, generation=1), 5)
    assert again == {"code": "trigger_registration_failed",
                     "message": "its previous register_trigger is still running"}
    assert journal == ["bind"]
    assert any("still runs; the handler's binds of the trigger are refused" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert len(host._detached[("hook", "t1")]) == 1  # (runs on, never cancelled)
    host.cancel_hooks()  # (the client's shutdown: the only place a hook is cancelled)
    await until(lambda: not host._detached)


async def test_an_unbind_its_type_let_go_while_it_waited_runs_after_the_hook_before_it() -> None:
    # (white-box: a handler's unbind of a trigger waiting for its earlier hook of it, left running in the background)
    journal: list[str] = []
    gate = asyncio.Event()

    class Hooks(TriggerHandler[Any]):
        async def register_trigger(self, config: TriggerConfig[Any]) -> None:
            journal.append("bind")

        async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
            journal.append("unbind")

    async def earlier() -> None:
        await gate.wait()
        journal.append("earlier-done")

    handler, key, trigger = Hooks(), ("hook", "t1"), TriggerConfig(id="t1", function_id="f", config={})
    host = TriggerTypeHost()
    host.add("hook", handler)
    loop = asyncio.get_running_loop()
    task = loop.create_task(trigger_host._guarded(earlier()))
    host._detach(key, trigger_host._Detached(task, handler, trigger, False, loop.time() + 30))
    unbinding = asyncio.ensure_future(host._unbind(key, handler, trigger))
    await until(lambda: key in host._waits)
    assert host.release("hook") is None  # let go: the unbind is no longer waited for, and not dropped
    await asyncio.wait_for(unbinding, 5)
    assert journal == []
    gate.set()
    await until(lambda: journal == ["earlier-done", "unbind"] and not host._detached)


# ---- with the engine ------------------------------------------------------------------------------------------------

def test_releasing_a_type_twice_while_its_unbind_runs_leaves_the_trigger_bound_once(
        real: RealEngineThread, make_real_worker: MakeWorker) -> None:
    owner, user = make_real_worker("owner"), make_real_worker("user")
    handler = _Counting()
    handler.unbind_gate = threading.Event()
    kind = {"id": "hook", "description": "d"}
    owner.register_trigger_type(kind, handler)
    real.wait_for(lambda: "hook" in real.worker_trigger_types())
    user.register_trigger({"type": "hook", "function_id": "u::f", "config": {}})
    real.run(until(lambda: handler.log == ["bind"]))
    owner.unregister_trigger_type({"id": "hook"})
    real.run(until(lambda: handler.log == ["bind", "unbind-start"]))
    owner.register_trigger_type(kind, handler)
    owner.unregister_trigger_type({"id": "hook"})
    owner.register_trigger_type(kind, handler)
    handler.unbind_gate.set()
    # before: the second re-registration's bind cancelled the release's unbind: ['bind', 'unbind-start',
    # 'unbind-CANCELLED', 'bind'], two bindings held for the one trigger listed
    real.run(until(lambda: handler.log[-1:] == ["bind"] and handler.running == 0 and _idle(owner)))
    # Each unbind ran to its end, between two binds: ["bind", "unbind-start", "unbind-done", "bind"], or, when the
    # first re-registration's bind ended before the second release came, that unbind and bind once more (a CI run)
    log = handler.log
    assert log[:4] == ["bind", "unbind-start", "unbind-done", "bind"], log
    assert log[4:] in ([], ["unbind-start", "unbind-done", "bind"]), log
    listed = _listed(user, "hook")
    assert len(listed) == 1 and handler.held() == {listed[0]: 1}


@pytest.mark.parametrize(("deadline_ms", "seed"), [(0, 1), (0, 2), (150, 3)])
def test_a_storm_of_releases_leaves_each_listed_trigger_bound_once(
        real: RealEngineThread, make_real_worker: MakeWorker, deadline_ms: int, seed: int) -> None:
    rng = random.Random(seed)
    random.seed(seed)  # (the hooks' durations)
    owner = make_real_worker("owner", invocation_timeout_ms=deadline_ms)
    user = make_real_worker("user")
    handler = _Counting(bind_delay=0.3, unbind_delay=0.15)
    kind = {"id": "hook", "description": "d"}
    owner.register_trigger_type(kind, handler)
    real.wait_for(lambda: "hook" in real.worker_trigger_types())
    for i in range(12):
        user.register_trigger({"type": "hook", "function_id": "u::f", "config": {"i": i}})
    registry = real.engine.registry
    for _ in range(15):  # (the pauses shape the storm; nothing waits on them)
        owner.unregister_trigger_type({"id": "hook"})
        time.sleep(rng.random() * 0.05)
        owner.register_trigger_type(kind, handler)
        time.sleep(rng.random() * 0.05)

    def settled() -> bool:
        if handler.running or not _idle(owner):
            return False
        listed = [entry.id for entry in registry.triggers.values() if entry.trigger_type == "hook"]
        return handler.held() == dict.fromkeys(listed, 1)

    started = time.monotonic()
    try:
        real.run(until(settled, within=15), 20)
    except AssertionError:
        listed = _listed(user, "hook")
        held = handler.held()
        wrong = {k: v for k, v in held.items() if v != 1 or k not in listed} | {k: 0 for k in listed if k not in held}
        # before: 8-10 of 12 wrong (two to four bindings for one listed trigger: 19-30 held for 7-12 listed)
        pytest.fail(f"after {time.monotonic() - started:.1f} s: engine lists {len(listed)}, handler holds "
                    f"{sum(held.values())}; {len(wrong)} wrong: {wrong}")
    if deadline_ms == 0:  # (with a deadline, a hook still running past twice it may overlap the next: logged)
        assert handler.most == 1
