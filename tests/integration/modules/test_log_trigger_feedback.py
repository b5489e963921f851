"""A ``log`` trigger whose handler logs does not fire itself (or another log trigger) with its own records.

Before: each record the handler wrote (through the SDK's ``Logger``, or ``engine::log::*``) was a new stored entry
that fired the trigger again, for ever: 1,850 calls a second from one seed, and with three such triggers other
workers' calls waited ~1 s. Now the engine starts each call it fires for a log trigger in a trace of its own
marking, and a record in such a trace (the handler's, and that of whatever it calls) is stored, echoed and
exported as any other but fires no ``log`` trigger; the records it did not fire for are counted in health's
``telemetry`` (``log_trigger_feedback``).

The reference SDK's sync handlers lose that trace (run in an executor without their context): their records carry
none, and looped on (3,423-3,839 calls in 4 s). The engine's backstop for those: an ``engine::log::*`` call without
trace context of a worker with a log trigger's call in flight (or answered within 0.5 s) fires no log trigger either.
Such a handler's ``Logger`` records still do (a ``LOGS`` frame does not say which worker wrote it, and a rule for
every worker's untraced records kept a busy log trigger from firing for nearly any of them).
"""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
import uuid
from typing import Any

import pytest
from module_worker import ModuleWorker

from tests.integration.modules.test_observability import engine_with, eventually
from tests.interop.refsdk import telemetry_worker
from tests.polling import until

pytestmark = pytest.mark.our_engine("configures the observability module")


# Two log triggers on every entry: one handler logs with the SDK's Logger, the other through engine::log::info.
# Without the rule each handler's record fires both handlers again (a feedback loop, and an A<->B ping-pong).
_WORKER = textwrap.dedent("""
    import sys, threading
    from iii import InitOptions, Logger, register_worker

    url, tag = sys.argv[1], sys.argv[2]
    iii = register_worker(url, InitOptions(otel={"service_name": tag, "engine_ws_url": url,
                                                 "logs_flush_interval_ms": 20}))
    logger = Logger(service_name=tag)

    async def by_logger(entry):
        logger.info("handled-l " + entry["body"])

    async def by_engine(entry):
        await iii.trigger_async({"function_id": "engine::log::info",
                                 "payload": {"message": "handled-e " + entry["body"], "service_name": tag}})

    iii.register_function(tag + "::by_logger", by_logger)
    iii.register_function(tag + "::by_engine", by_engine)
    for name in ("by_logger", "by_engine"):
        iii.register_trigger({"type": "log", "function_id": tag + "::" + name, "config": {}})
    iii.list_functions()
    print("ready", flush=True)
    threading.Event().wait()
""")



@pytest.mark.parametrize("sdk", ["ours", pytest.param("reference", marks=pytest.mark.interop)])
async def test_a_log_triggers_handler_that_logs_does_not_fire_log_triggers_again(sdk: str) -> None:
    tag = f"fb{uuid.uuid4().hex[:6]}"
    settings = {"enabled": True, "exporter": "memory", "logs_console_output": False, "logs_max_count": 10_000}
    async with engine_with(settings) as engine, ModuleWorker(engine.url) as probe:
        module: Any = engine.module("observability")

        def bodies() -> list[str]:
            return [e["body"] for e in module.logs.entries() if e["body"].startswith("handled")]

        async with telemetry_worker(sdk, _WORKER, engine.url, tag, ready=b"ready"):
            await eventually(lambda: _async(len(engine.triggers_of_type("log")) == 2))
            for seed in ("seed-1", "seed-2"):
                await probe.result("engine::log::info", {"message": seed})
                # both handlers ran for this seed and their records are stored (the Logger's come as telemetry)
                await eventually(lambda seed=seed: _async(  # type: ignore[misc]
                    {f"handled-l {seed}", f"handled-e {seed}"} <= set(bodies())), within=15)
            health = await probe.result("engine::health::check", {})
        # before: 'handled-l handled-e seed-1', 'handled-e handled-l seed-1', ... (the handlers' records fired them
        # again: hundreds within the time the second seed took)
        assert sorted(bodies()) == ["handled-e seed-1", "handled-e seed-2", "handled-l seed-1", "handled-l seed-2"]
        by_function = module.counters.as_dict()["by_function"]
        assert (by_function[f"{tag}::by_logger"], by_function[f"{tag}::by_engine"]) == (2, 2)
        # each handler record fired no trigger, counted once per trigger it matched: 4 records x 2 triggers
        details = health["components"]["telemetry"]["details"]
        assert details["log_trigger_feedback"] == 8
        assert details["log_trigger_feedback_untraced"] == 0
        # the seeds themselves are ordinary entries: stored, and they fired both triggers
        assert [e["body"] for e in module.logs.entries() if e["body"].startswith("seed")] == ["seed-1", "seed-2"]


async def _async(value: bool) -> bool:
    return value


# One log trigger whose handler is a sync function of the reference SDK: it logs through engine::log::info, without
# trace context. ``plain`` writes the same kind of record outside any log trigger's call.
_SYNC_WORKER = textwrap.dedent("""
    import sys, threading
    from iii import InitOptions, Logger, register_worker

    url, tag = sys.argv[1], sys.argv[2]
    iii = register_worker(url, InitOptions(otel={"service_name": tag, "engine_ws_url": url,
                                                 "logs_flush_interval_ms": 20}))

    def write(message):
        iii.trigger({"function_id": "engine::log::info", "payload": {"message": message, "service_name": tag}})

    def handler(entry):
        write("handled " + entry["body"][:60])

    def plain(data):
        write("plain")
        return {}

    iii.register_function(tag + "::h", handler)
    iii.register_function(tag + "::plain", plain)
    iii.register_trigger({"type": "log", "function_id": tag + "::h", "config": {}})
    iii.list_functions()
    print("ready", flush=True)
    threading.Event().wait()
""")


@pytest.mark.interop
async def test_a_reference_sync_handler_whose_log_calls_carry_no_trace_does_not_loop() -> None:
    tag = f"fs{uuid.uuid4().hex[:6]}"
    settings = {"enabled": True, "exporter": "memory", "logs_console_output": False, "logs_max_count": 10_000}
    async with engine_with(settings) as engine, ModuleWorker(engine.url) as probe:
        module: Any = engine.module("observability")

        def bodies() -> list[str]:
            return [e["body"] for e in module.logs.entries() if e["body"].startswith("handled")]

        async with telemetry_worker("reference", _SYNC_WORKER, engine.url, tag, ready=b"ready"):
            await until(lambda: len(engine.triggers_of_type("log")) == 1)
            for seed in ("seed-1", "seed-2"):
                await probe.result("engine::log::info", {"message": seed})
                await until(lambda seed=seed: f"handled {seed}" in bodies(), within=15)  # type: ignore[misc]
            # before: 'handled handled handled ... seed-1' by the thousand (each record fired the handler again)
            assert sorted(bodies()) == ["handled seed-1", "handled seed-2"]
            # The same worker's record written outside any log trigger's call is an ordinary one once the last
            # call's grace passed: it fires the trigger (whose handler's record then does not).
            await until(lambda: module._log_trigger_calls.idle(time.time_ns()))
            await probe.result(f"{tag}::plain", {})
            await until(lambda: "handled plain" in bodies(), within=15)
            health = await probe.result("engine::health::check", {})
        assert sorted(bodies()) == ["handled plain", "handled seed-1", "handled seed-2"]
        assert module.counters.as_dict()["by_function"][f"{tag}::h"] == 3
        details = health["components"]["telemetry"]["details"]
        assert details["log_trigger_feedback"] == details["log_trigger_feedback_untraced"] == 3


async def test_untraced_records_of_other_workers_fire_log_triggers_while_one_is_handled() -> None:
    # A log trigger busy with a call (here: one that waits) still fires for another worker's records that carry no
    # trace context. Before (a rule for every worker's untraced LOGS records, stamped while any log trigger's call
    # was in flight): none of them fired it, so a log trigger that ships records elsewhere missed nearly all.
    settings = {"enabled": True, "exporter": "memory", "logs_console_output": False}
    async with engine_with(settings) as engine, ModuleWorker(engine.url) as handler, \
            ModuleWorker(engine.url) as other:
        seen: list[str] = []
        release = asyncio.Event()

        async def slow(entry: Any) -> None:
            seen.append(entry["body"])
            await release.wait()

        await handler.function("fb::slow", slow)
        await handler.trigger("fb-slow", "log", "fb::slow", {})
        try:
            await other.result("engine::log::info", {"message": "seed"})
            await until(lambda: seen == ["seed"])  # its call is in flight from here on
            record = {"body": {"stringValue": "untraced"}, "severityNumber": 9, "severityText": "INFO",
                      "timeUnixNano": str(time.time_ns())}
            assert other._ws is not None
            await other._ws.send(b"LOGS" + json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]})
                                 .encode())
            await until(lambda: seen == ["seed", "untraced"], within=5)
        finally:
            release.set()
