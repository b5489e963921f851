"""What a stream client's own messages cost the engine while one of its joins waits on a slow handler.

The socket handles a client's messages one at a time, and a join may take up to ``join_timeout_ms``; what the
client sends meanwhile waits in websockets' receive buffer. Before, that buffer took 16 messages before the
socket stopped reading: with 1 MiB frames allowed, each client parked 17 MiB in the engine behind one slow join
(170 GB at the default ``max_clients``), outside ``client_queue_bytes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest

from iii_engine import Engine
from tests.polling import until

from .helpers import SocketClient, Worker, engine_config, stream_module, trigger_active

pytestmark = pytest.mark.our_engine("bounds what the stream socket buffers for a client")

MiB = 1024 * 1024


async def test_a_client_flooding_behind_a_hung_join_parks_at_most_two_messages_in_the_engine() -> None:
    async with Engine(config=engine_config(join_timeout_ms=30_000)) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        worker = await Worker.connect(engine.url)
        release = asyncio.Event()

        async def gate(_: Any) -> Any:
            await release.wait()

        await worker.register("gate", gate)
        await trigger_active(engine, await worker.trigger("stream:join", "gate", {}))
        client = await SocketClient.connect(engine)
        await client.join("hung", "s", "g")
        await until(lambda: len(worker.calls.get("gate", [])) == 1)
        (server_side,) = socket._clients
        pad = "p" * (MiB - 1024)  # just under the 1 MiB frame limit

        async def flood() -> None:
            for n in range(40):
                await client.ws.send(json.dumps({"type": "leave", "data": {"subscriptionId": f"x{n}",
                                                                           "streamName": "s", "groupId": pad}}))

        flooding = asyncio.get_running_loop().create_task(flood())
        received = server_side.ws.recv_messages  # websockets' buffer of received, unhandled frames
        await until(lambda: received.paused, within=10)  # the socket stopped reading from this client
        parked = sum(len(frame.data) for frame in received.frames.queue)
        assert parked <= 2 * MiB, f"{parked / MiB:.1f} MiB of the client's messages wait in the engine"
        release.set()  # the join goes through; the rest is read and handled as before
        assert (await client.recv())["event"]["type"] == "sync"
        await asyncio.wait_for(flooding, 10)
        await until(lambda: socket.ignored_messages >= 40)  # every flooded leave was handled (leave of nothing)
        flooding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flooding
        await client.close()
        await worker.close()


async def test_a_client_gone_behind_its_queued_joins_is_let_go_when_the_hung_join_ends_with_one_leave_each() -> None:
    """Its close waits unread behind its messages: it is seen gone once the hung join times out, and every join
    the handlers heard of gets exactly one leave."""
    async with Engine(config=engine_config(join_timeout_ms=300)) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        worker = await Worker.connect(engine.url)
        leaves: list[str] = []

        async def gate(data: Any) -> Any:
            if data["group_id"] == "slow":
                await asyncio.Event().wait()

        async def left(data: Any) -> Any:
            leaves.append(data["subscription_id"])

        await worker.register("gate", gate)
        await worker.register("left", left)
        await trigger_active(engine, await worker.trigger("stream:join", "gate", {}))
        await trigger_active(engine, await worker.trigger("stream:leave", "left", {}))
        client = await SocketClient.connect(engine)
        await client.join("hung", "s", "slow")
        for n in range(5):
            await client.join(f"j{n}", "s", f"g{n}")
        await until(lambda: len(worker.calls.get("gate", [])) == 1)
        await client.close()
        await until(lambda: not socket._clients and not socket.following, within=3)
        heard = [call["subscription_id"] for call in worker.calls["gate"]]
        await until(lambda: sorted(leaves) == sorted(heard))
        await until(lambda: not socket.leave_triggers._tasks)  # no further leave can come
        assert sorted(leaves) == sorted(heard) and heard[0] == "hung"
        await worker.close()
