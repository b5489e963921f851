"""A writer used from sync code (so on a private loop of its own) and dropped without a close: once collected, its
private loop and socket go with it, with no "unclosed event loop" or socket ResourceWarning (one of its own, for
the connection it dropped, as asyncio's transports warn), and the reader sees
the connection drop (an abort), not an end of stream. Before, both stayed open until the loop itself was
collected, with those warnings, and the reader waited for the attach deadline or the process's exit.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
import weakref

import pytest

from iii.channels import ChannelAbortedError
from iii_engine.channels import ChannelRelay

from .test_sync_calls import _ends, _in_thread


async def _write_from_sync_code_and_drop(
        relay: tuple[str, ChannelRelay]) -> tuple[asyncio.Future[bytes], weakref.ref[object], weakref.ref[object]]:
    writer, reader = _ends(*relay)
    read = asyncio.ensure_future(reader.read_all())
    await _in_thread(lambda: writer.stream.write(b"half of it"))
    loop = writer._home.loop
    assert loop is not None and not loop.is_closed()
    return read, weakref.ref(writer), weakref.ref(loop)


def _collect_what_earlier_tests_left() -> None:
    """Garbage of earlier tests is not this test's to account for: a collection can free cycles that only the next
    one finds (a transport and its protocol, freed with the object holding them)."""
    for _ in range(5):
        if not gc.collect():
            return


def _closed(loop: weakref.ref[object]) -> bool:
    private = loop()
    return private is None or (isinstance(private, asyncio.AbstractEventLoop) and private.is_closed())


def _resource_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


def _only_ours(warned: list[str]) -> None:
    """One ResourceWarning, the writer's own for the connection it dropped (as asyncio's transports warn of
    theirs); none of asyncio's for an unclosed event loop or socket."""
    assert len(warned) == 1 and warned[0].startswith("unclosed channel writer "), warned


async def test_a_writer_collected_unclosed_releases_its_loop_and_socket(relay: tuple[str, ChannelRelay]) -> None:
    _collect_what_earlier_tests_left()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read, writer, loop = await _write_from_sync_code_and_drop(relay)
        await _in_thread(gc.collect)  # where no loop runs: released in that call
        assert writer() is None and _closed(loop)
        with pytest.raises(ChannelAbortedError, match="writer"):
            await asyncio.wait_for(read, 10)
        await _in_thread(gc.collect)
    _only_ours(_resource_warnings(caught))


async def test_a_writer_collected_on_a_running_loop_is_released_in_a_thread(relay: tuple[str, ChannelRelay]) -> None:
    _collect_what_earlier_tests_left()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read, writer, loop = await _write_from_sync_code_and_drop(relay)
        before = set(threading.enumerate())
        gc.collect()  # here, on the test's running loop, where the private loop cannot run
        assert writer() is None
        for thread in set(threading.enumerate()) - before:
            if thread.name == "iii-channel-writer-release":
                await asyncio.to_thread(thread.join, 10)
                assert not thread.is_alive()
        with pytest.raises(ChannelAbortedError, match="writer"):
            await asyncio.wait_for(read, 10)
        assert _closed(loop)
    _only_ours(_resource_warnings(caught))
