"""ChannelSource: verify=False skips trailers entirely, readuntil's limit means what asyncio's does, and
idle_timeout bounds the wait for a silent writer.

Before: ``verify=False`` still raised IntegrityError on a malformed trailer (and on data after one);
``readline(limit)`` refused a line of exactly ``limit`` bytes and its ``\\n``, which asyncio's StreamReader
accepts; nothing bounded the wait for a writer that stalled.
"""

from __future__ import annotations

import asyncio
import gc
import json
import weakref
from collections.abc import AsyncIterator

import pytest

import iii_channels
from iii.channels import ChannelWriter
from iii_channels import ChannelIdleError, ChannelSink, ChannelSource, IntegrityError, LimitExceededError
from iii_channels.integrity import TRAILER_KEY
from iii_engine.channels import ChannelRelay
from tests.unit.channels_adapters.test_channels_attack_adapters import ends
from tests.unit.channels_adapters.test_channels_attack_adapters import relay as _relay

pytestmark = pytest.mark.timeout(30)
relay = _relay  # the fixture, shared

MALFORMED = '{"' + TRAILER_KEY + '": 1, "bytes": 5'  # cut short


async def _send(writer: ChannelWriter, *messages: bytes | str) -> None:
    for message in messages:
        if isinstance(message, str):
            await writer.send_message_async(message)
        else:
            await writer.write(message)
    await writer.close_async()


# ------------------------------------------------------------------------------------------------ verify=False


@pytest.mark.parametrize("after", [
    pytest.param([MALFORMED], id="malformed"),
    pytest.param([MALFORMED, b"more"], id="data-after-a-malformed-one"),
    pytest.param(['{"' + TRAILER_KEY + '": 1, "bytes": 99, "sha256": "00"}', b"more"], id="data-after-a-wrong-one"),
    pytest.param(['{"' + TRAILER_KEY + '": 1, "bytes": 99, "sha256": "00"}'] * 2, id="two"),
])
async def test_verify_false_reads_past_any_trailer(relay: tuple[str, ChannelRelay], after: list[bytes | str]) -> None:
    """(before: IntegrityError on the malformed, second, or data-after trailers.)"""
    writer, reader = ends(*relay)
    source = ChannelSource(reader, verify=False)
    _, data = await asyncio.wait_for(asyncio.gather(_send(writer, b"hello", *after), source.read_all()), 10)
    assert data == b"hello" + b"".join(m for m in after if isinstance(m, bytes))
    assert not source.verified and source.sha256 is None


async def test_verify_false_never_hands_a_trailer_on_as_text(relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*relay)
    seen: list[str] = []
    source = ChannelSource(reader, verify=False, on_text=seen.append)
    _, items = await asyncio.wait_for(asyncio.gather(
        _send(writer, "meta", b"abc", MALFORMED), _collect(source.items())), 10)
    assert items == ["meta", b"abc"] and seen == []


async def _collect(items: AsyncIterator[bytes | str]) -> list[bytes | str]:
    return [item async for item in items]


@pytest.mark.parametrize("options", [{}, {"verify": False, "require_trailer": True}], ids=["verify", "required"])
async def test_a_malformed_trailer_is_still_refused_when_checking(relay: tuple[str, ChannelRelay],
                                                                  options: dict[str, bool]) -> None:
    writer, reader = ends(*relay)
    results = await asyncio.wait_for(asyncio.gather(
        _send(writer, b"hello", MALFORMED), ChannelSource(reader, **options).read_all(), return_exceptions=True), 10)
    assert isinstance(results[1], IntegrityError) and "malformed integrity trailer" in str(results[1])


# ------------------------------------------------------------------------------------- readuntil's limit: asyncio's


async def _asyncio_accepts(chunks: list[bytes], separator: bytes, limit: int) -> bool:
    stream = asyncio.StreamReader(limit=limit)
    for chunk in chunks:
        stream.feed_data(chunk)
    stream.feed_eof()
    try:
        await stream.readuntil(separator)
    except asyncio.LimitOverrunError:
        return False
    return True


async def _ours_accepts(relay: tuple[str, ChannelRelay], chunks: list[bytes], separator: bytes, limit: int) -> bool:
    writer, reader = ends(*relay)
    sending = asyncio.ensure_future(_send(writer, *chunks))
    try:
        line = await asyncio.wait_for(ChannelSource(reader).readuntil(separator, limit), 10)
    except LimitExceededError:
        return False
    finally:
        await reader.close_async()
        await asyncio.gather(sending, return_exceptions=True)
    assert line.endswith(separator)
    return True


@pytest.mark.parametrize("separator", [b"\n", b"\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("split", ["one-chunk", "split-separator", "separator-alone"])
@pytest.mark.parametrize("extra", [-1, 0, 1])
async def test_the_limit_bounds_the_bytes_before_the_separator_as_in_asyncio(
        relay: tuple[str, ChannelRelay], separator: bytes, split: str, extra: int) -> None:
    """A line of limit + extra bytes, its separator in the same chunk, split across two, or in a chunk of its
    own: accepted exactly when asyncio's StreamReader(limit) accepts it (before: extra=0 was refused)."""
    limit = 1000
    line = b"x" * (limit + extra) + separator
    cut = {"one-chunk": len(line), "split-separator": len(line) - 1, "separator-alone": len(line) - len(separator)}
    chunks = [part for part in (line[:cut[split]], line[cut[split]:], b"tail\n") if part]
    expected = await _asyncio_accepts(chunks, separator, limit)
    assert expected is (extra <= 0)
    assert await _ours_accepts(relay, chunks, separator, limit) is expected


async def test_readline_of_exactly_the_limit(relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*relay)
    source = ChannelSource(reader)
    sending = asyncio.ensure_future(_send(writer, b"a" * 10 + b"\n" + b"b" * 11 + b"\n"))
    assert await asyncio.wait_for(source.readline(10), 10) == b"a" * 10 + b"\n"
    with pytest.raises(LimitExceededError, match="line exceeds the limit of 10 bytes"):
        await asyncio.wait_for(source.readline(10), 10)
    await reader.close_async()
    await asyncio.gather(sending, return_exceptions=True)


async def test_a_negative_limit_is_refused_by_name(relay: tuple[str, ChannelRelay]) -> None:
    _, reader = ends(*relay)
    with pytest.raises(ValueError, match="limit must be 0 or more, got -1"):
        await ChannelSource(reader).readline(-1)


# ----------------------------------------------------------------------------------------------------- idle_timeout


async def test_a_silent_writer_fails_the_read_after_idle_timeout(relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*relay)
    stalled = asyncio.Event()

    async def stall() -> None:
        async with ChannelSink(writer) as sink:
            await sink.write(b"x" * 10)
            await stalled.wait()

    sending = asyncio.ensure_future(stall())
    source = ChannelSource(reader, idle_timeout=0.3)
    try:
        with pytest.raises(ChannelIdleError) as failed:
            await asyncio.wait_for(source.read_all(), 10)
    finally:
        stalled.set()
        await reader.close_async()
        await asyncio.gather(sending, return_exceptions=True)
    assert isinstance(failed.value, TimeoutError) and isinstance(failed.value, iii_channels.ChannelError)
    assert str(failed.value) == (f"channel {reader.ref.channel_id}: nothing from the writer for 0.3 s "
                                 "(after 10 bytes); stopped waiting")


async def test_idle_timeout_lets_a_writer_that_keeps_sending_finish(relay: tuple[str, ChannelRelay]) -> None:
    """The bound is per message, not on the whole transfer: 2 MiB in 64 KiB messages pass a 1 s idle bound."""
    writer, reader = ends(*relay)
    source = ChannelSource(reader, idle_timeout=1.0, require_trailer=True)

    async def send() -> None:
        async with ChannelSink(writer) as sink:
            for _ in range(32):
                await sink.write(b"y" * 65_536)

    _, data = await asyncio.wait_for(asyncio.gather(send(), source.read_all()), 20)
    assert data == b"y" * (32 * 65_536) and source.verified


async def test_idle_timeout_reading_again_after_it_and_cancelling(relay: tuple[str, ChannelRelay]) -> None:
    """After ChannelIdleError a read may be tried again (the bound applies afresh: here the writer goes on); a
    cancellation from outside stays a cancellation, not an idle error; a finished source is not kept alive by
    its timer."""
    writer, reader = ends(*relay)
    go_on, finish = asyncio.Event(), asyncio.Event()

    async def pause_then_finish() -> None:
        async with ChannelSink(writer) as sink:
            await sink.write(b"1")
            await sink.drain()
            await go_on.wait()
            await sink.write(b"2")
            await sink.drain()
            await finish.wait()

    sending = asyncio.ensure_future(pause_then_finish())
    source = ChannelSource(reader, idle_timeout=0.3)
    try:
        assert await asyncio.wait_for(source.read(1), 10) == b"1"
        with pytest.raises(ChannelIdleError):
            await asyncio.wait_for(source.read(1), 10)
        go_on.set()
        assert await asyncio.wait_for(source.read(1), 10) == b"2"
        reading = asyncio.ensure_future(source.read(1))
        await asyncio.wait({reading}, timeout=0.05)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        finish.set()
        assert await asyncio.wait_for(source.read(), 10) == b""
    finally:
        go_on.set()
        finish.set()
        await asyncio.gather(sending, return_exceptions=True)
    alive = weakref.ref(source)
    del source
    gc.collect()
    assert alive() is None, "the idle timer kept the finished source alive"


@pytest.mark.parametrize("bad, error", [
    (0, ValueError), (-1.0, ValueError), (float("nan"), ValueError), (float("inf"), ValueError),
    (True, TypeError), ("5", TypeError),
])
async def test_a_bad_idle_timeout_is_refused_by_name(relay: tuple[str, ChannelRelay], bad: object,
                                                     error: type[Exception]) -> None:
    _, reader = ends(*relay)
    with pytest.raises(error, match="idle_timeout must be "):
        ChannelSource(reader, idle_timeout=bad)  # type: ignore[arg-type]


def test_json_trailer_key_is_the_one_checked() -> None:
    """Guard for MALFORMED above: it starts as a trailer, so it takes the trailer path."""
    assert iii_channels.integrity.is_trailer(MALFORMED)
    with pytest.raises(ValueError):
        json.loads(MALFORMED)
