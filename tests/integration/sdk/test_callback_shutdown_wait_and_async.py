"""``on_functions_available`` / ``on_registrations_ready`` callbacks at shutdown, and ``async def`` ones (attack on the
SDK fix, B and C).

B: ``shutdown()`` gives a callback still running a bounded time (``CANCEL_WAIT_S``) to return, and calls none after
it began. Before, it returned at once with a "still running" warning and the process's exit cut the callback off
partway (a regression of the callbacks' daemon thread; the reference SDK's shutdown waited for it, 1.51 s).

C: an ``async def`` callback is run to its end, on the client's loop. Before (and in the reference SDK) its coroutine
was never awaited.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from iii import InitOptions
from iii.iii import III
from iii.iii_types import FunctionInfo
from iii.loop_bridge import CANCEL_WAIT_S

from .conftest import MakeWorker, RealEngineThread

_NOWHERE = "ws://127.0.0.1:1"  # nothing listens: the client keeps connecting, its callbacks are driven by hand


def test_shutdown_lets_a_slow_callback_finish_and_calls_none_after_it_began(caplog: pytest.LogCaptureFixture) -> None:
    client = III(_NOWHERE, InitOptions(worker_name="slow"))
    entered, finished = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow(functions: list[FunctionInfo]) -> None:
        calls.append(len(functions))
        entered.set()
        time.sleep(1.5)  # slow but finite: the thing under test
        finished.set()

    client._functions_available.add(slow)
    client._queue_functions_available([])
    assert entered.wait(5)
    client._queue_functions_available([FunctionInfo(function_id="f")])  # waits behind the running call: dropped
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="iii.callback_set"):
        client.shutdown()
    took = time.monotonic() - started
    assert finished.is_set()  # before: shutdown returned at once, the callback cut off by the exit that follows
    assert took < CANCEL_WAIT_S + 1.0
    assert not [r for r in caplog.records if "still running" in r.getMessage()]
    client._queue_functions_available([FunctionInfo(function_id="g")])  # after shutdown: no call either
    for thread in [t for t in threading.enumerate() if t.name == "iii functions-available callbacks"]:
        thread.join(5)
    assert calls == [0]


def test_a_callback_that_does_not_return_holds_shutdown_a_bounded_time_then_is_named(
        caplog: pytest.LogCaptureFixture) -> None:
    client = III(_NOWHERE, InitOptions(worker_name="stuck"))
    entered, release = threading.Event(), threading.Event()

    def stuck() -> None:
        entered.set()
        release.wait(30)

    client._registrations_ready.add(stuck)
    try:
        client._registrations_ready.push()
        assert entered.wait(5)
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="iii.callback_set"):
            client.shutdown()
        took = time.monotonic() - started
    finally:
        release.set()
    assert CANCEL_WAIT_S - 0.5 <= took < CANCEL_WAIT_S + 2.0, took
    assert any("registrations-ready callback" in r.getMessage() and "stuck still running" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]


# The main thread ends without shutdown(): the interpreter's exit shuts the client down, and waits for the callback.
_EXIT_SCRIPT = textwrap.dedent("""
    import threading, time
    from iii import InitOptions
    from iii.iii import III

    client = III("ws://127.0.0.1:1", InitOptions(worker_name="exit"))
    entered = threading.Event()

    def slow(functions):
        entered.set()
        time.sleep(1.5)
        print("callback finished", flush=True)

    client._functions_available.add(slow)
    client._queue_functions_available([])
    assert entered.wait(5)
    print("main ends", flush=True)
""")


def test_the_exit_lets_a_slow_callback_finish() -> None:
    done = subprocess.run([sys.executable, "-c", _EXIT_SCRIPT], capture_output=True, text=True, timeout=25)
    assert done.returncode == 0, done.stderr
    # before: "main ends" only, the callback's daemon thread cut off by the exit
    assert done.stdout.splitlines() == ["main ends", "callback finished"], (done.stdout, done.stderr)
    assert "still running" not in done.stderr


def test_an_async_callback_runs_on_the_clients_loop_and_may_await_its_api(real: RealEngineThread,
                                                                           make_real_worker: MakeWorker) -> None:
    watcher, other = make_real_worker("watcher"), make_real_worker("other")
    seen: list[tuple[bool, list[str]]] = []
    ran = threading.Event()

    async def on_change(functions: list[FunctionInfo]) -> None:
        if not any(f.function_id == "o::f" for f in functions):
            return
        listed = await watcher.list_functions_async()
        seen.append((threading.current_thread() is watcher._bridge.thread, [f.function_id for f in listed]))
        ran.set()

    watcher.on_functions_available(on_change)
    other.register_function("o::f", lambda data: data)
    assert ran.wait(10)  # before: "coroutine 'on_change' was never awaited"
    ((on_its_loop, listed),) = seen[:1]
    assert on_its_loop
    assert "o::f" in listed


def test_an_async_callback_still_running_at_shutdown_is_waited_for(caplog: pytest.LogCaptureFixture) -> None:
    client = III(_NOWHERE, InitOptions(worker_name="async-slow"))
    entered, finished = threading.Event(), threading.Event()

    async def slow() -> None:
        entered.set()
        await asyncio.sleep(1.5)  # slow but finite: the thing under test
        finished.set()

    client._registrations_ready.add(slow)
    client._registrations_ready.push()
    assert entered.wait(5)
    with caplog.at_level(logging.WARNING):
        client.shutdown()
    assert finished.is_set()
    assert not [r for r in caplog.records if "still running" in r.getMessage() or "never awaited" in r.getMessage()]


def test_an_async_callback_shutting_its_client_down_is_not_waited_for(caplog: pytest.LogCaptureFixture) -> None:
    client = III(_NOWHERE, InitOptions(worker_name="async-self"))
    done = threading.Event()

    async def shuts_down() -> None:
        await client.shutdown_async()
        done.set()

    client._registrations_ready.add(shuts_down)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="iii.callback_set"):
        client._registrations_ready.push()
        assert done.wait(10)
    assert time.monotonic() - started < CANCEL_WAIT_S  # not held by a wait for itself
    assert not [r for r in caplog.records if "still running" in r.getMessage()]


def test_an_async_callback_still_running_at_shutdown_is_cancelled_and_cleans_up(
        caplog: pytest.LogCaptureFixture) -> None:
    client = III(_NOWHERE, InitOptions(worker_name="async-stuck"))
    entered, cleaned = threading.Event(), threading.Event()

    async def stuck(functions: list[FunctionInfo]) -> None:
        entered.set()
        try:
            await asyncio.sleep(30)
        finally:
            cleaned.set()

    client._functions_available.add(stuck)
    client._queue_functions_available([])
    assert entered.wait(5)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        client.shutdown()
    # before: its finally never ran (the task destroyed pending with its loop), and its end was an ERROR traceback
    assert cleaned.wait(2)
    assert time.monotonic() - started < CANCEL_WAIT_S + 2
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in caplog.records if "still running" in r.getMessage()] == [
        f"Shut down with the async functions-available callback {__name__}.{stuck.__qualname__} still running "
        f"{CANCEL_WAIT_S:g} s later: cancelled"]
