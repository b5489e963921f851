"""Stream socket clients that go early: during the auth call of their upgrade, or with joins still buffered."""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

import pytest

from iii_engine import Engine
from tests.polling import until

from .helpers import SocketClient, Worker, engine_config, registered, stream_module

pytestmark = pytest.mark.our_engine("bounds the stream socket's upgrades with its own settings")


async def _upgrade_then_go(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Send a WebSocket upgrade request on a raw TCP connection (the caller closes it when it likes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET /?who=gone HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def test_a_client_gone_during_the_auth_call_is_let_go_at_once() -> None:
    """Before, an upgrade whose client went while the auth function had not answered kept its place under
    ``max_clients`` and its auth call pending until websockets' 10 s handshake timeout: clients that connect and
    go at once, against a slow auth function, kept every other client out (HTTP 503) without holding a socket."""
    async with Engine(config=engine_config(auth_function="auth", max_clients=1)) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        worker = await Worker.connect(engine.url)
        hung = asyncio.Event()

        async def auth(data: Any) -> Any:
            if data["query_params"].get("who") == ["gone"]:
                await hung.wait()
            return {"context": None}

        await worker.register("auth", auth)
        await registered(engine, "auth")
        _, gone = await _upgrade_then_go(socket.port)
        await until(lambda: len(worker.calls.get("auth", [])) == 1)
        gone.close()  # the client goes while its auth call is in flight
        await until(lambda: not [p for p in engine.invocations.pending.values() if p.function_id == "auth"],
                    within=3)
        client = await SocketClient.connect(engine)  # its place is free: not a 503
        await client.join("j", "s", "g")
        assert (await client.recv())["event"] == {"type": "sync", "data": []}
        await client.close()
        hung.set()
        await worker.close()


async def test_a_client_gone_while_its_join_opens_the_store_feed_leaves_no_feed_behind() -> None:
    """The feed's opening is shielded from the join's cancel: it completes, and the last client's end closes it;
    a client joining meanwhile waits for that same opening and gets its events."""
    async with Engine(config=engine_config()) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        store = socket.store
        opening = asyncio.Event()
        release = asyncio.Event()
        closed: list[object] = []
        plain_watch = store.watch

        def slow_watch(*args: Any, **kwargs: Any) -> Any:
            watch = plain_watch(*args, **kwargs)
            plain_open, plain_close = watch.open, watch.aclose

            async def open_() -> Any:
                opening.set()
                await release.wait()
                return await plain_open()

            async def aclose() -> None:
                closed.append(watch)
                await plain_close()

            watch.open, watch.aclose = open_, aclose  # type: ignore[method-assign]
            return watch

        store.watch = slow_watch  # type: ignore[method-assign]
        first = await SocketClient.connect(engine)
        await first.join("a", "s", "g")
        await opening.wait()
        await first.close()  # gone while its join waits on the store
        await until(lambda: not socket._clients)
        release.set()
        await until(lambda: not socket.following and bool(closed))  # opened for nobody, then closed
        opening.clear()
        release.clear()
        second = await SocketClient.connect(engine)
        await second.join("b", "s", "g")
        await opening.wait()
        third = await SocketClient.connect(engine)
        await third.join("c", "s", "g")  # waits for the same opening
        await second.close()
        await until(lambda: len(socket._clients) == 1)
        release.set()
        assert (await third.recv())["event"] == {"type": "sync", "data": []}
        worker = await Worker.connect(engine.url)
        await worker.result("stream::set", {"stream_name": "s", "group_id": "g", "item_id": "i", "data": 1})
        assert (await third.recv())["event"]["type"] == "create"
        assert socket.following
        await third.close()
        await until(lambda: not socket._clients and not socket.following)
        await worker.close()
