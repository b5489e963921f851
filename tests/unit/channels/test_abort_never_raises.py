"""``abort()`` promises never to raise. Awaited on another loop once the writer's own loop is closed, it drops the
TCP connection from a worker thread; before, an error there (anything but the two it expected) came out of
``abort()``, and out of an ``async with`` in place of the body's own exception.
"""

from __future__ import annotations

import asyncio

import pytest

from iii import ws_fastpath
from iii.channels import ChannelAbortedError, ChannelClosedError
from iii_engine.channels import ChannelRelay

from .test_abort_from_another_loop import _raise_in_async_with
from .test_sync_calls import _ends, _in_thread


async def test_an_abort_whose_connection_drop_fails_does_not_raise(
        relay: tuple[str, ChannelRelay], monkeypatch: pytest.MonkeyPatch) -> None:
    writer, reader = _ends(*relay)
    read = asyncio.ensure_future(reader.read_all())
    await _in_thread(lambda: asyncio.run(writer.write(b"partial")))  # its loop is closed now
    end = writer._end
    assert end is not None
    transport = end.ws.transport

    def socket_unreachable(name: str, default: object = None) -> object:
        raise RuntimeError("the socket cannot be reached")

    monkeypatch.setattr(transport, "get_extra_info", socket_unreachable)
    await _raise_in_async_with(writer)  # the body's BodyFailed, not the drop's RuntimeError
    assert writer.closed
    with pytest.raises(ChannelClosedError, match="aborted"):
        await _in_thread(writer.close)
    monkeypatch.undo()
    ws_fastpath.shutdown(end.ws)  # what the abort could not do: the reader then sees the drop
    with pytest.raises(ChannelAbortedError):
        await asyncio.wait_for(read, 10)
