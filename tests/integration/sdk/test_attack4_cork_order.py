"""Attack on a3253f7 (the control socket corks like the channel sockets): frame order and completeness when batch
frames, immediate frames, backlog frames (telemetry, send_soon) and websockets' own writes (pongs to a server that
pings without pause, a Close) interleave, text and binary mixed. Real client Connection, real websockets server."""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from iii import ws_fastpath
from iii.connection import Connection

OPTS: dict[str, Any] = {"ping_interval": None, "compression": None, "max_size": None}
ROUNDS = 200


async def test_mixed_sends_under_constant_pings_arrive_once_in_order() -> None:
    got: list[str | bytes] = []
    done = asyncio.Event()
    ready = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        async def pinger() -> None:
            while True:
                await (await ws.ping())  # the next ping once the client's pong (websockets' own write) came

        pings = asyncio.ensure_future(pinger())
        try:
            async for message in ws:
                got.append(message)
        finally:
            pings.cancel()
            done.set()

    async with serve(handler, "127.0.0.1", 0, **OPTS) as server:
        port = server.sockets[0].getsockname()[1]
        conn = Connection(f"ws://127.0.0.1:{port}", on_frame=lambda _raw: None, on_ready=ready.set, max_size=None)
        await conn.start()
        expected: list[str | bytes] = []
        try:
            await asyncio.wait_for(ready.wait(), 10)
            ws = conn._ws
            assert isinstance(ws, ws_fastpath.DirectClientConnection)
            async def now(frame: str) -> bool:
                conn.send_now(frame)
                return True

            async def soon(frame: bytes) -> bool:
                conn.send_soon(frame)  # the backlog: later sends queue behind it
                return True

            for n in range(ROUNDS):
                # Tasks start in the order they were made, all in one turn of the loop.
                text, binary = f'{{"n":{n}}}', b"OTLP" + n.to_bytes(4, "big")
                big = "B" * (ws_fastpath.FLUSH_BYTES // 3) + str(n)
                sends = [conn.send(text, batch=True), now(f"now{n}"), conn.send(binary, batch=True),
                         conn.send(big, batch=True)]
                expected += [text, f"now{n}", binary, big]
                if n % 7 == 0:
                    metric = b"MTRC" + n.to_bytes(4, "big")
                    sends += [soon(metric), conn.send(f"after{n}", batch=True), now(f"now-after{n}")]
                    expected += [metric, f"after{n}", f"now-after{n}"]
                tasks = [asyncio.ensure_future(send) for send in sends]
                if n % 10:
                    await asyncio.gather(*tasks)
            await asyncio.gather(*tasks)
            if conn._flusher is not None:
                await conn._flusher  # the backlog's task: what send_soon queued is written
            assert not conn._backlog
            await ws.close()
            await asyncio.wait_for(done.wait(), 10)
        finally:
            await conn.close()
    assert len(got) == len(expected)
    assert got == expected
