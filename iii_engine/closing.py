"""Closing a peer's WebSocket, and a module's store, within a deadline.

A peer that stopped reading never takes the close frame (it waits behind the bytes it did not read, and the
library's close first waits for its buffer to drain), and one that never answers the close holds the connection
for ``websockets``' own 10 s: the close gets a deadline, after which the connection is reset and its buffers go
with it.

Example (a connection already closed is reset at once, which does nothing)::

    await close_within(ws, 1013, "too slow")

A store whose connection went silent (a Redis or PostgreSQL server that stopped answering, a half-open connection)
may never finish its close: :func:`close_store` bounds it, so the module's stop, and the engine's, ends anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from websockets.asyncio.server import ServerConnection

from iii import ws_fastpath
from iii_streams.deadlines import finish_within

__all__ = ["CLOSE_TIMEOUT_S", "STORE_CLOSE_TIMEOUT_S", "close_store", "close_within"]

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 2.0
"""How long a close of a peer's socket may take before the connection is reset."""

STORE_CLOSE_TIMEOUT_S = 10.0
"""How long a module's stop waits for its store to close before it lets the close go. A store's close that hung on a
silent server held the engine's stop for good. Above the stores' own bounds on their parts (a Redis watch
connection's reader: 2 s after its cancel and 2 s after a second one, then its leftover connection's close: 2 s),
so those end first and name what hung."""


async def close_within(ws: ServerConnection, code: int, reason: str,
                       timeout: float = CLOSE_TIMEOUT_S) -> None:  # noqa: ASYNC109 (a deadline for the close alone)
    """Close ``ws`` with ``code`` and ``reason``, resetting it if the close handshake is not over within
    ``timeout`` seconds (or the transport is already broken): either way the peer is dropped."""
    ws.close_timeout = timeout
    try:
        await asyncio.wait_for(ws.close(code, reason), timeout)
    except Exception:
        ws_fastpath.reset(ws)


async def close_store(close: Awaitable[Any], what: str) -> None:
    """Await a store's ``close`` for at most :data:`STORE_CLOSE_TIMEOUT_S`; past it the close is cancelled and let
    go with a warning naming ``what``. A close that fails in time raises its error.

    Example (a memory store closes at once)::

        await close_store(MemoryStream().aclose(), "the stream module's store")
    """
    await finish_within(close, STORE_CLOSE_TIMEOUT_S, what, log)
