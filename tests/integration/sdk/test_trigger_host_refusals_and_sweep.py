"""A trigger type's owner forgets the triggers it refuses, and unbinds a reconnect's stale triggers a few at a time
(attack of 91b3d8c, F3 and F4).

Before: each refused trigger stayed in the owner's ``TriggerTypeHost._sent`` until a reconnect (the engine parks a
refused trigger and sends no unregistertrigger for it): 20,000 refused triggers registered then unregistered by another
worker grew it from 100 to 20,100 entries. And a sweep unbound its stale triggers one after the other: 200 with a 0.2 s
``unregister_trigger`` took 42.7 s to converge.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from iii.trigger_host import _SWEEP_CONCURRENCY, TriggerTypeHost
from iii.triggers import TriggerConfig, TriggerHandler

from .conftest import MakeWorkerAt, RealEngineThread, wait_until


class Refuser(TriggerHandler[Any]):
    """Refuses every trigger whose config says ``bad``."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        with self.lock:
            self.calls += 1
        if config.config.get("bad"):
            raise ValueError("refused")

    async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
        return None


def test_refused_triggers_are_not_kept_by_their_owner(real: RealEngineThread, workers: MakeWorkerAt) -> None:
    handler = Refuser()
    owner = workers(real.url, "owner")
    owner.register_trigger_type({"id": "tk", "description": "refuses some"}, handler)
    real.wait_for(lambda: "tk" in real.worker_trigger_types())
    user = workers(real.url, "user")
    user.register_function("u::job", lambda data: None)
    user.register_trigger({"type": "tk", "function_id": "u::job", "config": {"good": True}})
    refused = [user.register_trigger({"type": "tk", "function_id": "u::job", "config": {"bad": True, "i": i}})
               for i in range(50)]
    wait_until(lambda: handler.calls == 51)
    for trigger in refused:
        trigger.unregister()
    user.list_functions()  # a round trip: the engine had every unregister before it
    host = owner._trigger_host
    # before: 51 (each refused one kept)
    wait_until(lambda: len(host._sent) == 1, timeout=3)
    assert [key[0] for key in host._sent] == ["tk"]


async def test_a_send_queued_behind_a_refused_one_keeps_its_note() -> None:
    release = asyncio.Event()

    class SlowRefuser(TriggerHandler[Any]):
        async def register_trigger(self, config: TriggerConfig[Any]) -> None:
            if config.config.get("bad"):
                await release.wait()
                raise ValueError("refused")

        async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
            return None

    host = TriggerTypeHost()
    host.add("tk", SlowRefuser())
    first = asyncio.ensure_future(host.register("tk", "t1", "f", {"bad": True}, generation=1))
    second = asyncio.ensure_future(host.register("tk", "t1", "f", {"good": True}, generation=1))
    release.set()
    assert (await first) is not None
    assert (await second) is None
    assert host.holds  # the good one, bound, is still noted: a reconnect's sweep must see it
    assert await host.sweep(2, listed=set()) == 0
    assert not host.holds


async def test_a_sweep_unbinds_stale_triggers_at_once_up_to_a_bound() -> None:
    stale = 3 * _SWEEP_CONCURRENCY
    running = 0
    most = 0
    unbound: list[str] = []
    crowded = asyncio.Event()  # as many unbinds run as the bound allows

    class SlowUnbind(TriggerHandler[Any]):
        async def register_trigger(self, config: TriggerConfig[Any]) -> None:
            return None

        async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            if running == _SWEEP_CONCURRENCY:
                crowded.set()
            await crowded.wait()
            running -= 1
            unbound.append(config.id)

    host = TriggerTypeHost()
    host.add("tk", SlowUnbind())
    for i in range(stale):
        assert await host.register("tk", f"t{i}", "f", {}, generation=1) is None
    # before: one unbind at a time, waiting for others that never start (TimeoutError)
    assert await asyncio.wait_for(host.sweep(2, listed=set()), 5) == 0
    assert most == _SWEEP_CONCURRENCY
    assert sorted(unbound) == sorted(f"t{i}" for i in range(stale))
    assert not host.holds


class _ReleasedBetween(dict[Any, Any]):
    """A host's ``_sent`` whose every look at a key is followed by ``release()`` dropping it from another thread
    (the interleaving an attack hit 10 times in 8,409 rounds with a 1 µs switch interval)."""

    def get(self, key: Any, default: Any = None) -> Any:
        found = super().get(key, default)
        super().pop(key, None)
        return found


async def test_a_note_dropped_by_release_between_look_and_delete_raises_nothing() -> None:
    host = TriggerTypeHost()
    host.add("tk", Refuser())
    assert await host.register("tk", "t1", "f", {"good": True}, generation=1) is None
    host._sent = _ReleasedBetween(host._sent)
    # before: KeyError out of the sweep (the client's re-listing poll stopped with it), and out of _refused
    assert await host.sweep(2, listed=set()) == 0
    host._sent = _ReleasedBetween({("tk", "t2"): (1, 7)})
    host._refused(("tk", "t2"), 7)
