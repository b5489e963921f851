"""Results that end no call are logged rate-limited, not once per frame."""

from __future__ import annotations

import logging

import pytest

from iii_engine.invocations import Invocations
from iii_engine.registry import Registry
from iii_engine.workers import WorkerConnection


class _Sender:
    """Just what ``handle_result`` reads of a worker connection for a result that matches nothing."""

    id = "w1"

    def __init__(self) -> None:
        self.in_flight: set[str] = set()


async def test_a_flood_of_results_that_end_no_call_logs_once_and_counts_them(caplog: pytest.LogCaptureFixture) -> None:
    invocations = Invocations(Registry(), {})
    sender: WorkerConnection = _Sender()  # type: ignore[assignment]
    with caplog.at_level(logging.WARNING, logger="iii_engine.invocations"):
        for n in range(1000):
            invocations.handle_result(sender, {"invocation_id": f"id-{n}", "function_id": "f"})
    assert invocations.stray_results == 1000
    warnings = [r for r in caplog.records if r.name == "iii_engine.invocations"]
    assert len(warnings) == 1 and "id-0" in warnings[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="iii_engine.invocations"):
        await invocations.close()  # the burst's count is written when the engine stops
    [summary] = [r.getMessage() for r in caplog.records if r.name == "iii_engine.invocations"]
    assert "999 invocation result(s) ended no call" in summary and "1000 in all" in summary
