"""An enqueue whose wait for a Redis connection ran out says the job was not enqueued: the push never left the
engine. A failure after the push was sent keeps saying the job may have been stored (and then runs).

Before: both said "the store did not confirm job <id> ... (if it reached the store, it will run)", although a
push that found every pooled connection busy for the pool's whole wait never reached Redis.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fake_services import FakeServices
from test_queue_stop import _drop_keys

from iii_engine.modules.base import EngineError
from iii_engine.modules.queue.module import QueueModule
from tests.services import require_redis

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]


@pytest.fixture
async def module(services: FakeServices) -> AsyncIterator[QueueModule]:
    url, prefix = require_redis(), f"poolwait-{uuid.uuid4().hex[:8]}:"  # the Redis _drop_keys cleans
    adapter = {"class": "modules::queue::RedisAdapter",
               "config": {"redis_url": f"{url}?max_connections=1&timeout=0.2", "key_prefix": prefix}}
    started = QueueModule(services, {"queue_configs": {"jobs": {}}, "adapter": adapter})
    await started.start()
    try:
        yield started
    finally:
        await started.stop()
        await _drop_keys(prefix)


async def test_an_enqueue_whose_pool_wait_ran_out_says_it_was_not_enqueued(module: QueueModule) -> None:
    pool: Any = module.store._redis.connection_pool  # type: ignore[attr-defined] - the pool is what is under test
    held = await pool.get_connection()  # the pool's only connection: the push waits 0.2 s for it, then gives up
    try:
        with pytest.raises(EngineError) as refused:
            await module.enqueue("jobs", "orders::process", {"n": 1})
    finally:
        await pool.release(held)
    message = refused.value.message
    assert refused.value.code == "enqueue_error"
    assert message.startswith("Queue 'jobs': the job was not enqueued (it never reached the store): "), message
    assert "Redis connection pool exhausted" in message
    assert "if it reached the store" not in message
    counts = await module.store.counts("__fn_queue::jobs")
    assert (counts.waiting, counts.active, counts.delayed) == (0, 0, 0)  # indeed nothing was stored
