"""SDK mends: ``shutdown_async(close_timeout=…)`` as ``shutdown`` has it, one check of ``close_timeout`` for both;
``on_functions_available`` callbacks each run in a copy of the subscriber's context.

Why: ``shutdown(close_timeout=…)`` bounded the wait for the engine's answer to the WebSocket close, and
``shutdown_async`` had no such keyword (an async short-lived client waited 2 s for a server that never answered);
``shutdown(close_timeout="0.25")`` raised a bare ``TypeError`` from a comparison where every other wait of the SDK
raises ``ValueError`` naming the argument.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from iii import InitOptions, ReconnectionConfig
from iii.callback_set import CallbackSet
from iii.iii import III
from tests.integration.engine.test_inspect_hostile import _mute_after_handshake

pytestmark = pytest.mark.timeout(30)

FAST_RECONNECT = ReconnectionConfig(initial_delay_ms=20, max_delay_ms=200, jitter_factor=0.0)


async def _shutdown_async_took(close_timeout: float | None) -> float:
    """Seconds ``shutdown_async`` takes against a server that completed the handshake and never answers the close."""
    async with _mute_after_handshake(name_the_worker=True) as (address, _):
        client = III(f"ws://{address}", InitOptions(reconnection_config=FAST_RECONNECT))
        await client.wait_until_connected_async(5)
        assert client.worker_id == "w-1"
        began = time.monotonic()
        if close_timeout is None:
            await client.shutdown_async()
        else:
            await client.shutdown_async(close_timeout=close_timeout)
        took = time.monotonic() - began
    assert client.get_connection_state() == "disconnected"
    return took


async def test_shutdown_async_close_timeout_bounds_the_wait_for_an_unanswered_close() -> None:
    took = await _shutdown_async_took(0.25)
    assert 0.25 <= took < 1.0, took


async def test_shutdown_async_waits_the_default_2_s_without_close_timeout() -> None:
    took = await _shutdown_async_took(None)
    assert 1.9 <= took < 4.0, took


async def test_shutdown_async_close_timeout_from_the_clients_own_loop() -> None:
    # An async handler of the client shutting it down: the bound reaches the shutdown run on the client's loop too.
    async with _mute_after_handshake(name_the_worker=True) as (address, _):
        client = III(f"ws://{address}", InitOptions(reconnection_config=FAST_RECONNECT))
        await client.wait_until_connected_async(5)

        async def from_its_loop() -> float:
            began = time.monotonic()
            await client.shutdown_async(close_timeout=0.25)
            return time.monotonic() - began

        took = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(from_its_loop(), client._loop))
        await asyncio.to_thread(client._bridge.thread.join, 5)
    assert 0.25 <= took < 1.0, took
    assert not client._bridge.alive


BAD = [-1.0, float("nan"), float("inf"), -float("inf"), "0.25", True]


@pytest.mark.parametrize("bad", BAD, ids=repr)
async def test_shutdown_and_shutdown_async_refuse_the_same_bad_close_timeouts(bad: object) -> None:
    client = III("ws://127.0.0.1:1", InitOptions(reconnection_config=FAST_RECONNECT))
    try:
        expected = f"close_timeout must be a finite number of seconds >= 0, got {bad!r}"
        with pytest.raises(ValueError) as sync_error:
            await asyncio.to_thread(client.shutdown, close_timeout=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError) as async_error:
            await client.shutdown_async(close_timeout=bad)  # type: ignore[arg-type]
        assert str(sync_error.value) == str(async_error.value) == expected
        assert client._bridge.alive  # refused before anything was shut down
    finally:
        await client.shutdown_async()


async def test_a_huge_int_close_timeout_is_a_long_bound_not_an_overflow() -> None:
    client = III("ws://127.0.0.1:1", InitOptions(reconnection_config=FAST_RECONNECT))
    await client.shutdown_async(close_timeout=10**400)  # nothing to close: returns at once
    assert not client._bridge.alive


# ---------------------------------------------------------------- on_functions_available callbacks and their context
# Why: the callbacks ran straight on a shared handler thread, in its one context: a callback's ContextVar.set was
# seen by the next callback there (and by later calls), and none saw the context of the code that subscribed it.

REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="none")


def _setter_and_reader(seen: list[str], done: threading.Event) -> tuple[Callable[..., None], Callable[..., None]]:
    def sets(*_: object) -> None:
        seen.append(f"setter saw {REQUEST.get()}")
        REQUEST.set("set by a callback")

    def reads(*_: object) -> None:
        seen.append(f"reader saw {REQUEST.get()}")
        done.set()

    return sets, reads


def test_a_callbacks_contextvar_set_is_not_seen_by_the_next_callback() -> None:
    pool = ThreadPoolExecutor(1)  # one handler thread: both callbacks run on it, one after the other
    callbacks: CallbackSet[[int]] = CallbackSet(lambda: pool, "test")
    seen: list[str] = []
    done = threading.Event()
    sets, reads = _setter_and_reader(seen, done)
    callbacks.callbacks[sets] = callbacks.callbacks[reads] = None  # added with no context: the thread's, copied
    try:
        for _ in range(2):
            done.clear()
            callbacks.push(1)
            assert done.wait(5)
    finally:
        pool.shutdown(wait=True)
    assert seen == ["setter saw none", "reader saw none"] * 2


def test_a_callback_sees_the_context_it_was_added_in() -> None:
    pool = ThreadPoolExecutor(1)
    callbacks: CallbackSet[[]] = CallbackSet(lambda: pool, "test")
    seen: list[str] = []
    done = threading.Event()
    token = REQUEST.set("subscriber's")
    try:
        callbacks.add(lambda: (seen.append(REQUEST.get()), done.set()))
    finally:
        REQUEST.reset(token)
    try:
        callbacks.push()  # from a context where REQUEST is unset
        assert done.wait(5)
    finally:
        pool.shutdown(wait=True)
    assert seen == ["subscriber's"]


def test_on_functions_available_runs_each_callback_in_its_own_copy_of_the_subscribers_context() -> None:
    client = III("ws://127.0.0.1:1", InitOptions(reconnection_config=FAST_RECONNECT))
    seen: list[str] = []
    done = threading.Event()
    sets, reads = _setter_and_reader(seen, done)
    try:
        token = REQUEST.set("subscriber's")
        try:
            client.on_functions_available(sets)
            client.on_functions_available(reads)
        finally:
            REQUEST.reset(token)
        for _ in range(2):
            done.clear()
            client._queue_functions_available([])  # what the engine's engine::functions-available call does
            assert done.wait(5)
    finally:
        client.shutdown(close_timeout=0)
    assert seen == ["setter saw subscriber's", "reader saw subscriber's"] * 2


def test_a_wait_in_seconds_is_capped_in_seconds_and_its_error_is_short() -> None:
    import threading

    from iii.iii import _checked_seconds

    # the cap was the call timeout's, in milliseconds, used as seconds (1000 times threading's longest wait)
    assert _checked_seconds(10**400, "close_timeout") <= threading.TIMEOUT_MAX
    with pytest.raises(ValueError, match="close_timeout must be") as refused:
        _checked_seconds(-(10**400), "close_timeout")
    assert len(str(refused.value)) < 200  # (it printed all 400 digits)
