"""Edges of the SDK client's shutdown: the warning about sync handlers still running names only handlers the process
will wait for, not the one that called the shutdown itself (it returns as the shutdown does)."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest

from iii.iii import III, TriggerAction


async def test_a_sync_handler_shutting_its_client_down_is_not_named_as_left_running(
        engine_url: str, caplog: pytest.LogCaptureFixture) -> None:
    slow_started, release, done = threading.Event(), threading.Event(), threading.Event()
    client = III(engine_url)

    def slow(data: Any) -> None:
        slow_started.set()
        release.wait(10)

    def stop(data: Any) -> None:
        try:
            client.shutdown()
        finally:
            done.set()

    try:
        client.register_function("billing::slow", slow)
        client.register_function("ops::stop", stop)
        await client.connect_async()
        await client.trigger_async({"function_id": "billing::slow", "payload": None, "action": TriggerAction.Void()})
        assert await asyncio.to_thread(slow_started.wait, 10)
        with caplog.at_level(logging.WARNING, logger="iii.handler_runner"):
            await client.trigger_async({"function_id": "ops::stop", "payload": None, "action": TriggerAction.Void()})
            assert await asyncio.to_thread(done.wait, 10)
    finally:
        release.set()
        await client.shutdown_async()
    assert client._bridge.loop.is_closed()
    warnings = [r.getMessage() for r in caplog.records if r.name == "iii.handler_runner"]
    # before: "Shut down with 2 sync handler run(s) still going on the handler threads (billing::slow, ops::stop)"
    assert len(warnings) == 1, warnings
    assert "1 sync handler run(s) still going" in warnings[0] and "(billing::slow)" in warnings[0], warnings
