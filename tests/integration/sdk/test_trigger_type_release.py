"""A worker letting go of its trigger type: its handler unbinds every trigger it holds (attack registry F5)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from iii import III
from iii.triggers import TriggerConfig

from .conftest import MakeWorker, RealEngineThread
from .test_registrations import Recorder


def _owner_and_user(real: RealEngineThread, make_real_worker: MakeWorker, type_id: str,
                    handler: Recorder) -> tuple[III, III]:
    """A worker owning ``type_id`` through ``handler`` (the engine knows it), and another to register triggers."""
    owner, user = make_real_worker("owner"), make_real_worker("user")
    owner.register_trigger_type({"id": type_id, "description": "d"}, handler)
    real.wait_for(lambda: type_id in real.worker_trigger_types())
    return owner, user


def test_unregister_trigger_type_unbinds_the_handlers_triggers(real: RealEngineThread,
                                                               make_real_worker: MakeWorker) -> None:
    handler = Recorder()
    owner, user = _owner_and_user(real, make_real_worker, "picky", handler)
    user.register_trigger({"type": "picky", "function_id": "u::f", "config": {"n": 1}})
    user.register_trigger({"type": "picky", "function_id": "u::f", "config": {"fail": True}})
    assert handler.wait(lambda: len(handler.registered) == 1)
    pending = real.engine.registry.pending_triggers
    real.wait_for(lambda: len(pending) == 1)  # the refused one
    owner.unregister_trigger_type({"id": "picky"})
    # the trigger it bound is unbound, once (the engine's unregistertrigger for it comes after the type is gone)
    (bound,) = handler.registered
    assert handler.wait(lambda: handler.unregistered == [bound])
    real.wait_for(lambda: len(pending) == 2 and not real.worker_triggers())
    owner.list_functions()  # a round trip: every frame the engine sent the owner before is handled
    assert handler.unregistered == [bound]


class _Slow(Recorder):
    """Binds a trigger only once ``go`` is set, telling ``started`` when it began."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.go = threading.Event()

    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        self.started.set()
        await asyncio.to_thread(self.go.wait, 5)
        await super().register_trigger(config)


def test_a_type_let_go_while_its_handler_binds_a_trigger_has_it_unbound(real: RealEngineThread,
                                                                         make_real_worker: MakeWorker) -> None:
    handler = _Slow()
    owner, user = _owner_and_user(real, make_real_worker, "slow", handler)
    user.register_trigger({"type": "slow", "function_id": "u::f", "config": {}})
    assert handler.started.wait(5)
    owner.unregister_trigger_type({"id": "slow"})  # release() finds nothing bound yet
    handler.go.set()
    # before: bound for good (the engine's unregistertrigger reached a type no longer owned here, skipped)
    assert handler.wait(lambda: len(handler.registered) == 1 and handler.unregistered == list(handler.registered))
