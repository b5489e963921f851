"""A ``TriggerHandler`` hook left running in the background (past ``InitOptions.invocation_timeout_ms``, or its type
let go) is not called again alongside itself, a release's unbinds do not wait for one another, and an error a hook
raises after its wait ended is logged.

Before (re-attack G): a ``register_trigger`` that never returned was called again on every retry (the type
registered again, or a reconnect's replay) once the previous call was past twice the deadline: 201 calls all
running after 200 re-registrations; a release unbound its triggers one after the other, so one hung unbind kept
the other 4 of 5 from being called (6 s later), and 40 unbinds of 0.2 s took 8 s; and an error raised by a hook past
its deadline was never logged.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from iii.trigger_host import TriggerTypeHost
from iii.triggers import TriggerConfig, TriggerHandler
from tests.polling import until


async def test_a_release_unbinds_its_triggers_alongside_a_hung_unbind() -> None:
    called: list[str] = []
    held: set[str] = set()

    class FirstUnbindHangs(TriggerHandler[Any]):
        async def register_trigger(self, config: TriggerConfig[Any]) -> None:
            held.add(config.id)

        async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
            called.append(config.id)
            if len(called) == 1:
                await asyncio.Event().wait()
            held.discard(config.id)

    host = TriggerTypeHost()  # (no deadline: nothing ends the wait for the hung one)
    host.add("hook", FirstUnbindHangs())
    for i in range(5):
        assert await host.register("hook", f"t{i}", "f", {}, generation=1) is None
    released = host.release("hook")
    assert released is not None
    unbinding = asyncio.ensure_future(released)
    # before: 1 of 5 unbinds called, for good (each waited for the one before it)
    await until(lambda: len(called) == 5 and len(held) == 1, within=5)
    assert not unbinding.done()  # (the hung one is still waited for: no deadline)
    unbinding.cancel()
    host.cancel_hooks()


async def test_a_hung_bind_is_not_called_again_on_each_retry() -> None:
    calls: list[str] = []

    class Hung(TriggerHandler[Any]):
        async def register_trigger(self, config: TriggerConfig[Any]) -> None:
            calls.append(config.id)
            await asyncio.Event().wait()

        async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
            calls.append("unbind")

    host = TriggerTypeHost(hook_deadline=0.05)
    host.add("hook", Hung())
    first = await asyncio.wait_for(host.register("hook", "t1", "f", {}, generation=1), 5)
    assert first == {"code": "trigger_registration_failed", "message": "register_trigger did not finish within 0.05 s"}
    answers = [await asyncio.wait_for(host.register("hook", "t1", "f", {}, generation=2 + i), 5) for i in range(6)]
    # before: each retry past the previous call's due called the hook again: 7 calls, all still running
    assert calls == ["t1"]
    assert answers == [{"code": "trigger_registration_failed",
                        "message": "its previous register_trigger is still running"}] * 6
    assert len(host._detached[("hook", "t1")]) == 1
    host.cancel_hooks()
    await until(lambda: not host._detached)


async def test_an_unbind_waits_for_the_handlers_hung_unbind_of_the_trigger() -> None:
    journal: list[str] = []
    gate = asyncio.Event()

    class FirstUnbindHangs(TriggerHandler[Any]):
        async def register_trigger(self, config: TriggerConfig[Any]) -> None:
            journal.append("bind")

        async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
            journal.append("unbind")
            if journal.count("unbind") == 1:
                await gate.wait()
                journal.append("unbind-done")

    host = TriggerTypeHost(hook_deadline=0.05)
    host.add("hook", FirstUnbindHangs())
    assert await host.register("hook", "t1", "f", {}, generation=1) is None
    await asyncio.wait_for(host.unregister("hook", "t1", "f", {}), 5)  # (past 0.05 s: runs on)
    # a bind of it again goes ahead once the hung unbind is past its due (it unbinds another binding)
    assert await asyncio.wait_for(host.register("hook", "t1", "f", {}, generation=1), 5) is None
    await asyncio.wait_for(host.unregister("hook", "t1", "f", {}), 5)
    # before: the second unbind was called at once, alongside the first
    assert journal == ["bind", "unbind", "bind"]
    gate.set()
    await until(lambda: journal == ["bind", "unbind", "bind", "unbind-done", "unbind"] and not host._detached)


@pytest.mark.parametrize("hook", ["register_trigger", "unregister_trigger"])
async def test_an_error_raised_past_the_deadline_is_logged(caplog: pytest.LogCaptureFixture, hook: str) -> None:
    finish = asyncio.Event()

    class LateRaise(TriggerHandler[Any]):
        async def register_trigger(self, config: TriggerConfig[Any]) -> None:
            if hook == "register_trigger":
                await finish.wait()
                raise RuntimeError("late-bind-error")

        async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
            if hook == "unregister_trigger":
                await finish.wait()
                raise RuntimeError("late-unbind-error")

    host = TriggerTypeHost(hook_deadline=0.05)
    host.add("hook", LateRaise())
    with caplog.at_level(logging.ERROR, logger="iii.trigger_host"):
        answer = await asyncio.wait_for(host.register("hook", "t1", "f", {}, generation=1), 5)
        if hook == "unregister_trigger":
            assert answer is None
            await asyncio.wait_for(host.unregister("hook", "t1", "f", {}), 5)
        else:
            assert answer is not None and answer["code"] == "trigger_registration_failed"
        finish.set()
        await until(lambda: not host._detached)

    def carries_error(record: logging.LogRecord) -> bool:
        return record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError) \
            and "late-" in str(record.exc_info[1])

    # before: no record carried it (the ended callback forgot the hook's task and its exception)
    late = [record for record in caplog.records if carries_error(record)]
    assert len(late) == 1, [record.getMessage() for record in caplog.records]
    assert f"{hook}, no longer waited for, raised" in late[0].getMessage()
