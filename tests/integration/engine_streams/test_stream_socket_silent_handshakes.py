"""When every place of the stream socket is taken, the connection that has sent no upgrade request for longest
gives its place to a new one.

Before: places were held from the TCP accept until websockets' 10 s open_timeout, so max_clients + 4 connections
that said nothing (the 4 kept to be answered 503) kept every client out for those 10 s, and again with each new
round. Now such connections churn among themselves: a client that sends its request when connected gets in, a
client past served clients gets its 503 naming the setting, and connections that sent their request (upgraded, or
waiting for their auth call) are never closed for newer ones.
"""

from __future__ import annotations

import asyncio
import logging
import socket as pysocket
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from iii_engine import Engine, handshakes
from iii_engine.modules.stream import socket as stream_socket
from tests.not_upgraded import NOT_UPGRADED, sent_then_closed, websockets_lines
from tests.polling import until

from .helpers import SocketClient, Worker, engine_config, registered, stream_module
from .test_stream_socket_accept_bound import REFUSING, Silent, _close, _closed_at_once, _silent
from .test_stream_socket_stop_handshakes import _close as _drop
from .test_stream_socket_stop_handshakes import _silent as _partial

pytestmark = [pytest.mark.timeout(30),
              pytest.mark.our_engine("bounds the stream socket's connections with its own max_clients")]

MAX_CLIENTS = 3
TOO_MANY = f"too many stream clients connected (max_clients {MAX_CLIENTS})\n".encode()
PROMPT_S = 2.0  # far below websockets' 10 s open_timeout


async def _joined(engine: Engine, sub_id: str, path: str = "/") -> SocketClient:
    client = await SocketClient.connect(engine, path)
    await client.join(sub_id, "s", "g")
    assert (await client.recv())["event"]["type"] == "sync"
    return client


async def test_a_client_gets_in_past_connections_that_say_nothing() -> None:
    async with Engine(config=engine_config(max_clients=MAX_CLIENTS)) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        # every place under max_clients and every one kept to be answered 503: accepted before the client (the
        # listen queue is first in, first out)
        silent = await _silent(socket.port, MAX_CLIENTS + REFUSING)
        try:
            async with asyncio.timeout(PROMPT_S):  # before: closed as accepted (an invalid HTTP response)
                client = await _joined(engine, "in")
            # the oldest gave way, one at a time: the 4 past max_clients, then one for the client
            assert (socket._accepted, socket._refusing, socket.evicted_connections, socket.refused_connections) == (
                MAX_CLIENTS, 0, REFUSING + 1, 0)
            assert await _closed_at_once(silent, REFUSING + 1) == [b""] * (REFUSING + 1)
            assert [reader.at_eof() for reader, _ in silent] == [True] * (REFUSING + 1) + [False] * 2
            await client.close()
        finally:
            await _close(silent)


async def test_a_client_gets_in_past_connections_that_never_finish_their_request() -> None:
    async with Engine(config=engine_config(max_clients=MAX_CLIENTS)) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        partial = await _partial(socket.port, MAX_CLIENTS, b"GET / HTTP/1.1\r\nHost: x\r\n")
        try:
            async with asyncio.timeout(PROMPT_S):  # before: answered 503 (a place kept for that)
                client = await _joined(engine, "in")
            assert (socket._accepted, socket.evicted_connections) == (MAX_CLIENTS, 1)
            await client.close()
        finally:
            _drop(partial)  # one closed with its bytes unread was reset


async def test_served_clients_stay_and_a_client_past_them_is_answered_503_naming_the_setting() -> None:
    async with Engine(config=engine_config(max_clients=MAX_CLIENTS)) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        clients = [await _joined(engine, f"c{n}") for n in range(MAX_CLIENTS)]
        silent = await _silent(socket.port, REFUSING + 6)
        try:
            # before: closed as accepted, the places kept to answer 503 being held by connections saying nothing
            with pytest.raises(InvalidStatus) as refused:
                await asyncio.wait_for(SocketClient.connect(engine), PROMPT_S)
            assert (refused.value.response.status_code, refused.value.response.body) == (503, TOO_MANY)
            # only connections that sent nothing gave way; the served clients still get their events
            assert (socket._accepted, socket.evicted_connections, socket.refused_connections) == (MAX_CLIENTS, 7, 0)
            worker = await Worker.connect(engine.url)
            await worker.result("stream::set", {"stream_name": "s", "group_id": "g", "item_id": "i", "data": 1})
            assert [(await client.recv())["event"] for client in clients] == [{"type": "create", "data": 1}] * 3
            await worker.close()
        finally:
            await _close(silent)
            for client in clients:
                await client.close()


async def test_an_upgrade_waiting_for_its_auth_call_keeps_its_place() -> None:
    async with Engine(config=engine_config(max_clients=1, auth_function="auth")) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        worker = await Worker.connect(engine.url)
        answer = asyncio.Event()

        async def auth(_: Any) -> Any:
            await answer.wait()
            return {"context": None}

        await worker.register("auth", auth)
        await registered(engine, "auth")
        held = asyncio.ensure_future(_joined(engine, "held"))
        await until(lambda: len(worker.calls.get("auth", [])) == 1)
        silent = await _silent(socket.port, REFUSING + 3)
        try:
            # they give way to one another within the places kept to answer 503, never taking the upgrade's
            await until(lambda: socket.evicted_connections == 3, within=5)
            answer.set()
            client = await asyncio.wait_for(held, PROMPT_S)
            assert (socket._accepted, socket._refusing, socket.refused_connections) == (1, REFUSING, 0)
            await client.close()
        finally:
            held.cancel()
            await _close(silent)
            await worker.close()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every warning of the stream module (websockets' own log of its connections included)."""
    return [r.getMessage() for r in caplog.records if r.name.startswith("iii_engine.modules.stream")
            and r.levelno >= logging.WARNING]


async def test_a_burst_of_connections_that_say_nothing_makes_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "iii_engine.modules.stream")
    burst = 40
    engine = Engine(config=engine_config(max_clients=MAX_CLIENTS))
    await engine.start()
    silent: list[Silent] = []
    try:
        socket = stream_module(engine).socket
        assert socket is not None
        silent += await _silent(socket.port, burst)
        # before: 33 closed as accepted, the 4 kept to answer 503 held (this wait failed)
        await _closed_at_once(silent, burst - MAX_CLIENTS)
        warnings = _warnings(caplog)
        assert len(warnings) == 1, warnings[:3]
        assert "1 that sent no upgrade request" in warnings[0] and f"(max_clients {MAX_CLIENTS})" in warnings[0]
        caplog.clear()
    finally:
        await _close(silent)
        await engine.stop()  # the burst's count is logged by then
    warnings = _warnings(caplog)
    evicted = burst - MAX_CLIENTS
    assert len(warnings) == 1 and f"{evicted - 1} that sent no upgrade request" in warnings[0], warnings
    assert f"{evicted} and 0 in all" in warnings[0], warnings


async def test_a_request_come_whole_keeps_its_place_before_its_handshake_looks_at_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # websockets parses the request (connection.request) a loop turn or more before its handshake calls
    # process_request; a newcomer in between took the place of the oldest "silent" connection, which had spoken.
    # The gate holds the handshake in that gap for as long as the test needs.
    reached, gate = asyncio.Event(), asyncio.Event()
    looked_at = stream_socket.StreamSocketServer._process_request

    async def held_back(self: stream_socket.StreamSocketServer, connection: Any, request: Any) -> Any:
        reached.set()
        await gate.wait()
        return await looked_at(self, connection, request)

    monkeypatch.setattr(stream_socket.StreamSocketServer, "_process_request", held_back)
    async with Engine(config=engine_config(max_clients=1)) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        held = asyncio.ensure_future(_joined(engine, "held"))
        await asyncio.wait_for(reached.wait(), PROMPT_S)
        silent = await _silent(socket.port, REFUSING + 1)
        try:
            # the fifth silent one found every place taken: the oldest silent one kept to answer 503 gave way,
            # not the client whose request had come (before: the client, reset as it waited for its 101)
            await until(lambda: socket.evicted_connections == 1, within=5)
            gate.set()
            client = await asyncio.wait_for(held, PROMPT_S)
            assert (socket._accepted, socket._refusing, socket.evicted_connections) == (1, REFUSING, 1)
            await client.close()
        finally:
            held.cancel()
            await _close(silent)


async def test_connections_closed_for_newer_ones_are_not_a_line_each_in_websockets_log(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "iii_engine.modules.stream.socket.websockets")
    burst = 40
    async with Engine(config=engine_config(max_clients=MAX_CLIENTS)) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        silent = await _silent(socket.port, burst)
        try:
            await _closed_at_once(silent, burst - MAX_CLIENTS)
        finally:
            await _close(silent)
        await until(lambda: socket._accepted == socket._refusing == 0, within=5)
        await until(lambda: socket._not_upgraded.count == MAX_CLIENTS, within=5)
        closed = [r for r in caplog.records if r.getMessage() == "connection closed"]
        # the 37 evicted, each newer one taking the place of the oldest, are counted in the socket's own warning
        # (before: "connection closed" 40 times, an INFO line per connection however many came); the 3 that held
        # their place to the end and never upgraded are counted with the socket's other connections that never did
        assert socket.evicted_connections == burst - MAX_CLIENTS
        assert closed == [], len(closed)


_UPGRADE = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


async def test_a_request_waiting_unread_in_an_accept_batch_keeps_its_place() -> None:
    # asyncio accepts up to 100 connections in one loop turn before it reads any: the oldest of such a batch, its
    # whole request waiting in the kernel, was closed as silent (reset, its bytes unread) for the later ones.
    # Blocking connects while the loop waits on them make the batch: the kernel completes every handshake.
    async with Engine(config=engine_config(max_clients=1)) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        client = pysocket.create_connection(("127.0.0.1", socket.port), timeout=5)
        client.sendall(_UPGRADE)
        flood = [pysocket.create_connection(("127.0.0.1", socket.port), timeout=5) for _ in range(REFUSING + 3)]
        try:
            answer = await asyncio.wait_for(asyncio.to_thread(client.recv, 200), PROMPT_S)
            assert answer.startswith(b"HTTP/1.1 101"), answer  # before: b"" (reset)
            assert (socket._accepted, socket._refusing, socket.evicted_connections) == (1, REFUSING, 3)
        finally:
            client.close()
            for sock in flood:
                sock.close()


async def test_connections_that_never_upgrade_are_counted_not_logged_each(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "iii_engine.modules.stream.socket")
    rounds = 5
    async with Engine(config=engine_config(max_clients=MAX_CLIENTS)) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        for _ in range(rounds):
            for data in NOT_UPGRADED:
                await sent_then_closed(socket.port, data)
        client = await _joined(engine, "upgraded")  # websockets' own lines stay for it
        await client.close()
        expected = rounds * len(NOT_UPGRADED)
        await until(lambda: socket._not_upgraded.count >= expected, within=5)
        assert socket._not_upgraded.count == expected
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("iii_engine.modules.stream.socket")]
    # before: "connection closed" for each of the 30 (and a refusal line for the 20 answered 400, 404 or 505)
    assert websockets_lines(messages) == ["connection open", "connection closed"], websockets_lines(messages)
    # before: "process_request failed", an ERROR with a traceback, and a 500 for each "//[x/" (urlsplit raised)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records
    counted = [m for m in messages if "to the stream socket closed without a WebSocket upgrade" in m]
    assert len(counted) == 2, counted  # the first at once, the rest at the end of the interval (the stop here)
    assert counted[1].startswith(f"{expected - 1} connection(s)") and f"{expected} in all" in counted[1], counted


def test_the_filter_never_raises_and_lets_such_a_line_through() -> None:
    """A logging filter that raises breaks the logging call inside websockets: a connection object that is not what
    it expects, or a count made with no running loop (its rate limit arms a timer), leave the line as written."""

    class Odd:
        @property
        def counted_out(self) -> bool:
            raise KeyError("odd")

    class Counted:
        response = None
        remote_address = ("127.0.0.1", 1)
        not_upgraded = handshakes.NotUpgraded(logging.getLogger("test"), "a test port", 10.0)

    quiet = handshakes.QuietHandshakes()
    for conn in (Odd(), Counted(), Counted()):  # the second count arms the interval's timer: no loop here
        record = logging.makeLogRecord({"msg": "connection closed", "levelno": logging.INFO, "websocket": conn})
        quiet.filter(record)
    assert Counted.not_upgraded.count == 2
