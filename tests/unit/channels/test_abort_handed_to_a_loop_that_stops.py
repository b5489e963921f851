"""An abort from another loop handed to the writer's loop running in another thread, which then stops (its owner's
``loop.stop()``) before it ran the abort.

Before: an abort given up (its connection dropped past the bound while that loop was held) still started once the
loop ran again, and a stop right then left its task pending for good: "Task was destroyed but it is pending ...
abort_there" when the loop was closed. A loop stopped before it ran the abort kept the reader waiting for the whole
bound (14.75 s) before the connection was dropped.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
import warnings
from collections.abc import Iterator

import pytest

from iii import channels as channels_module
from iii.channels import ChannelAbortedError, ChannelReader, ChannelWriter
from iii_engine.channels import ChannelRelay

from .test_sync_calls import _ends

pytestmark = pytest.mark.timeout(30)


class _Home:
    """A loop running in a thread of its own (the writer's), which a test can hold and stop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.release = threading.Event()

    def hold(self) -> None:
        """Hold the loop (a sync handler on it) until :attr:`release` is set."""
        entered = threading.Event()

        def block() -> None:
            entered.set()
            self.release.wait(20)

        self.loop.call_soon_threadsafe(block)
        assert entered.wait(10)

    def stop_as_released(self) -> None:
        """Release the loop with its stop queued behind whatever was handed to it while held: the loop runs those
        callbacks once, then stops, before any task they made takes a step."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.release.set()
        self.thread.join(10)
        assert not self.loop.is_running()


@pytest.fixture
def home() -> Iterator[_Home]:
    held = _Home()
    yield held
    held.release.set()
    if held.loop.is_running():
        held.loop.call_soon_threadsafe(held.loop.stop)
        held.thread.join(5)
    if not held.loop.is_closed():
        held.loop.close()


async def _written_on(home: _Home, writer: ChannelWriter) -> None:
    await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(writer.write(b"the first half"), home.loop))


def _close_quietly(loop: asyncio.AbstractEventLoop, records: list[logging.LogRecord]) -> None:
    """Close ``loop`` without running it again and collect what was left on it: nothing may complain."""
    loop.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert [str(warning.message) for warning in caught if "never awaited" in str(warning.message)] == []
    assert [record.getMessage() for record in records if record.name == "asyncio"] == []


async def _reader_gets_the_abort(reader: ChannelReader, read: asyncio.Future[bytes], within: float) -> float:
    started = time.monotonic()
    with pytest.raises(ChannelAbortedError):
        await asyncio.wait_for(read, within)
    await reader.close_async()
    return time.monotonic() - started


async def test_an_abort_given_up_never_starts_on_the_loop_later(
        relay: tuple[str, ChannelRelay], home: _Home, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(channels_module, "_ABORT_ELSEWHERE_S", 0.5)
    writer, reader = _ends(*relay)
    read = asyncio.ensure_future(reader.read_all())
    await _written_on(home, writer)
    home.hold()
    await writer.abort("given up elsewhere")
    await _reader_gets_the_abort(reader, read, 10)  # the bound passed: the connection was dropped from elsewhere
    home.stop_as_released()
    assert [task for task in asyncio.all_tasks(home.loop) if not task.done()] == []
    _close_quietly(home.loop, caplog.records)


async def test_a_loop_stopped_before_it_ran_the_abort_has_the_reader_told_promptly(
        relay: tuple[str, ChannelRelay], home: _Home, caplog: pytest.LogCaptureFixture) -> None:
    writer, reader = _ends(*relay)
    read = asyncio.ensure_future(reader.read_all())
    await _written_on(home, writer)
    home.hold()
    await writer.abort("given up elsewhere")  # handed over; returns while the loop is held
    home.stop_as_released()  # the abort's task made, never run
    took = await _reader_gets_the_abort(reader, read, 10)
    assert took < 3.0, f"the reader waited {took:.2f} s for the abort"
    _close_quietly(home.loop, caplog.records)  # by its owner: what was left on it goes quietly
