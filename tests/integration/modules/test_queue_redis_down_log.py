"""The queue module with Redis down logs one line, not a traceback per queue and poll, and one line when Redis
answers again. A real ``redis-server`` of our own, stopped and started under a running engine.

Before: every poll of every queue logged a full traceback (three queues: 144 tracebacks, 546 KB of log in 6 s).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from tests.integration.streams.private_redis import PrivateRedis

pytestmark = pytest.mark.our_engine("configures the queue module")

LOGGER = "iii_engine.modules.queue"


class Seen(logging.Handler):
    """Keeps the queue module's records; ``await reach(n, text)`` returns once ``n`` records say ``text``."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._changed.set()

    async def reach(self, n: int, text: str) -> None:
        while sum(text in r.getMessage() for r in self.records) < n:
            self._changed.clear()
            await self._changed.wait()


async def test_redis_down_is_one_line_and_back_is_one_line(tmp_path: Path) -> None:
    seen = Seen()
    logger = logging.getLogger(LOGGER)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(seen)
    try:
        with PrivateRedis(tmp_path) as server:
            await server.start()
            adapter = {"class": "modules::queue::RedisAdapter",
                       "config": {"redis_url": server.url, "key_prefix": "down-log:"}}
            # no backoff while the store fails: 30 failed polls quickly
            queues = {name: {"poll_interval_ms": 10, "store_retry_max_ms": 10} for name in ("a", "b", "c")}
            config = EngineConfig(host="127.0.0.1", port=0, modules=[
                ModuleSpec("modules::queue::QueueModule", {"adapter": adapter, "queue_configs": queues})])
            async with Engine(config=config):
                server.stop()
                await asyncio.wait_for(seen.reach(30, "store failed"), 20)  # 10 polls of each queue
                told = [r for r in seen.records if r.levelno >= logging.INFO and "store" in r.getMessage()]
                assert len(told) == 1, [r.getMessage() for r in told]
                assert told[0].levelno == logging.ERROR and told[0].exc_info is None
                assert "queue store failed (queue __fn_queue::" in told[0].getMessage()
                await server.start()
                await asyncio.wait_for(seen.reach(1, "queue store answers again"), 20)
        loud = [r for r in seen.records if r.levelno >= logging.INFO and r.exc_info is not None]
        assert not loud, [r.getMessage() for r in loud]
    finally:
        logger.removeHandler(seen)
        logger.setLevel(old_level)
