"""A client's shutdown cancels its handlers' tasks, the engine's binds and unbinds of custom triggers among them: a
``register_trigger`` hook under way then runs on, and its binding is unbound should its type be let go during the
shutdown's wait for the releases (at most ``CANCEL_WAIT_S`` in all); a hook that shuts its own client down is not
cancelled; a seeded storm of triggers and types registered and let go while the owner shuts down leaves no binding of
a type let go without its ``unregister_trigger`` having run.

Before: the bind's hook was cancelled with its task (a bind in a thread bound all the same, and nobody unbound it;
one ending at the very moment was never noted as bound), a hook shutting its client down got ``CancelledError`` out
of its own ``shutdown_async``, and the storm left 11 bindings never unbound in 5 of 20 runs.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from typing import Any

import pytest

from iii import III, InitOptions
from iii.iii import register_worker
from iii.loop_bridge import CANCEL_WAIT_S
from iii.triggers import TriggerConfig, TriggerHandler
from tests.polling import until

from .conftest import MakeWorker, RealEngineThread
from .test_trigger_host_shutdown import NotedHooks


class _Gated(NotedHooks):
    """A bind works in a thread until ``bind_gate`` is set; an unbind waits for ``unbind_gate``."""

    def __init__(self) -> None:
        super().__init__()
        self.bind_gate = threading.Event()
        self.unbind_gate = threading.Event()
        self.binding: list[str] = []
        self.bound: list[str] = []
        self.unbound: list[str] = []

    def _bind(self, trigger_id: str) -> None:
        assert self.bind_gate.wait(20)
        with self.lock:
            self.bound.append(trigger_id)

    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        with self.lock:
            self.binding.append(config.id)
        await asyncio.to_thread(self._bind, config.id)

    async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
        await self.noted(asyncio.to_thread(self.unbind_gate.wait, 20), config.id, self.unbound)


def test_a_bind_under_way_at_shutdown_is_unbound_when_its_type_is_let_go_during_the_wait(
        real: RealEngineThread, make_real_worker: MakeWorker) -> None:
    owner, user = make_real_worker("owner"), make_real_worker("user")
    gone, slow = _Gated(), _Gated()
    slow.bind_gate.set()
    owner.register_trigger_type({"id": "gone", "description": "d"}, gone)
    owner.register_trigger_type({"id": "slow", "description": "d"}, slow)
    real.wait_for(lambda: {"gone", "slow"} <= real.worker_trigger_types())
    user.register_trigger({"type": "slow", "function_id": "u::f", "config": {}})
    real.run(until(lambda: len(slow.bound) == 1))
    user.register_trigger({"type": "gone", "function_id": "u::f", "config": {}})
    real.run(until(lambda: len(gone.binding) == 1))  # (its hook works in a thread)
    owner.unregister_trigger_type({"id": "slow"})  # (its unbind, waiting for its gate, holds the shutdown's wait)
    started = time.monotonic()
    shutdown = threading.Thread(target=owner.shutdown)
    shutdown.start()
    host = owner._trigger_host
    real.run(until(lambda: host._finishing is not None))  # the handlers' tasks cancelled: the wait runs
    owner.unregister_trigger_type({"id": "gone"})  # let go during the wait, its bind not noted yet
    gone.unbind_gate.set()
    gone.bind_gate.set()  # the bind ends
    real.run(until(lambda: len(gone.unbound) == 1))
    slow.unbind_gate.set()
    shutdown.join(CANCEL_WAIT_S + 5)
    took = time.monotonic() - started
    assert not shutdown.is_alive()
    assert len(gone.bound) == 1
    # before: [] (the hook's await was cancelled with its task; its thread bound the trigger all the same)
    assert gone.unbound == gone.bound and gone.cancelled == []
    assert slow.unbound == slow.bound and slow.cancelled == []
    assert took < CANCEL_WAIT_S, took


def test_a_bind_in_a_thread_whose_trigger_is_unregistered_before_the_shutdown_is_unbound(
        real: RealEngineThread, make_real_worker: MakeWorker) -> None:
    owner, user = make_real_worker("owner"), make_real_worker("user")
    hooks = _Gated()
    hooks.unbind_gate.set()
    owner.register_trigger_type({"id": "kept", "description": "d"}, hooks)
    real.wait_for(lambda: "kept" in real.worker_trigger_types())
    trigger = user.register_trigger({"type": "kept", "function_id": "u::f", "config": {}})
    real.run(until(lambda: len(hooks.binding) == 1))  # (its hook works in a thread)
    host = owner._trigger_host
    trigger.unregister()  # the engine's unbind of it waits behind the bind; its type stays owned
    real.run(until(lambda: ("kept", hooks.binding[0]) not in host._sent))
    shutdown = threading.Thread(target=owner.shutdown)
    shutdown.start()
    real.run(until(lambda: host.finishing or not shutdown.is_alive()))
    hooks.bind_gate.set()  # the bind ends (during the shutdown's wait; before: after the shutdown returned)
    real.run(until(lambda: len(hooks.unbound) == 1))  # before: never (the bind's hook cancelled, its thread bound)
    shutdown.join(CANCEL_WAIT_S + 5)
    assert not shutdown.is_alive()
    assert hooks.unbound == hooks.bound == hooks.binding and hooks.cancelled == []


# The main thread ends with no shutdown(): an engine's unbind of a type still owned hangs (cancellable) and a function
# handler swallows its cancel, so the exit's wait (EXIT_WAIT_S) ends while the shutdown waits for the unbind.
_EXIT_SCRIPT = textwrap.dedent("""
    import asyncio, sys, threading, time
    from iii import InitOptions
    from iii.iii import register_worker

    url = sys.argv[1]
    started, entered = threading.Event(), threading.Event()

    class Hangs:
        async def register_trigger(self, config):
            pass

        async def unregister_trigger(self, config):
            started.set()
            await asyncio.sleep(100)

    async def swallows(data):
        entered.set()
        end = time.monotonic() + 20
        while time.monotonic() < end:
            try:
                await asyncio.sleep(end - time.monotonic())
            except asyncio.CancelledError:
                pass

    owner = register_worker(url, InitOptions(worker_name="owner"))
    user = register_worker(url, InitOptions(worker_name="user"))
    owner.register_trigger_type({"id": "exit_t", "description": "d"}, Hangs())
    owner.register_function({"id": "o::swallows"}, swallows)
    trigger = user.register_trigger({"type": "exit_t", "function_id": "u::f", "config": {}})

    def call():
        while not entered.is_set():  # (until the engine has the function: 'not found' before)
            try:
                user.trigger({"function_id": "o::swallows", "payload": {}})
            except Exception:
                time.sleep(0.05)

    threading.Thread(target=call, daemon=True).start()
    assert entered.wait(10)
    while owner._trigger_host._bound.get("exit_t") is None:
        time.sleep(0.01)
    trigger.unregister()
    assert started.wait(10)
    print("main ends", flush=True)
""")


def test_the_exit_wait_names_the_unbinds_it_was_waiting_for(real: RealEngineThread) -> None:
    done = subprocess.run([sys.executable, "-c", _EXIT_SCRIPT, real.url], capture_output=True, text=True, timeout=25)
    assert "main ends" in done.stdout, done.stderr
    lines = [line for line in done.stderr.splitlines() if "at the interpreter's exit did not end within" in line]
    assert len(lines) == 1, done.stderr
    # before: "(its event loop is held: an async handler that blocks it, say)", the loop turning all along
    # (then: "its trigger types' unregister_trigger hooks", claiming more than it knows: a handler may hold the
    # loop during the wait, and a bind may be what it waits for)
    assert ("(it was waiting for trigger-type hooks still running (3 s at most), or its event loop was held: an async "
            "handler that blocks it, say)") in lines[0], lines


def test_a_bind_hook_shutting_its_client_down_is_not_cancelled(
        real: RealEngineThread, make_real_worker: MakeWorker) -> None:
    outcome: list[str] = []
    ended = threading.Event()
    client: list[III] = []

    class ShutsItsClientDown(TriggerHandler[Any]):
        async def register_trigger(self, config: TriggerConfig[Any]) -> None:
            try:
                await client[0].shutdown_async()
            except BaseException as exc:
                outcome.append(type(exc).__name__)
                raise
            else:
                outcome.append("returned")
            finally:
                ended.set()

        async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
            pass

    owner, user = make_real_worker("owner"), make_real_worker("user")
    client.append(owner)
    owner.register_trigger_type({"id": "quits", "description": "d"}, ShutsItsClientDown())
    real.wait_for(lambda: "quits" in real.worker_trigger_types())
    user.register_trigger({"type": "quits", "function_id": "u::f", "config": {}})
    assert ended.wait(15)
    # before: ['CancelledError'] (the shutdown cancelled the bind's task, and the hook with it)
    assert outcome == ["returned"], outcome
    owner._bridge.thread.join(5)  # (the loop ends once the hook has: the client is done)
    assert not owner._bridge.alive


class _Ledger(TriggerHandler[Any]):
    """Counts, per trigger, the binds that returned and the unbinds called; each hook works a little while."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.bound: Counter[str] = Counter()
        self.unbinds: Counter[str] = Counter()
        self.unbound: Counter[str] = Counter()

    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        with self.lock:
            delay = self.rng.choice([0, 0, 0.001, 0.002, 0.005, 0.01, 0.02])
        if delay:
            await asyncio.sleep(delay)
        with self.lock:
            self.bound[config.id] += 1

    async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
        with self.lock:
            delay = self.rng.choice([0, 0, 0.001, 0.005, 0.05])
            self.unbinds[config.id] += 1
        if delay:
            await asyncio.sleep(delay)
        with self.lock:
            self.unbound[config.id] += 1


_TYPES = [f"s{i}" for i in range(4)]


def _storm(url: str, real: RealEngineThread, seed: int) -> dict[str, int]:
    """Triggers and types registered and let go at random, then the owner shut down with binds in flight and its
    types let go while it shuts down. Bindings of the types let go (before the shutdown's wait ended) whose unbind
    was never called (``uncalled``) or did not run to its end (``unfinished``), and unbinds of no binding."""
    rng = random.Random(seed)
    owner = register_worker(url, InitOptions(worker_name="owner"))
    user = register_worker(url, InitOptions(worker_name="user"))
    try:
        ledgers = {t: _Ledger(seed * 100 + i) for i, t in enumerate(_TYPES)}
        owned = dict.fromkeys(_TYPES, True)
        for t in _TYPES:
            owner.register_trigger_type({"id": t, "description": "d"}, ledgers[t])
        real.wait_for(lambda: set(_TYPES) <= real.worker_trigger_types())
        triggers: list[Any] = []
        late: set[str] = set()

        def act(closing: bool) -> None:
            r, t = rng.random(), rng.choice(_TYPES)
            if r < 0.45 and not closing:
                triggers.append(user.register_trigger({"type": t, "function_id": "u::f", "config": {}}))
            elif r < 0.6 and triggers and not closing:
                triggers.pop(rng.randrange(len(triggers))).unregister()
            elif r < 0.8 and owned[t]:
                owned[t] = False
                owner.unregister_trigger_type({"id": t})
                if owner._trigger_host._finished:  # (maybe after the wait: said so in a warning, not unbound)
                    late.add(t)
            elif r >= 0.8 and not owned[t] and not closing:
                owned[t] = True
                owner.register_trigger_type({"id": t, "description": "d"}, ledgers[t])

        for _ in range(rng.randrange(40, 120)):
            act(False)
            if rng.random() < 0.3:
                time.sleep(rng.choice([0, 0.001, 0.003]))
        for _ in range(rng.randrange(10, 60)):  # binds in flight as the shutdown starts
            t = rng.choice([t for t in _TYPES if owned[t]] or _TYPES)
            triggers.append(user.register_trigger({"type": t, "function_id": "u::f", "config": {}}))
        time.sleep(rng.choice([0, 0.002, 0.005, 0.01, 0.02]))
        shutdown = threading.Thread(target=owner.shutdown)
        shutdown.start()
        while shutdown.is_alive():
            act(True)
            time.sleep(rng.choice([0, 0.0005, 0.001, 0.002]))
    finally:
        owner.shutdown()
        user.shutdown()
    let_go = [ledgers[t] for t in _TYPES if not owned[t] and t not in late]
    return {
        "uncalled": sum(max(0, n - ledger.unbinds[k]) for ledger in let_go for k, n in ledger.bound.items()),
        "unfinished": sum(max(0, n - ledger.unbound[k]) for ledger in let_go for k, n in ledger.bound.items()),
        "unbinds_of_nothing": sum(max(0, n - ledger.bound[k]) for ledger in ledgers.values()
                                  for k, n in ledger.unbinds.items()),
    }


@pytest.mark.parametrize("seed", [3, 6, 9, 18])
def test_a_storm_while_the_owner_shuts_down_leaves_no_binding_of_a_type_let_go(real: RealEngineThread,
                                                                               seed: int) -> None:
    counts = _storm(real.url, real, seed)
    # before: 1-4 bindings never unbound in about 1 of 4 runs (timing: the seeds fix the actions, not the loop)
    assert counts == {"uncalled": 0, "unfinished": 0, "unbinds_of_nothing": 0}, counts
