"""A worker holds at most ``max_held_calls`` incoming calls (and ``max_held_call_bytes`` of their frames): past that
it stops reading its socket, so further calls wait in the engine, under the engine's bounds, and none is lost.

Before, every call was taken in at once: four callers' 40,000 void calls of 4 KB into a sync handler that slept took
the callee from 45 to 518 MB (a task and a place in the handler threads' queue each). A handler calling a function of
its own worker and waiting for it must still get its answer with the bound full (it comes on the same socket).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from iii import InitOptions, TriggerAction, register_worker
from iii.iii import III

from .conftest import FAST_RECONNECT, RealEngineThread, wait_until

HELD = 8


@pytest.fixture(params=[("max_held_calls", HELD), ("max_held_call_bytes", HELD * 4000)])
def callee(real: RealEngineThread, request: pytest.FixtureRequest) -> Iterator[III]:
    """A worker held to :data:`HELD` calls: by their count, or by their bytes (frames of a bit over 4,000 bytes)."""
    options = InitOptions(worker_name="callee", reconnection_config=FAST_RECONNECT)
    # (set, not passed: so the test runs, and fails on what it checks, where the option is not known)
    setattr(options, *request.param)
    client = register_worker(real.url, options)
    try:
        yield client
    finally:
        client.shutdown()


@pytest.fixture
def caller(real: RealEngineThread) -> Iterator[III]:
    client = register_worker(real.url, InitOptions(worker_name="caller", reconnection_config=FAST_RECONNECT))
    try:
        yield client
    finally:
        client.shutdown()


def test_void_calls_past_the_bound_wait_in_the_engine_and_all_run(real: RealEngineThread, callee: III,
                                                                    caller: III) -> None:
    release = threading.Event()
    held: list[int] = []  # the calls the callee held as each run started
    ran: list[int] = []

    def slow(data: Any) -> None:
        held.append(callee._invoking)
        assert release.wait(20)
        ran.append(data["i"])

    callee.register_function("held::slow", slow)
    real.wait_registered("held::slow")
    for i in range(100):
        caller.trigger({"function_id": "held::slow", "payload": {"i": i, "pad": "x" * 4000},
                        "action": TriggerAction.Void()})
    caller.list_functions()  # a round trip: the engine has routed every void call before it
    wait_until(lambda: callee._invoking >= HELD)
    wait_until(lambda: getattr(callee, "_reading_paused", False) or callee._invoking > HELD)
    socket = callee._conn._ws
    assert socket is not None
    # the pong of a keep-alive ping is not read while paused: its timeout must not close the connection
    assert socket.ping_timeout is None
    release.set()
    wait_until(lambda: len(ran) == 100, 20)
    assert sorted(ran) == list(range(100))  # none lost, none run twice
    assert max(held) <= HELD, f"the callee held up to {max(held)} calls (bound: {HELD} calls' worth)"
    assert callee._conn._ws is socket and socket.ping_timeout == 20  # read again, with websockets' default


def test_async_handlers_are_held_to_the_bound_too(real: RealEngineThread, callee: III, caller: III) -> None:
    release = asyncio.Event()  # (waited for on the client's loop, set there)
    held: list[int] = []

    async def slow(data: Any) -> int:
        held.append(callee._invoking)
        await release.wait()
        return int(data["i"])

    callee.register_function("held::aslow", slow)
    real.wait_registered("held::aslow")
    answers: list[Any] = []

    def call(i: int) -> None:
        answers.append(caller.trigger({"function_id": "held::aslow", "payload": {"i": i, "pad": "x" * 4000},
                                       "timeout_ms": 20_000}))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    wait_until(lambda: callee._invoking >= HELD)
    wait_until(lambda: getattr(callee, "_reading_paused", False) or callee._invoking > HELD)
    callee._loop.call_soon_threadsafe(release.set)
    for t in threads:
        t.join(20)
    assert sorted(answers) == list(range(40))
    assert max(held) <= HELD, f"the callee held up to {max(held)} calls (bound: {HELD} calls' worth)"


def test_handlers_calling_their_own_worker_answer_with_the_bound_full(real: RealEngineThread, callee: III,
                                                                       caller: III) -> None:
    callee.register_function("held::inner", lambda data: data["i"] * 2)

    def outer(data: Any) -> Any:
        return callee.trigger({"function_id": "held::inner", "payload": data, "timeout_ms": 10_000}) + 1

    callee.register_function("held::outer", outer)
    real.wait_registered("held::inner", "held::outer")
    answers: dict[int, Any] = {}

    def call(i: int) -> None:
        answers[i] = caller.trigger({"function_id": "held::outer", "payload": {"i": i}, "timeout_ms": 15_000})

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4 * HELD)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert answers == {i: i * 2 + 1 for i in range(4 * HELD)}


@pytest.mark.parametrize("name", ["max_held_calls", "max_held_call_bytes"])
@pytest.mark.parametrize("value", [0, -1, 1.5, True, None])
def test_a_bound_that_cannot_work_is_refused(name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"^{name} must be an int >= 1, got {value!r}$"):
        III("ws://127.0.0.1:1", InitOptions(**{name: value}))
