"""A handler that is a built-in which fires again (``publish``), run inline in the task holding its trigger's
fired-call slots, leaves those slots' bytes to be given back exactly, with no ``Invocations.call`` in between.

Before, a take recorded what it charged in the context, and the holding task's release read the record back. The
chained ``publish`` took in that same task after the worker's call was over, recording "no bytes" over the outer
record, so the release gave back none of the outer take's bytes: they stayed on ``bytes_in_flight`` and on the
worker's share for good. It was closed by a save/restore around each built-in ``Invocations.call`` runs inline; a
path that runs a built-in inline without it (here: the fake engine's ``invoke``, as a module of its own could)
leaked again. Now the take returns what it took and the task gives back exactly that.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from fake_services import FakeServices, started

from iii.iii_types import TriggerInfo
from iii_engine.limits import CallCharge, FiredCalls
from iii_engine.modules.pubsub import PubSubModule
from iii_engine.modules.stream.triggers import JoinLeaveTriggers
from iii_engine.modules.trigger_set import TriggerSet
from iii_engine.workers import Outbox, WorkerConnection
from tests.charges import worker_call
from tests.polling import until

pytestmark = pytest.mark.timeout(10)


async def _send(text: str) -> None:
    return None


async def _deliver(triggers: TriggerSet, payload: dict[str, Any], call: tuple[CallCharge, contextvars.Context]) -> None:
    # a state write's triggers (trigger_set._run_each): the writer's call takes their slots, spawns the task
    # running the handlers and is over (its charge given back, as the engine does as the call's task ends) before
    # that task runs
    charge, inside = call

    async def writer() -> None:
        await triggers.deliver(payload, "state::set")
        charge.give_back()

    await asyncio.get_running_loop().create_task(writer(), context=inside)


async def _run_detached(triggers: TriggerSet, payload: dict[str, Any],
                        call: tuple[CallCharge, contextvars.Context]) -> None:
    # a stream join's or leave's handlers: one task holding their slots (stream.triggers._run_holding)
    assert isinstance(triggers, JoinLeaveTriggers)
    charge, inside = call
    inside.run(triggers.run_detached, payload)
    charge.give_back()


Dispatch = Callable[[TriggerSet, dict[str, Any], tuple[CallCharge, contextvars.Context]], Awaitable[None]]


@pytest.mark.parametrize(("kind", "dispatch"), [(TriggerSet, _deliver), (JoinLeaveTriggers, _run_detached)])
async def test_a_builtin_run_inline_by_a_fired_handler_leaves_its_tasks_bytes_to_be_given_back(
        kind: type[TriggerSet], dispatch: Dispatch) -> None:
    services = FakeServices()
    fired = services.fired_calls = FiredCalls(100, 5000, max_fired_bytes=10_000, max_call_bytes_per_worker=10_000)
    delivered = services.queue_calls("sub::next")
    worker = WorkerConnection(outbox=Outbox(_send), id="w1")
    async with started(PubSubModule(services, {})):
        await services.trigger("subscribe", "next", "sub::next", {"topic": "next"})
        triggers = kind(services)
        await triggers.register(TriggerInfo(id="chain", trigger_type="t", function_id="publish", config={}))
        # the worker's call is over before its handler's task runs: the chained publish's take holds no bytes
        await dispatch(triggers, {"topic": "next", "data": "pad" * 100}, worker_call(worker, 300))
        assert await asyncio.wait_for(delivered.get(), 5) == "pad" * 100
        await until(lambda: fired.in_flight == 0)
        # before: (0, 300, 300): the outer slot went back with the chained take's "no bytes"
        assert (fired.in_flight, fired.bytes_in_flight, worker.call_bytes) == (0, 0, 0)
        await triggers.close()
