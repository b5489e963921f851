"""An abort awaited on another loop while a sync write, in a thread of its own, runs the writer's private loop to
connect to an engine slow to answer the upgrade: the abort is handed to that loop and joins the connect; once
connected, the write fails (aborted) and its end releases the private loop, which cancels the abort part-way
(its close handshake). That cancelled hand-over escaped the abort's thread as concurrent.futures.CancelledError
(a thread traceback; before the abort moved to a thread, out of ``abort()`` itself). It is treated like an abort
its loop did not carry out in time: the connection is dropped, nothing raises.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest

from iii.channels import ChannelClosedError, ChannelWriter

from .raw_ws_server import RawPeer, raw_ws_server
from .test_sync_calls import _in_thread


@pytest.fixture
async def slow_upgrade() -> AsyncIterator[tuple[str, RawPeer]]:
    """An engine that answers the upgrade after 1 s, then never replies to a Close."""
    async with raw_ws_server(delay=1.0) as served:
        yield served


@pytest.mark.timeout(30)
async def test_an_abort_cancelled_by_the_sync_writes_release_drops_the_connection_without_raising(
        slow_upgrade: tuple[str, RawPeer], monkeypatch: pytest.MonkeyPatch) -> None:
    base, served = slow_upgrade
    escaped: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: escaped.append(args.exc_value))
    writer = ChannelWriter(base, {"channel_id": "c-slow", "access_key": "k", "direction": "write"})
    producing = asyncio.ensure_future(_in_thread(lambda: writer.stream.write(b"x" * 10)))
    await asyncio.wait_for(served.requested.wait(), 10)  # the sync write runs the private loop, connecting

    await asyncio.wait_for(writer.abort("stopped from elsewhere"), 5)  # never raises

    with pytest.raises(ChannelClosedError, match="aborted"):
        await producing
    aborting = [t for t in threading.enumerate() if t.name == "iii-channel-writer-abort-c-slow"]
    for thread in aborting:
        await asyncio.to_thread(thread.join, 20)
    assert not any(thread.is_alive() for thread in aborting)
    assert escaped == []
    await asyncio.wait_for(served.ended.wait(), 5)  # the connection went: the engine takes it as an abort
    assert writer._home.loop is not None and writer._home.loop.is_closed()
