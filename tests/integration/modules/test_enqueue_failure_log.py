"""Failed enqueues in the engine's log: clipped and rate-limited. Before, each failure wrote one warning quoting
the queue name whole (a 100,000-character name came back whole in every line), so a producer retrying into a full
queue, or sending garbage, wrote the log as fast as it sent."""

from __future__ import annotations

import logging

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec

pytestmark = pytest.mark.our_engine("configures a queue")

QUEUE = "modules::queue::QueueModule"


async def test_failed_enqueues_log_one_clipped_line_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    settings = {"queue_configs": {"small": {"max_jobs": 1}}}
    config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(QUEUE, settings)])
    huge = "q" * 100_000
    with caplog.at_level(logging.WARNING, logger="iii_engine.invocations"):
        async with Engine(config=config) as engine, ModuleWorker(engine.url) as worker:
            first = await worker.call("nobody::home", 1, action={"type": "enqueue", "queue": "small"})
            assert "error" not in first  # the one job the queue holds
            replies = [await worker.call("nobody::home", i, action={"type": "enqueue", "queue": name})
                       for i in range(40) for name in ("small", huge)]
            # every caller still hears its own failure, whole
            assert all(reply["error"]["code"] == "enqueue_error" for reply in replies)
    lines = [r.getMessage() for r in caplog.records if "enqueue" in r.getMessage()]
    assert len(lines) <= 2, lines  # the first at once, the rest counted in one line at the interval's end or stop
    assert all(len(line) < 2_000 for line in lines), [len(line) for line in lines]
    assert lines[0].startswith("1 enqueue(s) failed since the last warning; latest: enqueue of 'nobody::home' on "
                               "queue 'small' for worker ")
    if len(lines) == 2:
        assert lines[1].startswith("79 enqueue(s) failed since the last warning")
