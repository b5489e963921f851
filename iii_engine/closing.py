"""Closing a peer's WebSocket within a deadline.

A peer that stopped reading never takes the close frame (it waits behind the bytes it did not read, and the
library's close first waits for its buffer to drain), and one that never answers the close holds the connection
for ``websockets``' own 10 s: the close gets a deadline, after which the connection is reset and its buffers go
with it.

Example (a connection already closed is reset at once, which does nothing)::

    await close_within(ws, 1013, "too slow")
"""

from __future__ import annotations

import asyncio

from websockets.asyncio.server import ServerConnection

from iii import ws_fastpath

__all__ = ["CLOSE_TIMEOUT_S", "close_within"]

CLOSE_TIMEOUT_S = 2.0
"""How long a close of a peer's socket may take before the connection is reset."""


async def close_within(ws: ServerConnection, code: int, reason: str,
                       timeout: float = CLOSE_TIMEOUT_S) -> None:  # noqa: ASYNC109 (a deadline for the close alone)
    """Close ``ws`` with ``code`` and ``reason``, resetting it if the close handshake is not over within
    ``timeout`` seconds (or the transport is already broken): either way the peer is dropped."""
    ws.close_timeout = timeout
    try:
        await asyncio.wait_for(ws.close(code, reason), timeout)
    except Exception:
        ws_fastpath.reset(ws)
