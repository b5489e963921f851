"""``on_registrations_ready`` and the registration check after a reconnect (T7) under reconnects in a row: a
connection lost while the check for an older one still waits must not make the next check forget that older one."""

from __future__ import annotations

import queue

from iii.iii import III

from .conftest import EngineThread
from .late_cleanup import LateCleanup
from .test_attack_s2_lifecycle import _cut


def test_a_second_cut_during_the_check_still_waits_for_the_first_connections_cleanup(
        fake: EngineThread, client: III) -> None:
    # Before: the check after the second reconnect waited only for the second connection's worker to go; the first
    # one's late cleanup (still held) deleted "f" and its trigger afterwards, after "ready" had been said, and
    # nothing sent them again.
    client.register_function("f", lambda data: data)
    client.register_trigger({"type": "subscribe", "function_id": "f", "config": {"topic": "t"}})
    fake.wait_for(lambda: "f" in fake.engine.functions and len(fake.engine.triggers) == 1)
    first = client.worker_id
    assert first is not None
    late = LateCleanup(fake, only=lambda worker_id: worker_id == first)
    seen: queue.Queue[tuple[bool, bool, bool]] = queue.Queue()
    client.on_registrations_ready(lambda: seen.put(late.snapshot(first, "f")))
    try:
        _cut(fake, client)
        fake.wait_for(lambda: late.workers_listed >= 1)  # the check waits for the first worker to go
        _cut(fake, client)  # the second connection's cleanup runs at once; the first's is still held
        polled = late.workers_listed
        fake.wait_for(lambda: late.workers_listed >= polled + 2)  # the new check still waits for the first worker
        assert seen.empty(), f"ready while the first connection's cleanup was pending: {seen.get()}"
    finally:
        late.release()  # the first connection's cleanup deletes "f" and its trigger (T7)
    # (first worker known, f registered, its trigger bound)
    assert seen.get(timeout=10) == (False, True, True)
    fake.wait_for(lambda: "f" in fake.engine.functions and len(fake.engine.triggers) == 1)


def test_the_check_asks_the_engine_only_about_the_old_workers(fake: EngineThread, client: III) -> None:
    # The check polls every 0.25 s for up to 30 s after each reconnect: an unfiltered engine::workers::list answer
    # grows with every worker on the engine (each with its functions). Before: the payload was {}.
    client.register_function("f", lambda data: data)
    fake.wait_for(lambda: "f" in fake.engine.functions)
    first = client.worker_id
    assert first is not None
    late = LateCleanup(fake, only=lambda worker_id: worker_id == first)
    asked: list[object] = []  # the worker_id each engine::workers::list asked about (None: unfiltered)
    builtin = fake.engine._builtin

    def recording(worker: object, function_id: str, data: object) -> object:
        if function_id == "engine::workers::list":
            asked.append(data.get("worker_id") if isinstance(data, dict) else data)
        return builtin(worker, function_id, data)  # type: ignore[arg-type]

    fake.engine._builtin = recording  # type: ignore[method-assign]
    try:
        _cut(fake, client)
        fake.wait_for(lambda: late.workers_listed >= 2)  # polled at least twice while the old worker stays
    finally:
        late.release()
    fake.wait_for(lambda: "f" in fake.engine.functions)
    polls = [worker_id for worker_id in asked if worker_id != "00000000-0000-0000-0000-000000000000"]
    assert polls and all(worker_id == first for worker_id in polls), asked
