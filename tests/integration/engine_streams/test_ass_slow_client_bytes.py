"""A stream-socket client that stops reading is cut off (1013) by the bytes it fell behind, not only by frames."""

from __future__ import annotations

import pytest

from iii_engine import Engine
from tests.polling import until

from .helpers import SocketClient, Worker, engine_config, stream_module

pytestmark = pytest.mark.our_engine("reads the stream socket's clients")

MiB = 1024 * 1024


async def test_a_client_behind_by_too_many_bytes_is_dropped_long_before_the_frame_count() -> None:
    """Before, only ``client_queue_size`` (1024 frames) counted: events of big items kept up to 1024 of them (4 GiB
    of 4 MiB items) alive for one client that had stopped reading. Now ``client_queue_bytes`` (32 MiB) cuts it off
    too; 64 events of 1 MiB are far under the frame count."""
    async with Engine(config=engine_config(slow_close_timeout_ms=200)) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        worker = await Worker.connect(engine.url)
        # max_queue=1: the client library stops reading its socket once one message waits unread
        client = await SocketClient.connect(engine, max_queue=1, max_size=None)
        await client.join("slow", "s", "big")
        await until(lambda: any(c.subscriptions for c in socket._clients))
        blob = "x" * MiB
        behind = []
        for n in range(64):  # 64 MiB: past 32 MiB plus what the kernel's socket buffers take
            await worker.result("stream::set", {"stream_name": "s", "group_id": "big", "item_id": str(n),
                                                "data": blob})
            behind.append(max((c.queue.qsize() for c in socket._clients), default=0))
        assert max(behind) < socket.settings.client_queue_size  # the frame count alone never trips
        await until(lambda: not socket._clients)  # cut off, then reset after slow_close_timeout_ms
        await worker.close()
        await client.ws.close()


async def test_one_frame_bigger_than_the_budget_still_reaches_a_client_that_is_not_behind() -> None:
    async with Engine(config=engine_config(client_queue_bytes=64 * 1024)) as engine:
        worker = await Worker.connect(engine.url)
        client = await SocketClient.connect(engine, max_size=None)
        await client.join("fast", "s", "g")
        assert (await client.recv())["event"]["type"] == "sync"
        await worker.result("stream::set", {"stream_name": "s", "group_id": "g", "item_id": "i",
                                            "data": "y" * 256 * 1024})
        frame = await client.recv()
        assert frame["event"] == {"type": "create", "data": "y" * 256 * 1024}
        await client.close()
        await worker.close()
