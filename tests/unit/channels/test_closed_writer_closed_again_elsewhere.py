"""A writer closed (or aborted) for good has nothing left on its event loop: ``close()``, ``stream.end()`` and
``await close_async()`` on another loop answer as on its own loop (a no-op for a writer closed; the abort's
:class:`ChannelClosedError` from ``close_async`` for one aborted). Before, ``close()`` and ``stream.end()`` there
raised :class:`ChannelLoopError` ("its socket went with that loop"), for a socket that was closed already. A
writer that still holds an open socket is refused there as before."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable

import pytest

from iii.channels import ChannelAbortedError, ChannelLoopError, ChannelWriter
from iii_engine.channels import ChannelRelay

from .test_sync_calls import _ends, _in_thread

pytestmark = pytest.mark.timeout(30)


async def _close_calls(writer: ChannelWriter) -> list[str]:
    """What ``close()``, ``stream.end()``, ``close_async()`` and ``stream.end(data)`` do now, in that order: "ok" or
    the error's class and message (the channel id left out)."""
    async def close_async() -> None:
        await writer.close_async()

    async def sync(call: Callable[[], object]) -> None:
        call()

    calls: list[Callable[[], Awaitable[None]]] = [
        lambda: sync(writer.close), lambda: sync(writer.stream.end), close_async,
        lambda: sync(lambda: writer.stream.end(b"late"))]
    outcomes = []
    for call in calls:
        try:
            await call()
        except Exception as exc:
            outcomes.append(f"{type(exc).__name__}: {str(exc).replace(writer.ref.channel_id, '<id>')}")
        else:
            outcomes.append("ok")
    return outcomes


CLOSED = ["ok", "ok", "ok", "ChannelClosedError: channel <id> writer is closed"]
ABORTED = ["ok", "ok", "ChannelClosedError: channel <id> aborted", "ChannelClosedError: channel <id> aborted"]


async def test_a_writer_closed_under_an_asyncio_run_closes_again_on_another_loop(
        relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = _ends(*relay)
    read = asyncio.ensure_future(reader.read_all())

    async def write_and_close() -> None:
        await writer.write(b"all of it")
        await writer.close_async()

    await _in_thread(lambda: asyncio.run(write_and_close()))
    assert await asyncio.wait_for(read, 10) == b"all of it"
    assert await _in_thread(lambda: asyncio.run(_close_calls(writer))) == CLOSED  # before: ChannelLoopError x2
    assert await _close_calls(writer) == CLOSED  # the test's loop: another one too


async def test_a_writer_closed_from_sync_code_closes_again_on_a_running_loop(relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = _ends(*relay)
    read = asyncio.ensure_future(reader.read_all())

    def write_and_end() -> None:
        writer.stream.write(b"all of it")
        writer.stream.end()

    await _in_thread(write_and_end)
    assert await asyncio.wait_for(read, 10) == b"all of it"
    assert writer._home.loop is not None and writer._home.loop.is_closed()  # its private loop, released
    assert await _close_calls(writer) == CLOSED


async def test_a_writer_closed_on_a_loop_still_running_closes_again_on_another(
        relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = _ends(*relay)
    read = asyncio.ensure_future(reader.read_all())
    home = asyncio.new_event_loop()
    thread = threading.Thread(target=home.run_forever, daemon=True)
    thread.start()
    try:
        async def write_and_close() -> None:
            await writer.write(b"all of it")
            await writer.close_async()

        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(write_and_close(), home))
        assert await asyncio.wait_for(read, 10) == b"all of it"
        assert await _close_calls(writer) == CLOSED
    finally:
        home.call_soon_threadsafe(home.stop)
        await asyncio.to_thread(thread.join, 10)
        home.close()


async def _abort_then(writer: ChannelWriter, close_here: bool) -> list[str]:
    await writer.write(b"part of it")
    await writer.abort("gave up")
    return await _close_calls(writer) if close_here else []


@pytest.mark.parametrize("elsewhere", [False, True], ids=["own loop", "another loop"])
async def test_an_aborted_writer_closes_on_another_loop_as_on_its_own(
        relay: tuple[str, ChannelRelay], caplog: pytest.LogCaptureFixture, elsewhere: bool) -> None:
    """Aborted, then closed: on its own loop ``close()`` logs the abort and ``close_async()`` raises it; on another
    loop the same."""
    writer, reader = _ends(*relay)
    read = asyncio.ensure_future(reader.read_all())
    with caplog.at_level(logging.WARNING, logger="iii.channels"):
        outcome = await _in_thread(lambda: asyncio.run(_abort_then(writer, not elsewhere)))
        if elsewhere:
            outcome = await _in_thread(lambda: asyncio.run(_close_calls(writer)))
    assert outcome == ABORTED  # before, on another loop: ChannelLoopError for close() and stream.end()
    assert [r.getMessage().replace(writer.ref.channel_id, "<id>") for r in caplog.records] == [
        "channel close failed: channel <id> aborted"]
    with pytest.raises(ChannelAbortedError, match="gave up"):
        await asyncio.wait_for(read, 10)


async def test_a_writer_still_holding_its_socket_is_refused_on_another_loop(relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = _ends(*relay)
    read = asyncio.ensure_future(reader.read_all())
    await _in_thread(lambda: writer.stream.write(b"all of it"))  # its socket open, on its private loop
    for call in (writer.close, writer.stream.end):
        with pytest.raises(ChannelLoopError, match="called from an event loop other than the one it belongs to"):
            call()
    with pytest.raises(ChannelLoopError):
        await writer.close_async()
    assert not writer.closed
    await _in_thread(writer.close)
    assert await asyncio.wait_for(read, 10) == b"all of it"
