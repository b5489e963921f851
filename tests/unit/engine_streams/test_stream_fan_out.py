"""Stream-socket fan-out: an event is encoded once and matched only against the sockets watching its group; the
group index follows joins, leaves, re-joins elsewhere and disconnects."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from iii import wire
from iii_engine.modules.base import EngineError
from iii_engine.modules.stream import socket as stream_socket
from iii_engine.modules.stream.settings import SocketSettings
from iii_engine.modules.stream.socket import StreamSocketServer, Subscription, _Client
from iii_streams import MemoryStream
from iii_streams.events import make_event


class FakeWs:
    remote_address = ("127.0.0.1", 1)


def _server() -> StreamSocketServer:
    # _fan_out and the index use none of the collaborators
    return StreamSocketServer(*cast(Any, (None,) * 6))


def _client(server: StreamSocketServer) -> _Client:
    client = _Client(cast(Any, FakeWs()), None, 8)
    server._clients.add(client)
    return client


def _frames(client: _Client) -> list[bytes]:
    frames = []
    while not client.queue.empty():
        frames.append(client.queue.get_nowait())
    return frames


async def test_one_encode_and_only_the_group_s_watchers_are_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    server = _server()
    watchers = [_client(server) for _ in range(3)]
    others = [_client(server) for _ in range(50)]
    for client in watchers:
        server._subscribe(client, "s", Subscription("S", "G", None))
    for n, client in enumerate(others):
        server._subscribe(client, "s", Subscription("S", f"other{n}", None))
    asked: list[_Client] = []
    original = _Client.wants

    def counting(self: _Client, event: Any) -> bool:
        asked.append(self)
        return original(self, event)

    encoded: list[Any] = []
    dumps = wire.dumps

    def counting_dumps(value: Any) -> str:
        encoded.append(value)
        return dumps(value)

    monkeypatch.setattr(_Client, "wants", counting)
    monkeypatch.setattr(stream_socket, "dumps", counting_dumps)
    server._fan_out(make_event("S", "G", "1", "create", {"n": 1}))
    assert sorted(map(id, asked)) == sorted(map(id, watchers))  # the 50 other sockets cost nothing
    assert len(encoded) == 1
    frames = [_frames(client) for client in watchers]
    assert all(len(f) == 1 and f[0] is frames[0][0] for f in frames)  # one shared UTF-8 payload
    assert all(not _frames(client) for client in others)


async def test_the_group_index_follows_leave_rejoin_and_disconnect() -> None:
    server = _server()
    client = _client(server)
    server._subscribe(client, "a", Subscription("S", "G", None))
    server._subscribe(client, "b", Subscription("S", "G", "7"))
    server._subscribe(client, "a", Subscription("S", "H", None))  # "a" moves to H; "b" keeps G watched
    assert server._watchers == {("S", "G"): {client}, ("S", "H"): {client}}
    server._subscribe(client, "b", None)
    assert server._watchers == {("S", "H"): {client}}
    server._fan_out(make_event("S", "G", "7", "update", {}))
    assert not _frames(client)  # left: nothing arrives from G any more
    server._fan_out(make_event("S", "H", "1", "update", {}))
    assert len(_frames(client)) == 1
    server._subscribe(client, "gone", None)  # leaving an unknown subscription changes nothing
    assert server._watchers == {("S", "H"): {client}}


async def test_a_disconnected_socket_leaves_the_index(monkeypatch: pytest.MonkeyPatch) -> None:
    async def unsent(ws: Any, text: bool, frame: bytes) -> None:
        pass  # the join runs in a task of its own: the writer gets a turn at the error event before the close

    monkeypatch.setattr(stream_socket, "send_server_frame", unsent)
    server = _server()

    class Joins:
        async def authorize(self, payload: Any) -> bool:
            return True

        def run_detached(self, payload: Any) -> None:
            pass

    watched: list[Any] = []

    class Functions:
        async def read_group_text(self, stream: str, group: str) -> str:
            watched.append({key: set(clients) for key, clients in server._watchers.items()})
            raise EngineError("no_sync", "not needed here")  # no sync frame: nothing for the fake socket to write

    class Ws(FakeWs):
        def __init__(self) -> None:
            self.inbox: asyncio.Queue[str | None] = asyncio.Queue()

        def __aiter__(self) -> Ws:
            return self

        async def __anext__(self) -> str:
            raw = await self.inbox.get()
            if raw is None:
                raise StopAsyncIteration
            return raw

        async def wait_closed(self) -> None:
            await asyncio.Event().wait()  # the join ends first; the close comes through the inbox

    server.join_triggers = server.leave_triggers = cast(Any, Joins())
    server.functions = cast(Any, Functions())
    server.settings = SocketSettings(client_queue_size=8)
    server.store = MemoryStream()  # the join opens the store's event feed
    ws = Ws()
    serving = asyncio.create_task(server._serve(cast(Any, ws)))
    ws.inbox.put_nowait('{"type":"join","data":{"subscriptionId":"s","streamName":"S","groupId":"G"}}')
    ws.inbox.put_nowait(None)  # then the socket closes
    await serving
    assert [list(w) for w in watched] == [[("S", "G")]]  # joined (before the sync read) ...
    assert server._watchers == {} and server._clients == set()  # ... and gone with the socket
    assert not server.following  # the last client took the store's event feed with it
