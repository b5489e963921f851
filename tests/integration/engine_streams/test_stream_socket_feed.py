"""Through a real engine: the stream socket reads the store's events back only while a client is connected, and a
client arriving after the last one left (feed closed) gets its sync and every later change."""

from __future__ import annotations

import asyncio

import pytest

from iii_engine import Engine

from .helpers import WAIT, SocketClient, Worker, stream_module


def _feed_closes(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """An event set each time the socket has handled a client leaving (its feed check done)."""
    socket = stream_module(engine).socket
    assert socket is not None
    handled = asyncio.Event()
    close_feed = socket._close_feed

    async def spy(*, force: bool = False) -> None:
        await close_feed(force=force)
        handled.set()

    monkeypatch.setattr(socket, "_close_feed", spy)
    return handled


async def test_feed_follows_clients_and_a_later_client_misses_nothing(
    engine: Engine, engine_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    left = _feed_closes(engine, monkeypatch)
    socket = stream_module(engine).socket
    assert socket is not None and not socket.following
    worker = await Worker.connect(engine_url)
    key = {"stream_name": "s", "group_id": "g", "item_id": "i"}
    await worker.result("stream::set", {**key, "data": {"v": 0}})
    assert not socket.following  # writes alone open nothing

    first = await SocketClient.connect(engine)
    await first.join("a", "s", "g")
    assert (await first.recv())["event"] == {"type": "sync", "data": [{"v": 0}]}
    assert socket.following
    await worker.result("stream::update", {**key, "ops": [{"type": "increment", "path": "v", "by": 1}]})
    assert (await first.recv())["event"] == {"type": "update", "data": {"v": 1}}
    await first.close()
    await asyncio.wait_for(left.wait(), WAIT)  # the server handles the disconnect after the close handshake
    assert not socket.following
    left.clear()

    await worker.result("stream::update", {**key, "ops": [{"type": "increment", "path": "v", "by": 1}]})
    second = await SocketClient.connect(engine)
    await second.join("b", "s", "g")
    assert (await second.recv())["event"] == {"type": "sync", "data": [{"v": 2}]}
    for _ in range(3):
        await worker.result("stream::update", {**key, "ops": [{"type": "increment", "path": "v", "by": 1}]})
    assert [(await second.recv())["event"]["data"] for _ in range(3)] == [{"v": 3}, {"v": 4}, {"v": 5}]
    await second.close()
    await worker.close()
    await asyncio.wait_for(left.wait(), WAIT)
    assert not socket.following
