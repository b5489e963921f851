"""The bound port of a websockets server, recorded once for the engine's listener and the stream socket alike:
``RuntimeError`` naming the owner before a start, the port the system picked for port 0 from the start on, and
still that port once the server closed (its socket list is empty by then)."""

from __future__ import annotations

import pytest
from websockets.asyncio.server import ServerConnection, serve

from iii_engine.server import BoundPort

pytestmark = pytest.mark.timeout(10)


async def _unused(connection: ServerConnection) -> None:
    await connection.close()


async def test_the_port_is_named_from_the_start_and_kept_after_the_close() -> None:
    bound = BoundPort("the test server")
    with pytest.raises(RuntimeError, match=r"^the test server is not started$"):
        _ = bound.port
    server = await serve(_unused, "127.0.0.1", 0)
    picked = server.sockets[0].getsockname()[1]
    bound.take(server)
    assert bound.port == picked != 0
    server.close()
    await server.wait_closed()
    assert not server.sockets
    assert bound.port == picked
