"""iii_engine.accept_gate: a paused server accepts nothing (connections wait in the kernel), a resumed one takes
them, and where asyncio's internals are not what the gate relies on it says so and does nothing."""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvloop

from iii_engine.accept_gate import AcceptGate

pytestmark = pytest.mark.timeout(30)


async def _server(accepted: asyncio.Queue[int]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(1)
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0, backlog=8)


async def test_a_paused_server_accepts_nothing_until_resumed() -> None:
    accepted: asyncio.Queue[int] = asyncio.Queue()
    async with await _server(accepted) as server:
        gate = AcceptGate(server)
        assert gate.available, gate.unavailable_reason
        assert gate.pause() and gate.paused
        port = server.sockets[0].getsockname()[1]
        # the kernel completes the connect whether or not the server accepts it
        clients = [await asyncio.to_thread(socket.create_connection, ("127.0.0.1", port), 5) for _ in range(3)]
        try:
            with pytest.raises(TimeoutError):  # nothing accepted while paused (before the pause: the first at once)
                await asyncio.wait_for(accepted.get(), 0.5)
            assert server.is_serving()
            gate.resume()
            assert not gate.paused
            for _ in clients:
                await asyncio.wait_for(accepted.get(), 5)
            assert gate.pause() and gate.pause(), "a second pause is a no-op that says it is paused"
            gate.resume()
            gate.resume()  # a second resume does nothing
            late = await asyncio.to_thread(socket.create_connection, ("127.0.0.1", port), 5)
            clients.append(late)
            await asyncio.wait_for(accepted.get(), 5)
        finally:
            for client in clients:
                client.close()


def _accept_handler_back(server: asyncio.Server) -> None:
    """What asyncio does a second after an accept failed with EMFILE, paused or not: its accept handler is back."""
    server._serving = False  # type: ignore[attr-defined]
    server._start_serving()  # type: ignore[attr-defined]


async def test_a_pause_again_takes_away_the_handler_asyncio_put_back() -> None:
    accepted: asyncio.Queue[int] = asyncio.Queue()
    async with await _server(accepted) as server:
        gate = AcceptGate(server)
        assert gate.pause()
        _accept_handler_back(server)
        port = server.sockets[0].getsockname()[1]
        clients = [await asyncio.to_thread(socket.create_connection, ("127.0.0.1", port), 5)]
        try:
            await asyncio.wait_for(accepted.get(), 5)  # accepting again, though the gate still says paused
            assert gate.paused
            assert gate.pause()  # before: a no-op while it thought itself paused
            clients.append(await asyncio.to_thread(socket.create_connection, ("127.0.0.1", port), 5))
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(accepted.get(), 0.5)
            gate.resume()
            await asyncio.wait_for(accepted.get(), 5)
        finally:
            for client in clients:
                client.close()


async def test_resume_after_the_server_closed_does_nothing() -> None:
    accepted: asyncio.Queue[int] = asyncio.Queue()
    server = await _server(accepted)
    gate = AcceptGate(server)
    assert gate.pause()
    server.close()
    await server.wait_closed()
    gate.resume()  # the sockets are gone: nothing to add back, and no error
    assert not server.is_serving() and not gate.paused
    assert not gate.pause(), "a closed server cannot be paused"


async def test_a_server_not_serving_is_not_paused() -> None:
    accepted: asyncio.Queue[int] = asyncio.Queue()
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0, start_serving=False)
    async with server:
        gate = AcceptGate(server)
        assert gate.available and not gate.pause() and not gate.paused
    del accepted


@pytest.mark.parametrize("server", [object(), None], ids=["object", "none"])
def test_something_else_than_an_asyncio_server_is_unavailable(server: object) -> None:
    gate = AcceptGate(server)
    assert not gate.available
    assert gate.unavailable_reason is not None and "not asyncio's own" in gate.unavailable_reason
    assert not gate.pause() and not gate.paused
    gate.resume()


def test_uvloop_is_unavailable_and_left_accepting() -> None:
    async def main() -> tuple[AcceptGate, bool]:
        accepted: asyncio.Queue[int] = asyncio.Queue()
        async with await _server(accepted) as server:
            gate = AcceptGate(server)
            paused = gate.pause()
            port = server.sockets[0].getsockname()[1]
            client = await asyncio.to_thread(socket.create_connection, ("127.0.0.1", port), 5)
            try:
                await asyncio.wait_for(accepted.get(), 5)  # still accepting
            finally:
                client.close()
            return gate, paused

    gate, paused = uvloop.run(main())
    assert not gate.available and not paused
    assert gate.unavailable_reason is not None and "uvloop" in gate.unavailable_reason.lower()


def test_a_server_lacking_the_internals_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> AcceptGate:
        async with await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0) as server:
            monkeypatch.delattr(type(server), "_start_serving")
            return AcceptGate(server)

    gate = asyncio.run(main())
    assert not gate.available and gate.unavailable_reason is not None and "_start_serving" in gate.unavailable_reason
