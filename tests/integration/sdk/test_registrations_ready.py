"""``III.on_registrations_ready``: a callback each time a connection is up with this worker's registrations in place
on the engine, also after those the old connection's late cleanup deleted (T7) were sent again."""

from __future__ import annotations

import queue
import threading
from typing import Any

import pytest

from iii import InitOptions
from iii.iii import III

from .conftest import FAST_RECONNECT, EngineThread, wait_until
from .fake_engine import FakeWorker
from .late_cleanup import LateCleanup, _new_event
from .test_attack_s2_lifecycle import _cut


def test_after_a_reconnect_the_hook_waits_until_the_lost_registrations_are_back(
        fake: EngineThread, client: III) -> None:
    client.register_function("f", lambda data: data)
    client.register_trigger({"type": "subscribe", "function_id": "f", "config": {"topic": "t"}})
    fake.wait_for(lambda: "f" in fake.engine.functions and len(fake.engine.triggers) == 1)
    old = client.worker_id
    assert old is not None
    seen: queue.Queue[tuple[bool, bool, bool]] = queue.Queue()
    client.on_registrations_ready(lambda: seen.put(late.snapshot(old, "f")))
    late = LateCleanup(fake)
    try:
        _cut(fake, client)
        # The replay is in and the worker registered; the recovery polls while the engine still knows the old worker.
        fake.wait_for(lambda: late.workers_listed >= 2)
        assert seen.empty(), "ready before the old connection's cleanup was even done"
    finally:
        late.release()  # the cleanup deletes f and its trigger (T7); the recovery sends both again
    # (old worker known, f registered, its trigger bound)
    assert seen.get(timeout=10) == (False, True, True)
    assert seen.empty()


def test_ready_callbacks_run_on_a_handler_thread_and_may_raise_block_and_call_the_sync_api(
        fake: EngineThread, client: III, caplog: pytest.LogCaptureFixture) -> None:
    client.register_function("echo", lambda data: data)
    release, blocked, after = threading.Event(), threading.Event(), threading.Event()
    listed: list[list[str]] = []
    calls: list[str] = []

    def raises() -> None:
        calls.append("raises")
        raise RuntimeError("boom")

    def blocks() -> None:
        assert not client._bridge.on_loop_thread()
        listed.append([f.function_id for f in client.list_functions()])  # the sync API, from the callback
        blocked.set()
        release.wait(10)

    client.on_registrations_ready(raises)
    remove_blocks = client.on_registrations_ready(blocks)
    client.on_registrations_ready(after.set)
    try:
        _cut(fake, client)
        assert blocked.wait(10)
        # the callback blocks: the worker still answers calls
        assert client.trigger({"function_id": "echo", "payload": 3, "timeout_ms": 5000}) == 3
    finally:
        release.set()
    assert after.wait(10)
    assert calls == ["raises"] and listed == [["echo"]]
    assert any("registrations-ready callback failed" in r.getMessage() and r.exc_info for r in caplog.records)

    remove_blocks()
    after.clear()
    _cut(fake, client)
    assert after.wait(10)
    assert calls == ["raises", "raises"] and len(listed) == 1


def test_the_hook_still_runs_when_the_registration_check_fails_unexpectedly(
        fake: EngineThread, client: III, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # Before: the check raising anything but the errors it expects (a bug) meant no callback for that connection: a
    # bridge's stream clients were never told to re-sync after the outage.
    async def broken(old_worker_id: str) -> None:
        raise RuntimeError("a bug in the check")

    monkeypatch.setattr(client, "_recover_registrations", broken)
    ready = threading.Event()
    client.on_registrations_ready(ready.set)
    _cut(fake, client)
    assert ready.wait(10)
    # Logged where it happened; before, it stayed in the task ("Task exception was never retrieved", at some GC).
    assert any("registration check of a new connection failed" in r.getMessage() and r.exc_info is not None
               and "a bug in the check" in str(r.exc_info[1]) for r in caplog.records)


def test_on_the_first_connection_the_hook_waits_until_the_engine_has_handled_the_replay(fake: EngineThread) -> None:
    # Before: it ran once the replay was written to the socket; the engine might not have handled any of it yet.
    gate = fake.run(_new_event())
    reached = threading.Event()
    dispatch = fake.engine._dispatch

    async def held(worker: FakeWorker, msg: dict[str, Any]) -> None:
        if msg.get("type") == "registerfunction" and msg.get("id") == "held":
            reached.set()
            await gate.wait()  # the engine reads nothing more from this connection meanwhile
        await dispatch(worker, msg)

    fake.engine._dispatch = held  # type: ignore[method-assign]
    fake.stop()  # the client's first connection comes after its registration and its callback
    client = III(fake.url, InitOptions(worker_name="first", reconnection_config=FAST_RECONNECT))
    try:
        client.register_function("held", lambda data: data)
        seen: queue.Queue[bool] = queue.Queue()
        client.on_registrations_ready(lambda: seen.put(fake.run(_has_function(fake, "held"))))
        fake.start()
        assert reached.wait(10)
        # the callback ran (before the fix), or the client waits for its round trip's answer (after it)
        wait_until(lambda: not seen.empty() or len(client._calls) > 0)
        fake.loop.call_soon_threadsafe(gate.set)
        assert seen.get(timeout=10) is True  # "held" was in place on the engine when the callback ran
    finally:
        fake.loop.call_soon_threadsafe(gate.set)
        client.shutdown()


def test_without_a_callback_a_new_connection_costs_no_round_trip(fake: EngineThread, client: III) -> None:
    worker = fake.worker(client)  # (after one round trip of the test's own)
    listed = [f for f in worker.frames if f.get("function_id") == "engine::workers::list"]
    assert listed == []


async def _has_function(fake: EngineThread, function_id: str) -> bool:
    return function_id in fake.engine.functions
