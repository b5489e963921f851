"""A tiny WebSocket server that routes ``/ws/channels/{id}`` to a :class:`ChannelRelay`, as the engine does.

Lets the relay and the channel ends be tested on real sockets without the engine core.

Example:
    >>> async def demo() -> None:
    ...     async with relay_server(ChannelRelay()) as (base, relay):
    ...         refs = relay.create(None, owner=None)
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from iii.ws_fastpath import bound_frame_queue, enable_fast_receive, server_factory
from iii_engine.channels import CHANNEL_SOCKET_QUEUE, SOCKET_QUEUE_BYTES, ChannelRelay

_PATH = re.compile(r"/ws/channels/([^/?]+)")


def _parse(path: str) -> tuple[str | None, str | None, str | None]:
    parts = urlsplit(path)
    match = _PATH.fullmatch(parts.path)
    query = parse_qs(parts.query)
    key = query.get("key", [None])[0]
    direction = query.get("dir", [None])[0]
    return (match[1] if match else None), key, direction


@asynccontextmanager
async def relay_server(relay: ChannelRelay) -> AsyncIterator[tuple[str, ChannelRelay]]:
    """Serve ``relay`` on a free port; yields ``(ws_base_url, relay)``."""

    def process_request(conn: ServerConnection, request: Request) -> Response | None:
        channel_id, key, direction = _parse(request.path)
        if channel_id is None:
            return conn.respond(404, "Not found")
        refusal = relay.check(channel_id, key, direction)
        if refusal is not None:
            status, body = refusal
            return conn.respond(status, body)
        bound_frame_queue(conn, *CHANNEL_SOCKET_QUEUE)  # as the engine's listener does
        enable_fast_receive(conn, SOCKET_QUEUE_BYTES)
        return None

    async def handler(ws: ServerConnection) -> None:
        channel_id, key, direction = _parse(ws.request.path if ws.request else "")
        assert channel_id is not None and key is not None and direction is not None
        await relay.serve(ws, channel_id, key, direction)

    async with serve(
        handler, "127.0.0.1", 0, process_request=process_request, compression=None, max_size=None,
        ping_interval=None, create_connection=server_factory(),
    ) as server:
        port = server.sockets[0].getsockname()[1]
        try:
            yield f"ws://127.0.0.1:{port}", relay
        finally:
            await relay.close()


__all__ = ["relay_server"]
