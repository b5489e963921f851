"""A sync handler still running on a handler thread when its client shuts down keeps the process alive (the
interpreter waits for the thread at exit): the shutdown says so, naming the function, instead of nothing."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest

from iii.iii import III, TriggerAction


async def test_shutdown_names_the_sync_handlers_still_running(engine_url: str,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    started, release = threading.Event(), threading.Event()

    def slow(data: Any) -> Any:
        started.set()
        release.wait(10)
        return data

    client = III(engine_url)
    try:
        client.register_function("billing::slow", slow)
        client.register_function("billing::quick", lambda data: data)
        await client.connect_async()
        await client.trigger_async({"function_id": "billing::quick", "payload": 1})
        await client.trigger_async({"function_id": "billing::slow", "payload": 1, "action": TriggerAction.Void()})
        assert await asyncio.to_thread(started.wait, 10)
        with caplog.at_level(logging.WARNING, logger="iii.handler_runner"):
            await client.shutdown_async()
    finally:
        release.set()
        await client.shutdown_async()
    warnings = [r.getMessage() for r in caplog.records if r.name == "iii.handler_runner"]
    assert len(warnings) == 1, warnings
    assert "1 sync handler run(s) still going" in warnings[0] and "(billing::slow)" in warnings[0]
    assert "the process waits for them" in warnings[0]


async def test_no_warning_when_no_sync_handler_runs(engine_url: str, caplog: pytest.LogCaptureFixture) -> None:
    client = III(engine_url)
    client.register_function("billing::quick", lambda data: data)
    await client.connect_async()
    assert await client.trigger_async({"function_id": "billing::quick", "payload": 2}) == 2
    with caplog.at_level(logging.WARNING, logger="iii.handler_runner"):
        await client.shutdown_async()
    assert not [r for r in caplog.records if r.name == "iii.handler_runner"]
