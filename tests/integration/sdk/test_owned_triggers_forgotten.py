"""What the client's session keeps of the triggers bound to its trigger types goes with them (attack on
registrations, F6).

Before: ``ClientSession._owned_triggers`` forgot a trigger only on the engine's ``unregistertrigger`` or a refusal. A
trigger a reconnect's sweep found gone (its registrant went with an engine restart) gets no unregistertrigger: a
provider whose 500 triggers vanished with each restart kept 500 more entries per restart. Nor do the triggers of a type
released with ``unregister_trigger_type`` while disconnected.
"""

from __future__ import annotations

import functools

from iii import III

from .conftest import MakeWorkerAt, RealEngineThread, reconnected, wait_until
from .test_reconnect_owned_triggers import Ledger

COUNT = 50


def _kept(owner: III) -> int:
    return len(owner._session._owned_triggers)


def _owner_holding(real: RealEngineThread, workers: MakeWorkerAt, handler: Ledger) -> tuple[III, III]:
    """An owner of type ``tick`` whose handler holds :data:`COUNT` triggers of a user's."""
    owner, user = workers(real.url, "owner"), workers(real.url, "user")
    owner.register_trigger_type({"id": "tick", "description": "every tick"}, handler)
    real.wait_for(lambda: "tick" in real.worker_trigger_types())
    for n in range(COUNT):
        user.register_trigger({"type": "tick", "function_id": "u::job", "config": {"n": n}})
    assert handler.wait(lambda: len(handler.bound) == COUNT)
    assert _kept(owner) == COUNT
    return owner, user


def test_triggers_gone_with_an_engine_restart_are_forgotten(real: RealEngineThread, workers: MakeWorkerAt) -> None:
    handler = Ledger()
    owner, user = _owner_holding(real, workers, handler)
    for _ in range(2):  # each restart: the user leaves while the engine is down, its triggers go with it
        old = owner.worker_id
        real.stop()
        user.shutdown()
        real.start()
        wait_until(functools.partial(reconnected, owner, old))
        assert handler.wait(lambda: not handler.bound), handler.bound  # the sweep unbound them
        assert _kept(owner) == 0  # before: 50 after the first restart, 100 after the second
        assert owner._trigger_host._sent == {}
        user = workers(real.url, "user")
        for n in range(COUNT):
            user.register_trigger({"type": "tick", "function_id": "u::job", "config": {"n": n}})
        assert handler.wait(lambda: len(handler.bound) == COUNT)
        assert _kept(owner) == COUNT


def test_a_type_released_while_disconnected_forgets_its_triggers(real: RealEngineThread,
                                                                 workers: MakeWorkerAt) -> None:
    handler = Ledger()
    owner, _ = _owner_holding(real, workers, handler)
    real.stop()
    wait_until(lambda: owner.get_connection_state() != "connected")
    owner.unregister_trigger_type({"id": "tick"})
    assert _kept(owner) == 0  # before: 50, for as long as the worker lived
    assert handler.wait(lambda: not handler.bound)  # (its handler unbound them, as before)
    real.start()
