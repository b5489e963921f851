"""A stream leave-trigger dispatch cancelled before it ever ran gives its ``max_fired_calls`` slots back."""

from __future__ import annotations

from fake_services import FakeServices

from iii.iii_types import TriggerInfo
from iii_engine.modules.stream.triggers import JoinLeaveTriggers


async def test_a_leave_dispatch_cancelled_before_it_ran_gives_every_slot_back(services: FakeServices) -> None:
    """Before, ``run_detached`` handed its task no slot count, so a close() in the same turn (the stream module's
    stop) cancelled it before its ``finally`` could give the slots back: two slots fewer, for good."""
    called = services.collect("on::leave")
    leave = JoinLeaveTriggers(services)  # type: ignore[arg-type]
    for n in range(2):
        await leave.register(TriggerInfo(id=f"t{n}", trigger_type="stream:leave", function_id="on::leave",
                                         config={"stream_name": "s"}))
    leave.run_detached({"stream_name": "s", "group_id": "g"})
    assert services.fired_calls.stats()["in_flight"] == 2
    await leave.close()  # same turn: the task never ran
    assert called == []
    assert services.fired_calls.stats()["in_flight"] == 0
