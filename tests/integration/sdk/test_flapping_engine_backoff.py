"""An engine that accepts a worker and closes the connection at once, again and again: the reconnect delays keep
growing, as for failed connects, instead of starting over at every handshake (every worker reconnected, and replayed
its registrations, about once a second for ever); a connection that stayed up starts them over."""

from __future__ import annotations

import asyncio
import itertools
import time

from websockets.asyncio.server import ServerConnection, serve

from iii import InitOptions, register_worker
from iii.iii_constants import ReconnectionConfig
from tests.polling import until

INITIAL_MS = 40


async def test_reconnect_delays_grow_while_the_engine_closes_every_connection_at_once() -> None:
    opened: list[float] = []

    async def handle(ws: ServerConnection) -> None:
        opened.append(time.monotonic())
        await ws.close(1011, "flapping")

    config = ReconnectionConfig(initial_delay_ms=INITIAL_MS, backoff_multiplier=2.0, max_delay_ms=640,
                                jitter_factor=0.0)
    async with serve(handle, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        client = await asyncio.to_thread(register_worker, f"ws://127.0.0.1:{port}",
                                         InitOptions(reconnection_config=config))
        try:
            await until(lambda: len(opened) >= 6, within=20)
        finally:
            await asyncio.to_thread(client.shutdown)
    gaps = [b - a for a, b in itertools.pairwise(opened[:6])]
    # 40, 80, 160, 320, 640 ms (before: 40 ms each, the delay started over at each handshake)
    assert gaps[-1] >= 8 * INITIAL_MS / 1000, gaps
