"""A sync ``trigger`` made while the client's loop waits for I/O writes its frame from the caller's thread, holding
the loop parked (``LoopBridge.park``) instead of waking the loop thread to write it; every guarantee of the hop
stays: timeouts fire on time, frames from many threads arrive whole, work queued on the loop goes first."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from iii import InitOptions
from iii.iii import III, register_worker
from iii.loop_bridge import LoopBridge
from iii_engine import Engine, EngineConfig

T = TypeVar("T")


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[]))
    asyncio.run_coroutine_threadsafe(engine.start(), loop).result(10)
    yield engine.url
    asyncio.run_coroutine_threadsafe(engine.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


@pytest.fixture
def pair(url: str) -> Iterator[tuple[III, III]]:
    callee = register_worker(url, InitOptions(worker_name="callee"))
    caller = register_worker(url, InitOptions(worker_name="caller"))

    async def echo(data: Any) -> Any:
        return data

    async def never(_data: Any) -> Any:
        await asyncio.Event().wait()

    callee.register_function("park::echo", echo)
    callee.register_function("park::never", never)
    callee.list_functions()  # barrier: both registrations reached the engine
    try:
        yield callee, caller
    finally:
        caller.shutdown()
        callee.shutdown()


def _in_a_thread(run: Callable[[], T]) -> T:
    """``run()`` on a thread of its own (the main thread never parks: Python's signal handlers run there)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result(30)


def test_calls_on_an_idle_loop_do_not_hop_onto_it(pair: tuple[III, III], monkeypatch: pytest.MonkeyPatch) -> None:
    _, caller = pair
    hops: list[object] = []
    post = caller._bridge.post_blocking
    monkeypatch.setattr(caller._bridge, "post_blocking", lambda *a: (hops.append(a), post(*a)))

    def calls() -> None:
        for i in range(20):
            assert caller.trigger({"function_id": "park::echo", "payload": [i]}) == [i]

    _in_a_thread(calls)
    # Some calls find the loop busy (a keepalive, telemetry, the other test's leftovers) and hop; before, all did.
    assert len(hops) < 20


def test_async_calls_from_another_loop_do_not_hop_either(
    pair: tuple[III, III], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, caller = pair
    hops: list[object] = []
    start_call = caller._start_call
    monkeypatch.setattr(caller, "_start_call", lambda *a: (hops.append(a), start_call(*a)))

    async def calls() -> None:
        for i in range(20):
            assert await caller.trigger_async({"function_id": "park::echo", "payload": [i]}) == [i]

    _in_a_thread(lambda: asyncio.run(calls()))
    # Some calls find the loop busy (a keepalive, telemetry, the other test's leftovers) and hop; before, all did.
    assert len(hops) < 20


def test_a_timeout_armed_while_parked_wakes_the_loop_in_time(pair: tuple[III, III]) -> None:
    _, caller = pair
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="park::never"):
        # A timeout no call used before: its timer is new to the loop, which slept with no timer due.
        _in_a_thread(lambda: caller.trigger({"function_id": "park::never", "payload": None, "timeout_ms": 173}))
    assert time.monotonic() - start < 3.0  # not the loop's next keepalive (20 s)
    assert len(caller._calls) == 0


def test_work_left_by_a_parked_call_wakes_the_loop_once(pair: tuple[III, III],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A parked call arming a new timer leaves the loop one wake-up, at unpark (before: one for the timer and one
    more at unpark, for the wake-up callback itself)."""
    _, caller = pair
    bridge = caller._bridge
    hops: list[object] = []
    post = bridge.post_blocking
    monkeypatch.setattr(bridge, "post_blocking", lambda *a: (hops.append(a), post(*a)))
    wakes: list[None] = []
    write_to_self = bridge.loop._write_to_self  # type: ignore[attr-defined]
    monkeypatch.setattr(bridge.loop, "_write_to_self", lambda: (wakes.append(None), write_to_self()))
    for attempt in range(10):  # the loop may be busy now and then and the call hops: try again
        hops.clear()
        wakes.clear()
        timeout_ms = 191 + attempt  # a timeout no call used before: a new timer, which the loop must be woken for
        with pytest.raises(TimeoutError):
            _in_a_thread(lambda: caller.trigger({"function_id": "park::never", "payload": None,
                                                 "timeout_ms": timeout_ms}))  # noqa: B023 - called at once
        if not hops:
            break
    assert not hops and len(wakes) == 1, (len(hops), len(wakes))


def test_many_threads_calling_at_once_all_get_their_answers(pair: tuple[III, III]) -> None:
    _, caller = pair
    errors: list[BaseException] = []

    def run(t: int) -> None:
        try:
            for i in range(40):
                payload = [t, i, "x" * (i * 97)]  # (a dict would come back with the engine's caller id added)
                assert caller.trigger({"function_id": "park::echo", "payload": payload}) == payload
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(25)
    assert not errors
    assert len(caller._calls) == 0


def test_park_declines_when_the_loop_has_work_queued_or_is_not_waiting() -> None:
    bridge = LoopBridge()
    try:
        assert bridge.run(_true()) is True  # the loop runs; now it waits for I/O
        assert not bridge.park()  # the main thread never parks

        def park_and_queue() -> bool:
            if not bridge.park():
                return False
            try:
                bridge.loop.call_soon_threadsafe(lambda: None)  # queued while parked
            finally:
                bridge.unpark()
            return True

        assert _in_a_thread(park_and_queue)

        async def from_the_loop() -> bool:
            return bridge.park()  # the loop thread holds it: never parked from itself

        assert bridge.run(from_the_loop()) is False
        blocker, release = threading.Event(), threading.Event()
        bridge.loop.call_soon_threadsafe(lambda: (blocker.set(), release.wait(5)))
        assert blocker.wait(5)
        assert not _in_a_thread(bridge.park)  # busy running a callback
        release.set()
    finally:
        bridge.stop()
    assert not _in_a_thread(bridge.park)  # ended


async def _true() -> bool:
    return True


def test_park_declines_on_a_loop_of_another_kind() -> None:
    uvloop = pytest.importorskip("uvloop")
    before = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        bridge = LoopBridge()
    finally:
        asyncio.set_event_loop_policy(before)
    try:
        assert isinstance(bridge.loop, uvloop.Loop)
        assert bridge.run(_true()) is True
        assert not bridge.park()  # the hop, as before
    finally:
        bridge.stop()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() of a threaded process (3.12+)
def test_a_forked_child_never_parks_the_parents_loop() -> None:
    bridge = LoopBridge()
    try:
        assert bridge.run(_true()) is True
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: the loop thread is gone, its socket the parent's
            os.write(write, b"1" if bridge.park() else b"0")
            os._exit(0)
        os.close(write)
        answer = os.read(read, 1)
        os.close(read)
        os.waitpid(pid, 0)
        assert answer == b"0"
    finally:
        bridge.stop()
