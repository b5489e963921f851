"""``engine::workers::register`` records the calling worker's own metadata, and only that, within bounds:

- the worker is the call's caller, never the payload's ``_caller_worker_id``: the engine sets that key only on a
  worker's direct call, so a ``subscribe`` trigger naming ``engine::workers::register`` and a publish of
  ``{"_caller_worker_id": <victim>, "name": "PWNED"}`` renamed another worker (and told every workers-available
  listener it had updated its metadata); a call with no calling worker is now refused;
- ``name``, ``runtime``, ``version`` and ``os`` are at most 1,024 characters each (before: unbounded, 40 workers with
  four 1 MB strings took the engine's RSS up 156 MB and one ``engine::workers::list`` answer was 160 MB);
- an ``engine::workers::list`` answer is bounded by ``max_message_size`` (refused with ``serialization_error``
  naming the setting, never shortened).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.base import InvocationContext
from iii_engine.modules.worker.module import MAX_WORKER_METADATA_CHARS
from tests.integration.engine.raw import RawWorker
from tests.polling import until

pytestmark = [pytest.mark.timeout(30),
              pytest.mark.our_engine("our worker module's metadata rules and its list's answer bound")]

REGISTER = "engine::workers::register"


@pytest.fixture
async def pubsub_engine() -> AsyncIterator[Engine]:
    async with Engine(config=EngineConfig(port=0, modules=[ModuleSpec("modules::pubsub::PubSubModule", {})])) as e:
        yield e


def _info(engine: Engine, worker: RawWorker) -> tuple[Any, ...]:
    w = engine.workers[worker.worker_id]
    return w.name, w.runtime, w.version, w.os, w.pid


async def test_a_trigger_fired_call_cannot_rewrite_another_workers_metadata(pubsub_engine: Engine) -> None:
    engine = pubsub_engine
    victim = await RawWorker.connect(engine.url)
    attacker = await RawWorker.connect(engine.url)
    assert await victim.result_of(REGISTER, {"name": "victim", "runtime": "python", "version": "1.0"}) == \
        {"success": True}
    before = _info(engine, victim)
    assert before == ("victim", "python", "1.0", None, None)

    # every outcome of the built-in, to know when the fired call is over
    entry = engine.registry.functions[REGISTER]
    assert entry.builtin is not None
    handler = entry.builtin.handler
    outcomes: list[tuple[str | None, Any]] = []

    async def recording(data: Any, ctx: InvocationContext) -> Any:
        try:
            result = await handler(data, ctx)
        except Exception as exc:
            outcomes.append((ctx.caller_worker_id, exc))
            raise
        outcomes.append((ctx.caller_worker_id, result))
        return result

    entry.builtin.handler = recording

    await attacker.send({"type": "registertrigger", "id": "t-spoof", "trigger_type": "subscribe",
                         "function_id": REGISTER, "config": {"topic": "x"}})
    await attacker.sync()
    published = await attacker.call("publish", {"topic": "x", "data": {
        "_caller_worker_id": victim.worker_id, "name": "PWNED", "runtime": "evil", "pid": 1}})
    assert "error" not in published, published
    await until(lambda: len(outcomes) == 1)
    [(caller, outcome)] = outcomes
    assert caller is None and isinstance(outcome, Exception)
    message = str(outcome)
    assert "engine::workers::register records the calling worker's own metadata" in message, message
    assert "call it directly from that worker" in message, message
    assert _info(engine, victim) == before  # before the fix: ('PWNED', 'evil', None, None, 1)

    # an in-process call with the key is refused the same way
    with pytest.raises(Exception) as refused:
        await engine.invoke(REGISTER, {"_caller_worker_id": victim.worker_id, "name": "PWNED"})
    assert getattr(refused.value, "code", None) == "deserialization_error"
    assert "has no calling worker" in str(refused.value)
    assert _info(engine, victim) == before

    # a worker's own direct call records its own metadata, whatever key it forges
    assert await attacker.result_of(REGISTER, {"_caller_worker_id": victim.worker_id, "name": "me"}) == \
        {"success": True}
    assert engine.workers[attacker.worker_id].name == "me"
    assert _info(engine, victim) == before
    listed = await attacker.result_of("engine::workers::list", {"worker_id": victim.worker_id})
    assert listed["workers"][0]["name"] == "victim"
    await victim.close()
    await attacker.close()


async def test_metadata_strings_are_bounded_by_field(pubsub_engine: Engine) -> None:
    engine = pubsub_engine
    worker = await RawWorker.connect(engine.url)
    fits = "n" * MAX_WORKER_METADATA_CHARS
    assert await worker.result_of(REGISTER, {"name": fits, "runtime": "r", "version": "v", "os": "o"}) == \
        {"success": True}
    kept = _info(engine, worker)
    assert kept == (fits, "r", "v", "o", None)
    fields = ("name", "runtime", "version", "os")
    for field in fields:
        given = {key: "x" * (MAX_WORKER_METADATA_CHARS + 1) if key == field else f"{key}2" for key in fields}
        frame = await worker.call(REGISTER, {**given, "pid": 7})
        assert frame["error"]["code"] == "deserialization_error", frame
        message = frame["error"]["message"]
        assert f"'{field}' is {MAX_WORKER_METADATA_CHARS + 1} characters, at most {MAX_WORKER_METADATA_CHARS}" \
            in message, message
        assert "the other fields were" in message, message
        # the value over the bound left out, never truncated; the others recorded (a name one character over lost
        # the worker its runtime, version, os and pid too)
        info = dict(zip((*fields, "pid"), _info(engine, worker), strict=True))
        # left out: the value recorded before stays (runtime became "unknown", version and telemetry None)
        assert info[field] == (fits if field == "name" else f"{field}2")
        assert {key: info[key] for key in fields if key != field} == {
            key: f"{key}2" for key in fields if key != field}
        assert info["pid"] == 7
    assert await worker.result_of(REGISTER, {"telemetry": {"language": "python"}}) == {"success": True}
    huge = await worker.call(REGISTER, {"telemetry": {"blob": "t" * 200_000}})
    assert "'telemetry' would keep" in huge["error"]["message"]
    assert engine.workers[worker.worker_id].telemetry == {"language": "python"}
    big = await worker.call(REGISTER, {"name": "x" * 1_000_000})
    assert big["error"]["code"] == "deserialization_error"
    assert "x" * 10 not in str(_info(engine, worker))
    await worker.close()


async def test_workers_list_answer_is_bounded_by_max_message_size() -> None:
    max_message_size = 64 * 1024
    config = EngineConfig(port=0, modules=[], max_message_size=max_message_size)
    async with Engine(config=config) as engine:
        workers = [await RawWorker.connect(engine.url) for _ in range(20)]
        long = "w" * MAX_WORKER_METADATA_CHARS
        for worker in workers:  # ~4 KiB of metadata each: 80 KiB in all, over the 60 KiB an answer may take
            assert await worker.result_of(REGISTER, {"name": long, "runtime": long, "version": long, "os": long}) \
                == {"success": True}
        frame = await workers[0].call("engine::workers::list", {})
        assert "error" in frame, f"an answer of {len(str(frame))} characters"
        assert frame["error"]["code"] == "serialization_error", frame
        message = frame["error"]["message"]
        assert message.startswith("engine::workers::list: the list of 20 workers is "), message
        assert "max_message_size" in message and "'worker_id'" in message, message
        # one worker's fits; an in-process caller (no frame) gets the whole list
        [one] = (await workers[0].result_of("engine::workers::list", {"worker_id": workers[3].worker_id}))["workers"]
        assert one["id"] == workers[3].worker_id and one["name"] == long
        everything = await engine.invoke("engine::workers::list", {})
        assert len(everything["workers"]) == 20
        for worker in workers[10:]:
            await worker.close()
        await until(lambda: len(engine.workers) == 10)
        listed = await workers[0].result_of("engine::workers::list", {})
        assert sorted(w["id"] for w in listed["workers"]) == sorted(w.worker_id for w in workers[:10])
        for worker in workers[:10]:
            await worker.close()


async def test_a_refused_void_registration_is_logged_rate_limited(pubsub_engine: Engine,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """The SDKs send their metadata as a void call, whose error reaches nobody: a worker named past the bound would
    show no name with no word of why."""
    engine = pubsub_engine
    worker = await RawWorker.connect(engine.url)
    caplog.set_level(logging.WARNING, logger="iii_engine.modules.worker.module")
    for _ in range(3):
        await worker.send({"type": "invokefunction", "function_id": REGISTER, "action": {"type": "void"},
                           "data": {"name": "x" * 5000, "runtime": "python"}})
    module = engine.modules["worker"]
    await until(lambda: module._refused_log.refusals == 3)  # type: ignore[attr-defined]
    [record] = [r for r in caplog.records if "not recorded" in r.getMessage()]
    assert worker.worker_id in record.getMessage()
    assert "'name' is 5000 characters, at most 1024" in record.getMessage()
    assert engine.workers[worker.worker_id].runtime == "python"  # what was within its bound is recorded
    assert engine.workers[worker.worker_id].name != "x" * 5000
    await worker.close()
