"""The stream module's stop with clients that stopped reading: each is closed within ``CLOSE_TIMEOUT_S`` (2 s),
then reset.

Before, websockets' own close (the server's 1001 to every client) first waited, without a deadline, for the
client to take what it had been sent: a client that stopped reading mid-sync held the engine's stop until
websockets' keep-alive gave up (20 s); a client already being closed as too slow held it for
``slow_close_timeout_ms``.
"""

from __future__ import annotations

import time

import pytest

from iii_engine import Engine
from tests.polling import until

from .helpers import SocketClient, Worker, engine_config, stream_module

pytestmark = pytest.mark.our_engine("stops its own stream socket")

ITEM = "x" * 500_000


async def test_the_stop_does_not_wait_for_clients_that_stopped_reading() -> None:
    engine = Engine(config=engine_config(client_queue_bytes=1024 * 1024, slow_close_timeout_ms=15_000))
    await engine.__aenter__()
    try:
        socket = stream_module(engine).socket
        assert socket is not None
        worker = await Worker.connect(engine.url)
        for n in range(20):  # a 10 MB group: more than the kernel's socket buffers take
            await worker.result("stream::set", {"stream_name": "big", "group_id": "g", "item_id": str(n),
                                                "data": ITEM})
        mid_sync = await SocketClient.connect(engine)
        mid_sync.ws.transport.pause_reading()
        await mid_sync.join("a", "big", "g")
        too_slow = await SocketClient.connect(engine)
        await too_slow.join("b", "big", "quiet")
        assert (await too_slow.recv())["event"]["type"] == "sync"
        too_slow.ws.transport.pause_reading()
        for _ in range(30):  # past client_queue_bytes: closed as too slow, the close waiting on it for 15 s
            await worker.result("stream::set", {"stream_name": "big", "group_id": "quiet", "item_id": "i",
                                                "data": ITEM})
        await until(lambda: any(client.overflowed for client in socket._clients))
        await until(lambda: all(c.ws.transport.get_write_buffer_size() > 0 for c in socket._clients))
        await worker.close()
    finally:
        started = time.monotonic()
        await engine.__aexit__(None, None, None)
    took = time.monotonic() - started
    assert took < 5, f"the engine's stop took {took:.1f} s"
