"""The SDK client's shutdown ends what is left on its private loop before closing it: a channel write pending there
(an async handler writing to a reader that never reads) left its task behind, and asyncio logged "Task was
destroyed but it is pending!" when the closed loop's tasks were collected."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from typing import Any

import pytest

from iii.channels import ChannelWriter
from iii.iii import III, TriggerAction


async def test_a_channel_write_pending_on_the_client_loop_ends_with_the_shutdown(
        engine_url: str, caplog: pytest.LogCaptureFixture) -> None:
    writing = threading.Event()

    async def writes(data: dict[str, Any]) -> None:
        writer = data["out"]
        assert isinstance(writer, ChannelWriter)
        writer.stream.write(b"x" * (16 << 20))  # bound to the client's loop; its reader never reads
        writing.set()
        await asyncio.sleep(3600)

    client = III(engine_url)
    try:
        client.register_function("writes", writes)
        await client.connect_async()
        channel = await client.create_channel_async(buffer_size=1)
        await client.trigger_async({"function_id": "writes", "payload": {"out": channel.writer_ref},
                                    "action": TriggerAction.Void()})
        assert await asyncio.to_thread(writing.wait, 10)
        loop = client._loop
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            await client.shutdown_async()
            assert loop.is_closed()
            left = [task for task in asyncio.all_tasks(loop) if not task.done()]
            del loop
            gc.collect()
    finally:
        await client.shutdown_async()
    assert left == []
    assert not [r.getMessage() for r in caplog.records if "destroyed but it is pending" in r.getMessage()]
