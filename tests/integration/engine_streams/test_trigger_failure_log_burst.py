"""A trigger handler that fails on every event is logged in bursts: the first lines of each interval one by one,
the rest in one count naming the latest (before, one warning per failed call: 2,500 lines a second on a busy
stream)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.stream.triggers import StreamTriggers
from iii_engine.modules.trigger_set import FAILURE_LOG_BURST
from tests.polling import until

from .helpers import Worker, WorkerError, registered, trigger_active

pytestmark = pytest.mark.timeout(30)


async def test_a_handler_failing_on_every_event_is_logged_in_a_burst_and_a_count(
        caplog: pytest.LogCaptureFixture) -> None:
    failed = 0

    async def broken(data: Any) -> None:
        nonlocal failed
        failed += 1
        raise WorkerError("boom", f"event {failed}")

    config = EngineConfig(host="127.0.0.1", port=0,
                          modules=[ModuleSpec("modules::stream::StreamModule", {"host": "127.0.0.1", "port": 0})])
    with caplog.at_level(logging.WARNING, logger="iii_engine"):
        async with Engine(config=config) as engine:
            worker = await Worker.connect(engine.url)
            try:
                await worker.register("h", broken)
                await registered(engine, "h")
                subscribed = await worker.trigger("stream", "h", {"stream_name": "s", "group_id": "", "item_id": ""})
                await trigger_active(engine, subscribed)
                for n in range(50):
                    await worker.result("stream::set", {"stream_name": "s", "group_id": "g", "item_id": str(n),
                                                        "data": n})
                await until(lambda: failed == 50, 10)
                # a round trip after the last answer: the engine has taken it, and logged or counted its failure
                await worker.result("stream::get", {"stream_name": "s", "group_id": "g", "item_id": "0"})
            finally:
                await worker.close()
        # the engine's stop wrote the count of the failures past the burst
    lines = [r.getMessage() for r in caplog.records]
    one_by_one = [line for line in lines if line.startswith(f"trigger {subscribed}: h failed: boom: ")]
    counted = [line for line in lines if line.startswith("stream trigger handlers: ")]
    assert len(one_by_one) == FAILURE_LOG_BURST
    # the first one past the burst at once, the rest at the end of the interval (here the engine's stop)
    assert 1 <= len(counted) <= 2
    assert sum(int(line.split()[3]) for line in counted) == failed - FAILURE_LOG_BURST
    assert counted[0].startswith(f"stream trigger handlers: 1 more call(s) failed, not logged one by one (past 10 "
                                 f"lines per 10 s): 1 of trigger {subscribed} (h); latest: trigger {subscribed}: h "
                                 "failed: boom: event ")


async def test_a_count_of_failures_names_each_trigger_busiest_first() -> None:
    """One trigger failing on every event must not hide another failing once: the count names both."""
    lines: list[str] = []
    runner = StreamTriggers.__new__(StreamTriggers)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("iii_engine.modules.trigger_set.log.warning", lambda *args: lines.append(args[0] % args[1:]))
        runner._log_failure_counts({"trigger a (f)": 15, "trigger b (g)": 1}, None)
        runner._log_failure_counts({f"trigger t{n} (f)": 10 - n for n in range(8)}, "x")
    assert lines == [
        "stream trigger handlers: 16 more call(s) failed, not logged one by one (past 10 lines per 10 s): 15 of "
        "trigger a (f), 1 of trigger b (g)",
        "stream trigger handlers: 52 more call(s) failed, not logged one by one (past 10 lines per 10 s): 10 of "
        "trigger t0 (f), 9 of trigger t1 (f), 8 of trigger t2 (f), 7 of trigger t3 (f), 6 of trigger t4 (f) and 12 of "
        "3 other trigger(s); latest: x"]
