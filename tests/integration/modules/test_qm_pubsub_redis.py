"""Attack Q-M on the pubsub Redis adapter: what it receives from Redis that no engine published.

Before: a message on a subscribed topic that was not JSON (another Redis client's PUBLISH) was dropped without a
count or a word.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import pytest
from module_worker import ModuleWorker
from redis.asyncio import Redis
from test_engine_attack_pubsub import REDIS_HOST, REDIS_PORT, engine_on, listen

from iii_engine.modules.pubsub import bus as pubsub_bus
from tests.polling import until

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30),
              pytest.mark.our_engine("configures the pubsub Redis adapter")]


async def test_a_message_that_is_not_json_is_counted_and_logged_and_the_next_one_arrives(
        caplog: pytest.LogCaptureFixture) -> None:
    topic = f"qm-{uuid.uuid4()}"
    redis = Redis.from_url(f"redis://{REDIS_HOST}:{REDIS_PORT}/0")
    try:
        with caplog.at_level(logging.WARNING, logger=pubsub_bus.__name__):
            async with engine_on(f"redis://{REDIS_HOST}:{REDIS_PORT}/0") as engine, \
                    ModuleWorker(engine.url) as worker:
                bus: Any = engine.module("pubsub")._bus  # type: ignore[union-attr]
                got = await listen(worker, "qm::on", "qm-sub", topic)
                await redis.publish(topic, b"{not json")
                await redis.publish(topic, json.dumps({"n": 1}))
                assert await asyncio.wait_for(got.get(), 5) == {"n": 1}
                await until(lambda: bus.undelivered == 1)
        warnings = [r.getMessage() for r in caplog.records if r.name == pubsub_bus.__name__]
        assert len(warnings) == 1
        assert warnings[0].startswith(f"1 pubsub messages from Redis not delivered (1 in all); latest on topic "
                                      f"'{topic}': not JSON")
        assert "{not json" in warnings[0]
    finally:
        await redis.aclose()
