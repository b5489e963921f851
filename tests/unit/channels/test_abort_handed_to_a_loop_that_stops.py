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
from typing import Any

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


def _collected_quietly(records: list[logging.LogRecord]) -> None:
    """Collect what a closed loop left: no "never awaited" warning, no asyncio error about a task."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert [str(warning.message) for warning in caught if "never awaited" in str(warning.message)] == []
    messages = [record.getMessage() for record in records if record.name == "asyncio"]
    assert [message for message in messages if "Task" in message] == []


async def _run_again_and_close(home: _Home, writer: ChannelWriter, records: list[logging.LogRecord]) -> None:
    """The loop's owner runs it once more, then closes it: nothing of the abort is left on it, and the writer's
    socket, shut down from another thread, is closed by then (not left to the collector)."""
    await asyncio.to_thread(home.loop.run_until_complete, asyncio.sleep(0.1))
    assert [task for task in asyncio.all_tasks(home.loop) if not task.done()] == []
    assert writer._end is not None
    assert writer._end.ws.transport.get_extra_info("socket").fileno() == -1
    home.loop.close()
    _collected_quietly(records)


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
    assert [task for task in asyncio.all_tasks(home.loop) if not task.done()] == []  # never started
    await _run_again_and_close(home, writer, caplog.records)


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
    await _run_again_and_close(home, writer, caplog.records)


async def _forever() -> None:
    await asyncio.Event().wait()


@pytest.mark.parametrize("stepped", [False, True], ids=["never-stepped", "started"])
def test_work_given_up_on_a_loop_closed_without_running_it_again_goes_quietly(
        stepped: bool, caplog: pytest.LogCaptureFixture) -> None:
    """The loop's owner stopped it right after it made the work's task (``stepped``: after its first step), then
    closed it without running it again."""
    loop = asyncio.new_event_loop()
    handed = channels_module._Handover(loop, _forever)
    if stepped:
        loop.call_soon(lambda: loop.call_soon(loop.stop))  # after the task's first step
    else:
        loop.call_soon(loop.stop)  # in the same round as the start: the task never takes a step
    loop.run_forever()
    assert handed.task is not None and not handed.task.done()
    assert handed._started is stepped
    handed.give_up()
    loop.close()
    del handed
    _collected_quietly(caplog.records)


def test_the_task_is_made_without_the_handover_lock_held() -> None:
    # An eager task factory (Python 3.12+) runs a task's first step inside create_task; the hand-over made its task
    # while holding the lock that first step takes, so the loop thread waited on itself for good.
    from iii.channels import _Handover

    loop = asyncio.new_event_loop()
    held_at_creation: list[bool] = []
    handovers: list[_Handover[int]] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any) -> asyncio.Task[Any]:
        if getattr(coro, "__qualname__", "") == "_Handover._run":
            held_at_creation.append(handovers[0]._lock.locked())
        return asyncio.Task(coro, loop=loop)

    async def answer() -> int:
        return 42

    loop.set_task_factory(factory)
    try:
        handovers.append(_Handover(loop, answer))
        loop.run_until_complete(asyncio.sleep(0))
        loop.run_until_complete(asyncio.wrap_future(handovers[0].future, loop=loop))
        assert handovers[0].future.result() == 42
        assert held_at_creation == [False]
    finally:
        loop.close()
