"""The reference SDK (its own interpreter, in a subprocess) using our engine's pubsub: ``publish`` fans out to
every ``subscribe`` trigger of the topic and to no other topic."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from tests.fixtures.refworker import ref_worker

pytestmark = [pytest.mark.interop]

PUBSUB = r'''
news, sport = sys.argv[2], sys.argv[3]

def subscriber(name):
    async def handle(data):
        emit("received", subscriber=name, data=data)
    return handle

for name, topic in (("news-1", news), ("news-2", news), ("sport", sport)):
    iii.register_function(f"ref.sub.{name}", subscriber(name))
    iii.register_trigger({"type": "subscribe", "function_id": f"ref.sub.{name}", "config": {"topic": topic}})
iii.list_functions()
attempt("published", lambda: iii.trigger({"function_id": "publish", "payload": {"topic": news, "data": {"h": 1}}}))
sys.stdin.readline()  # the test says when the news deliveries arrived
attempt("published", lambda: iii.trigger({"function_id": "publish", "payload": {"topic": sport, "data": {"s": 2}}}))
attempt("empty-topic", lambda: iii.trigger({"function_id": "publish", "payload": {"topic": "", "data": 1}}))
serve()
'''


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    spec = ModuleSpec("modules::pubsub::PubSubModule")
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[spec])) as running:
        yield running


async def test_publish_fans_out_within_its_topic_only(engine_url: str, tmp_path: Path) -> None:
    news, sport = f"news-{uuid.uuid4().hex[:8]}", f"sport-{uuid.uuid4().hex[:8]}"
    async with ref_worker(tmp_path, engine_url, PUBSUB, news, sport) as worker:
        assert (await worker.event("published"))["result"] is None
        first = await worker.events("received", 2)
        assert sorted((r["subscriber"], r["data"]["h"]) for r in first) == [("news-1", 1), ("news-2", 1)]

        assert worker.proc.stdin is not None
        worker.proc.stdin.write(b"go\n")
        await worker.proc.stdin.drain()
        assert (await worker.event("published"))["result"] is None
        # The sport message is delivered after both news deliveries: had the news message leaked to the sport
        # subscriber it would be among the events already read.
        assert await worker.event("received") == {"event": "received", "subscriber": "sport", "data": {"s": 2}}
        assert worker.seen("received") == []
        empty = await worker.event("empty-topic")
        assert not empty["ok"] and "topic_not_set" in empty["message"], empty
