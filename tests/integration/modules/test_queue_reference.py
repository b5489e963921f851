"""The reference SDK (its own interpreter, in a subprocess) as a queue user against our engine: what its
integration tests need (docs/guides/engine.md#modules) — Enqueue to named queues with the raw ``messageReceiptId``
dict back,
a chain of queued functions, Void delivery, and topic mode (``enqueue`` + the ``queue`` trigger)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from tests.fixtures.refworker import ref_worker

pytestmark = [pytest.mark.interop, pytest.mark.our_engine("needs the named queues of its own configuration")]

QUEUES = {
    name: {"max_retries": 3, "concurrency": 5, "backoff_ms": 50}
    for name in ("test-orders", "test-multi", "test-chain", "test-chain-entry")
}

NAMED_QUEUES = r'''
async def process(data):
    emit("processed", data=data)
    return {"n": data["n"]}

async def chain_entry(data):
    receipt = await iii.trigger_async({"function_id": "ref.chain.step", "payload": {"from": data["order"]},
                                       "action": TriggerAction.Enqueue(queue="test-chain")})
    emit("chain-entry", receipt=receipt)
    return receipt

async def chain_step(data):
    emit("chain-step", data=data)

async def notify(data):
    emit("notified", data=data)

for fid, handler in [("ref.process", process), ("ref.chain.entry", chain_entry), ("ref.chain.step", chain_step),
                     ("ref.notify", notify)]:
    iii.register_function(fid, handler)
iii.list_functions()  # one round trip: the registrations above were handled

def enqueue(fid, queue, payload):
    return lambda: iii.trigger({"function_id": fid, "payload": payload, "action": TriggerAction.Enqueue(queue=queue)})

attempt("orders", enqueue("ref.process", "test-orders", {"n": 0}))
for n in range(1, 6):
    attempt("multi", enqueue("ref.process", "test-multi", {"n": n}))
attempt("chain", enqueue("ref.chain.entry", "test-chain-entry", {"order": 9}))
attempt("void", lambda: iii.trigger({"function_id": "ref.notify", "payload": {"v": 1},
                                     "action": TriggerAction.Void()}))
attempt("missing", enqueue("ref.process", "no-such-queue", {"n": -1}))
serve()
'''

TOPIC_MODE = r'''
def subscriber(name):
    async def handle(data):
        emit("delivered", subscriber=name, data=data)
    return handle

for name in ("a", "b"):
    iii.register_function(f"ref.topic.{name}", subscriber(name))
    iii.register_trigger({"type": "queue", "function_id": f"ref.topic.{name}", "config": {"topic": sys.argv[2]}})
iii.register_function("ref.topic.other", subscriber("other"))
iii.register_trigger({"type": "queue", "function_id": "ref.topic.other", "config": {"topic": sys.argv[2] + ".x"}})
iii.list_functions()
for n in range(4):
    attempt("enqueued", lambda n=n: iii.trigger({"function_id": "enqueue",
                                                 "payload": {"topic": sys.argv[2], "data": {"n": n}}}))
attempt("empty-topic", lambda: iii.trigger({"function_id": "enqueue", "payload": {"topic": "", "data": 1}}))
serve()
'''


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    spec = ModuleSpec("modules::queue::QueueModule", {"queue_configs": QUEUES})
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[spec])) as running:
        yield running


def is_receipt(result: object) -> bool:
    if not isinstance(result, dict) or set(result) != {"messageReceiptId"}:
        return False
    receipt = result["messageReceiptId"]
    return isinstance(receipt, str) and str(uuid.UUID(receipt)) == receipt


async def test_named_queues_chain_void_and_unknown_queue(engine: Engine, tmp_path: Path) -> None:
    async with ref_worker(tmp_path, engine.url, NAMED_QUEUES) as worker:
        orders = await worker.event("orders")
        assert orders["ok"] and is_receipt(orders["result"]), orders  # the raw dict, not an EnqueueResult
        multi = await worker.events("multi", 5)
        assert all(m["ok"] and is_receipt(m["result"]) for m in multi), multi
        assert len({m["result"]["messageReceiptId"] for m in multi}) == 5

        processed = await worker.events("processed", 6)
        assert sorted(p["data"]["n"] for p in processed) == [0, 1, 2, 3, 4, 5]  # raw payloads, every job ran

        chain = await worker.event("chain")
        assert chain["ok"] and is_receipt(chain["result"])
        entry = await worker.event("chain-entry")
        assert is_receipt(entry["receipt"])  # a queued function can enqueue again
        assert (await worker.event("chain-step"))["data"] == {"from": 9}

        void = await worker.event("void")
        assert void == {"event": "void", "ok": True, "result": None}
        notified = await worker.event("notified")
        assert notified["data"]["v"] == 1  # called directly: the engine may add _caller_worker_id

        missing = await worker.event("missing")
        assert not missing["ok"], missing
        assert "enqueue_error" in missing["message"] and "Queue 'no-such-queue' not found" in missing["message"]


async def test_topic_mode_one_subscriber_per_message(engine: Engine, tmp_path: Path) -> None:
    topic = f"ref.orders.{uuid.uuid4().hex[:8]}"
    async with ref_worker(tmp_path, engine.url, TOPIC_MODE, topic) as worker:
        enqueued = await worker.events("enqueued", 4)
        assert all(e == {"event": "enqueued", "ok": True, "result": None} for e in enqueued), enqueued
        delivered = await worker.events("delivered", 4)
        # Competing consumers: each message reaches exactly one of the topic's subscribers, raw.
        assert sorted(d["data"]["n"] for d in delivered) == [0, 1, 2, 3], delivered
        assert {d["subscriber"] for d in delivered} <= {"a", "b"}
        empty = await worker.event("empty-topic")
        assert not empty["ok"] and "topic_not_set" in empty["message"], empty
