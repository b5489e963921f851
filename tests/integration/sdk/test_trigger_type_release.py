"""A worker letting go of its trigger type: its handler unbinds every trigger it holds (attack registry F5)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .conftest import MakeWorker, RealEngineThread, workers_of
from .test_registrations import Recorder


@pytest.fixture
def make_real_worker(real: RealEngineThread) -> Iterator[MakeWorker]:
    yield from workers_of(real.url)


def test_unregister_trigger_type_unbinds_the_handlers_triggers(real: RealEngineThread,
                                                               make_real_worker: MakeWorker) -> None:
    owner, user = make_real_worker("owner"), make_real_worker("user")
    handler = Recorder()
    owner.register_trigger_type({"id": "picky", "description": "d"}, handler)
    real.wait_for(lambda: "picky" in real.worker_trigger_types())
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
