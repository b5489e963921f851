"""The outbound queue is bounded in bytes as well as in frames: best-effort frames (telemetry) at most
``BEST_EFFORT_MAX_BYTES`` (16 MiB), other frames a call can be refused for at most ``MAX_QUEUE_BYTES`` (64 MiB;
the call fails at once as never sent, with a message naming the bound), and ``shutdown()`` lets the queue go.

Before: bounded only in frames (500 telemetry frames of up to 4 MiB, 1,000 calls): behind a SIGSTOPped engine,
4 MB span frames took a worker from 46 to 923 MB in 35 s."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from iii import ConnectionLostError, InitOptions, TriggerAction, register_worker
from iii.connection import _BEST_EFFORT, BEST_EFFORT_MAX_BYTES, MAX_QUEUE_BYTES, Connection
from iii.iii import III
from tests.conftest import EngineProcess
from tests.integration.sdk.conftest import FAST_RECONNECT
from tests.polling import until

T = TypeVar("T")
MiB = 1024 * 1024


async def _on_client_loop(client: III, fn: Callable[[], T]) -> T:
    """``fn()`` on the client's loop thread, after everything handed to that loop before (its queue is FIFO)."""
    async def call() -> T:
        return fn()

    return await asyncio.to_thread(client._bridge.run, call())


def _queued_best_effort_bytes(conn: Connection) -> int:
    return sum(len(frame) for frame, key in conn._backlog if key is _BEST_EFFORT)


async def test_telemetry_behind_a_stopped_engine_holds_at_most_its_bytes_and_shutdown_lets_it_go(
        engine_process: Callable[..., Awaitable[EngineProcess]], caplog: pytest.LogCaptureFixture) -> None:
    served = await engine_process()
    client = await asyncio.to_thread(register_worker, served.url, InitOptions(worker_name="spans"))
    conn = client._conn
    frame = b"OTLP" + b"x" * (4 * MiB - 4)  # the exporters' largest frame (MAX_FRAME_BYTES)
    count = 40  # 160 MiB: ten times the bound, and within the best-effort share (500 frames)
    served.process.send_signal(signal.SIGSTOP)
    try:
        with caplog.at_level(logging.WARNING, logger="iii.connection"):
            for _ in range(count):
                client.send_telemetry(frame)
            queued, dropped = await _on_client_loop(client, lambda: (_queued_best_effort_bytes(conn), conn.dropped))
        # (the rest is in the socket's buffers, the engine's kernel buffers, or dropped)
        assert queued <= BEST_EFFORT_MAX_BYTES, f"{queued / MiB:.0f} MiB of telemetry queued"
        # the bound, not a smaller share, let them go; the writer may have taken a frame or two off the queue after
        # the last came (a stopped peer's kernel buffers take several MiB, and a write gives the loop turns while it
        # goes out: one CI run under load found 8 MiB queued)
        assert queued >= BEST_EFFORT_MAX_BYTES - 2 * len(frame)
        assert dropped >= count - BEST_EFFORT_MAX_BYTES // len(frame) - 4, dropped
        assert any("best-effort frame(s)" in r.getMessage() for r in caplog.records)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="iii.connection"):
            await asyncio.to_thread(client.shutdown)
        # Everything queued was let go, and counted as dropped: none of it will be sent.
        assert len(conn._backlog) == 0 and conn._best_effort_bytes == 0 and conn._held_bytes == 0
        assert conn.dropped == dropped + queued // len(frame)
        assert any("best-effort frame(s) (telemetry, pongs) never sent" in r.getMessage() for r in caplog.records)
    finally:
        served.process.send_signal(signal.SIGCONT)
        served.process.kill()


async def test_calls_during_an_outage_are_refused_past_the_byte_bound_with_a_clear_error(
        engine_process: Callable[..., Awaitable[EngineProcess]]) -> None:
    served = await engine_process()
    client = await asyncio.to_thread(register_worker, served.url,
                                     InitOptions(worker_name="caller", reconnection_config=FAST_RECONNECT))
    calls: list[asyncio.Future[Any]] = []
    try:
        served.process.kill()
        await served.process.wait()
        await until(lambda: not client._conn.is_ready)
        payload = "x" * MiB
        fits = MAX_QUEUE_BYTES // (MiB + 200)  # a call's frame: the payload and ~100 bytes of envelope

        async def call() -> Any:
            return await client.trigger_async({"function_id": "nobody::here", "payload": payload,
                                               "timeout_ms": 20_000})

        calls += [asyncio.ensure_future(call()) for _ in range(fits + 10)]
        done, _ = await asyncio.wait(calls, timeout=5)  # the refused fail at once; the rest wait for the engine
        refused = [task.exception() for task in done]
        queued = len(calls) - len(refused)
        assert queued * MiB <= MAX_QUEUE_BYTES and len(refused) >= 10, (queued, len(refused))
        for error in refused:
            assert isinstance(error, ConnectionLostError), error
            assert "was never sent: the outbound queue is full (" in error.message, error.message
            assert f"at most {MAX_QUEUE_BYTES:,})" in error.message, error.message
        assert client._conn._held_bytes <= MAX_QUEUE_BYTES
        # A fire-and-forget call, whose sender hears nothing later, raises instead of being queued.
        with pytest.raises(ConnectionLostError, match="bytes of calls and other frames"):
            await client.trigger_async({"function_id": "nobody::here", "payload": payload,
                                        "action": TriggerAction.Void()})
    finally:
        await asyncio.to_thread(client.shutdown)
        await asyncio.gather(*calls, return_exceptions=True)


async def test_a_frame_alone_is_taken_and_the_loop_s_own_frames_are_kept_past_the_byte_bound() -> None:
    dropped: list[str] = []
    conn = Connection("ws://127.0.0.1:1", on_frame=lambda raw: None, on_dropped=dropped.append, max_queue_bytes=100)
    conn.send_soon("c" * 500, "big")  # alone: a call that fits the engine's limit is never refused for the bound
    assert dropped == []
    conn.send_soon("c" * 10, "small")  # past the bound now: refused, told
    assert dropped == ["small"]
    conn.send_soon("r" * 100)  # a result or registration of the loop's own: kept
    assert [frame[0] for frame, _ in conn._backlog] == ["c", "r"] and conn._held_bytes == 600
    with pytest.raises(ConnectionLostError, match="600 bytes of calls and other frames waiting for the engine, "
                                                  "at most 100"):
        await conn.send("v")
    await conn.close()
    assert conn._held_bytes == 0
