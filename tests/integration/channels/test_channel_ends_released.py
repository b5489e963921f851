"""Channel ends whose user stopped for good are released, so the peer hears at once instead of waiting on
backpressure with no deadline: a reader a handler left unfinished (the handler raised, or returned), a source that
failed for good (its progress callback raised, a line past its limit, a line that is not JSON), and the ends a
client's handlers hold when the client shuts down."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any

import pytest

import iii_channels
from iii import III
from iii.channels import ChannelClosedError, ChannelReader, ChannelWriter, LimitExceededError, ReaderGoneError
from iii.errors import IIIError
from iii_engine.testing import local_channel

BLOCK = b"x" * 65536
MANY = 2000  # 128 MiB: far more than the engine and the sockets hold for a reader that stopped
# How late a writer's end of stream comes after its reader's handler returned: far past the release's Close
# (under 1 ms), well within the moment a reader with nothing unread waits for it (_RELEASE_GRACE_S).
WRITER_LATE_S = 0.05


def _run_on_to(work: Coroutine[Any, Any, bytes]) -> concurrent.futures.Future[bytes]:
    """``work`` as a task of the running loop (a handler's: the client's loop), its outcome for the test's loop."""
    outcome: concurrent.futures.Future[bytes] = concurrent.futures.Future()

    def settle(task: asyncio.Task[bytes]) -> None:
        error = task.exception()
        if error is None:
            outcome.set_result(task.result())
        else:
            outcome.set_exception(error)

    asyncio.ensure_future(work).add_done_callback(settle)
    return outcome


async def _write_until_told(writer: ChannelWriter) -> BaseException:
    """Write MANY blocks; the error that stopped it (the test fails if none did)."""
    try:
        async with iii_channels.sink(writer) as out:
            for _ in range(MANY):
                await out.write(BLOCK)
    except Exception as exc:
        return exc
    raise AssertionError("the writer wrote 128 MiB into a reader that had stopped")


@pytest.mark.parametrize("ending", ["raises", "returns"])
async def test_a_reader_the_handler_left_unfinished_is_released_as_it_ends(worker: III, ending: str) -> None:
    async def handler(data: dict[str, Any]) -> str:
        source = iii_channels.source(data["reader"])
        if ending == "raises":
            await source.readline(limit=10)  # LimitExceededError out of the handler
        await source.read(10)
        return "read 10 bytes"

    worker.register_function("test::stops_reading", handler)
    channel = await worker.create_channel_async()
    call = worker.trigger_async({"function_id": "test::stops_reading", "payload": {"reader": channel.reader},
                                 "timeout_ms": 10_000})
    writing = asyncio.ensure_future(_write_until_told(channel.writer))
    if ending == "raises":
        with pytest.raises(IIIError, match="exceeds the limit of 10 bytes"):
            await call
    else:
        assert await call == "read 10 bytes"
    # Before: still blocked 15 s later (until the engine's attach deadline, 300 s)
    error = await asyncio.wait_for(writing, 10)
    assert isinstance(error, ReaderGoneError), repr(error)


@pytest.mark.parametrize("trailer", [False, True])
async def test_a_reader_read_to_its_last_byte_is_not_released_before_the_writers_close(
        worker: III, trailer: bool) -> None:
    """A handler that reads exactly the bytes it was told of and returns before the writer's end of stream arrived
    left nothing unread: the writer's close (behind an integrity trailer, a text message, or not) is given a moment
    to arrive, and succeeds."""
    returning = threading.Event()
    size = len(BLOCK) * 4
    readers: list[ChannelReader] = []

    async def handler(data: dict[str, Any]) -> int:
        reader: ChannelReader = data["reader"]
        readers.append(reader)
        got = 0
        while got < data["size"]:
            chunk = await reader.read_chunk()
            assert chunk is not None, f"end of stream after {got} of {data['size']} bytes"
            got += len(chunk)
        returning.set()
        return got

    worker.register_function("test::reads_exactly", handler)
    channel = await worker.create_channel_async()
    call = asyncio.ensure_future(worker.trigger_async(
        {"function_id": "test::reads_exactly", "payload": {"reader": channel.reader, "size": size},
         "timeout_ms": 10_000}))
    async with iii_channels.sink(channel.writer, trailer=trailer) as out:
        await out.write(BLOCK * 4)
        assert await asyncio.to_thread(returning.wait, 10), "the handler never read its bytes"
        # The end of stream comes a little after the handler returned: the delay is this test's input (a writer
        # behind its reader), not a synchronisation. Before: ReaderGoneError out of this block's close, in every
        # run: the reader was closed as the handler returned although every byte had been read, and the engine
        # told the writer so before its close came.
        await asyncio.sleep(WRITER_LATE_S)
    assert await asyncio.wait_for(call, 10) == size
    assert readers[0].at_eof, "the reader was released, not finished: its end of stream (after the trailer) unseen"


async def test_a_reader_read_on_after_its_handler_returned_fails_rather_than_ending_short(worker: III) -> None:
    reading: list[concurrent.futures.Future[bytes]] = []

    async def handler(data: dict[str, Any]) -> None:
        reader: ChannelReader = data["reader"]
        await reader.read_chunk()
        reading.append(_run_on_to(reader.read_all()))  # not detached: released as the handler returns

    worker.register_function("test::reads_on", handler)
    channel = await worker.create_channel_async()
    call = worker.trigger_async({"function_id": "test::reads_on", "payload": {"reader": channel.reader}})
    writing = asyncio.ensure_future(_write_until_told(channel.writer))
    await call
    with pytest.raises(ChannelClosedError, match="the handler returned"):
        await asyncio.wait_for(asyncio.wrap_future(reading[0]), 10)
    assert isinstance(await asyncio.wait_for(writing, 10), ReaderGoneError)


async def test_a_detached_reader_outlives_its_handler(worker: III) -> None:
    reading: list[concurrent.futures.Future[bytes]] = []

    async def handler(data: dict[str, Any]) -> None:
        reader: ChannelReader = data["reader"]
        first = await reader.read_chunk()
        assert first is not None

        async def rest() -> bytes:
            async with reader:
                return first + await reader.read_all()

        reading.append(_run_on_to(rest()))
        reader.detach()  # read on by a task of its own after the handler returns

    worker.register_function("test::hands_on", handler)
    channel = await worker.create_channel_async()
    call = worker.trigger_async({"function_id": "test::hands_on", "payload": {"reader": channel.reader}})

    async def write() -> None:
        async with iii_channels.sink(channel.writer, trailer=False) as out:
            for _ in range(64):
                await out.write(BLOCK)

    await asyncio.wait_for(asyncio.gather(call, write()), 10)
    assert await asyncio.wait_for(asyncio.wrap_future(reading[0]), 10) == BLOCK * 64


async def test_a_source_whose_progress_callback_raised_releases_its_reader() -> None:
    def progress(done: int, total: int | None) -> None:
        raise RuntimeError("progress boom")

    async with local_channel() as ch:
        writing = asyncio.ensure_future(_write_until_told(ch.writer))
        with pytest.raises(RuntimeError, match="progress boom"):
            await iii_channels.source(ch.reader, progress=progress).read_all()
        # Before: the writer waited on backpressure (20 s in the attack, then the attach deadline)
        assert isinstance(await asyncio.wait_for(writing, 10), ReaderGoneError)


async def test_lines_past_their_limit_release_the_reader() -> None:
    async with local_channel() as ch:
        writing = asyncio.ensure_future(_write_until_told(ch.writer))  # no newline anywhere
        with pytest.raises(LimitExceededError):
            async for _ in iii_channels.source(ch.reader).lines(limit=1 << 20):
                pass
        assert isinstance(await asyncio.wait_for(writing, 10), ReaderGoneError)


async def test_json_records_that_meet_a_line_not_json_release_the_reader() -> None:
    async with local_channel() as ch:
        async def write() -> BaseException:
            try:
                async with iii_channels.sink(ch.writer) as out:
                    await out.write(b'{"n": 1}\nnot json\n')
                    for _ in range(MANY):
                        await out.write(b'{"n": 2}\n' * 7000)
            except Exception as exc:
                return exc
            raise AssertionError("the writer wrote past a reader that had stopped")

        writing = asyncio.ensure_future(write())
        with pytest.raises(ValueError, match="line 2 is not JSON"):
            async for _ in iii_channels.source(ch.reader).json_records():
                pass
        assert isinstance(await asyncio.wait_for(writing, 10), ReaderGoneError)


async def test_shutdown_stops_a_sync_handler_blocked_writing_into_its_payload_writer(engine_url: str) -> None:
    """A sync handler writing into a channel whose reader never connects: before, its thread stayed blocked after
    the client's shutdown, until the engine's attach deadline (300 s)."""
    handler_client, caller = III(engine_url), III(engine_url)
    await handler_client.connect_async()
    await caller.connect_async()
    wrote_once, stopped = threading.Event(), threading.Event()
    outcome: list[BaseException] = []

    def produce(data: dict[str, Any]) -> None:
        out: ChannelWriter = data["out"]
        try:
            for _ in range(MANY):
                out.stream.write(BLOCK)
                wrote_once.set()
        except BaseException as exc:
            outcome.append(exc)
        finally:
            stopped.set()

    try:
        handler_client.register_function("test::produce", produce)
        # the registration reached the engine (its answer comes after it): else the call, from another worker, could
        # be routed first and fail as function_not_found (a CI run waited for the write in vain so)
        await handler_client.list_functions_async()
        channel = await caller.create_channel_async()
        call = asyncio.ensure_future(caller.trigger_async(
            {"function_id": "test::produce", "payload": {"out": channel.writer}, "timeout_ms": 30_000}))
        assert await asyncio.to_thread(wrote_once.wait, 10)
        await handler_client.shutdown_async()
        assert await asyncio.to_thread(stopped.wait, 10), "the handler's write still blocked after the shutdown"
        assert len(outcome) == 1 and isinstance(outcome[0], ChannelClosedError), outcome
        assert "the client was shut down" in str(outcome[0])
        call.cancel()
    finally:
        await handler_client.shutdown_async()
        await caller.shutdown_async()


async def test_shutdown_stops_a_write_blocked_in_a_channel_the_client_created(engine_url: str) -> None:
    """A writer from ``create_channel`` whose reader never connects: before, a thread blocked writing into it was
    still alive 10 s after ``shutdown()`` (until the engine's attach deadline, 300 s)."""
    client = III(engine_url)
    await client.connect_async()
    wrote_once, stopped = threading.Event(), threading.Event()
    outcome: list[BaseException] = []
    try:
        channel = await client.create_channel_async()

        def produce() -> None:
            try:
                for _ in range(MANY):
                    channel.writer.stream.write(BLOCK)
                    wrote_once.set()
            except BaseException as exc:
                outcome.append(exc)
            finally:
                stopped.set()

        thread = threading.Thread(target=produce, daemon=True)
        thread.start()
        assert await asyncio.to_thread(wrote_once.wait, 10)
        await client.shutdown_async()
        assert await asyncio.to_thread(stopped.wait, 10), "the write still blocked after the shutdown"
        assert len(outcome) == 1 and isinstance(outcome[0], ChannelClosedError), outcome
        assert "the client was shut down" in str(outcome[0])
    finally:
        await client.shutdown_async()
