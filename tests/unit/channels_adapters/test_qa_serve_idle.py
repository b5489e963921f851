"""``iii-channel serve``: a sender that stalls is failed after the idle timeout, so with ``--out -`` the next one
is not kept waiting: it gets stdout if the stalled one wrote nothing there, and is failed at once otherwise.

Before: the first transfer held the stdout lock for as long as its sender stayed silent, and every later sender
waited behind it for good. Then: the next sender was served after a failed one's bytes, with nothing between them
(the attack: a sender killed after 8.9 MB, the next transfer's bytes appended, serve still up); now a transfer that
fails after some of its bytes reached stdout fails every later one, and serve stops (``_serve``).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from iii.channels import ChannelWriter
from iii_channels import ChannelAbortedError, ChannelIdleError, ChannelSink, ReaderGoneError
from iii_channels.cli import _stdout, _StdoutSpoiled, _store
from iii_engine.channels import ChannelRelay
from tests.polling import until
from tests.unit.channels_adapters.test_channels_attack_adapters import ends
from tests.unit.channels_adapters.test_channels_attack_adapters import relay as _relay

pytestmark = pytest.mark.timeout(30)
relay = _relay  # the fixture, shared


async def _send(writer: ChannelWriter, data: bytes, stall: asyncio.Event | None = None) -> None:
    async with ChannelSink(writer) as sink:
        await sink.write(data)
        if stall is not None:
            await sink.drain()
            await stall.wait()


async def _send_then_fail(writer: ChannelWriter, data: bytes, fail: asyncio.Event) -> None:
    """Send ``data``, then, once ``fail`` is set, abort (as a sender killed mid-transfer ends, on our engine)."""
    sink = ChannelSink(writer)
    await sink.write(data)
    await sink.drain()
    await fail.wait()
    await sink.abort("killed")


@pytest.mark.parametrize("how", ["stalled", "aborted"])
async def test_a_transfer_that_fails_after_writing_to_stdout_fails_the_next_and_leaves_stdout_as_it_was(
        relay: tuple[str, ChannelRelay], capfd: pytest.CaptureFixture[bytes], how: str) -> None:
    """The next transfer, waiting for stdout, is failed (its sender, through ``serve``, hears why) instead of
    served after the failed transfer's bytes, and stdout holds those bytes only."""
    (w1, r1), (w2, r2) = ends(*relay), ends(*relay)
    stall, fail = asyncio.Event(), asyncio.Event()
    first_sender = asyncio.ensure_future(
        _send(w1, b"a" * 1000, stall) if how == "stalled" else _send_then_fail(w1, b"a" * 1000, fail))
    first = asyncio.ensure_future(_store(r1, {"name": "a", "size": None}, "-", None, idle_timeout=0.5))
    # The first transfer has stdout (its bytes are there) before the second asks for it.
    await _until_stdout(capfd, b"a" * 1000)
    second_sender = asyncio.ensure_future(_send(w2, b"b" * 1000))
    second = asyncio.ensure_future(_store(r2, {"name": "b", "size": None}, "-", None, idle_timeout=0.5))
    try:
        fail.set()
        expected = ChannelIdleError if how == "stalled" else ChannelAbortedError
        with pytest.raises(expected):
            await asyncio.wait_for(first, 5)
        with pytest.raises(_StdoutSpoiled, match=r"^the transfer of 'a' failed after 1000 of its bytes were "
                                                 r"written to stdout \(.+\); serve stops"):
            await asyncio.wait_for(second, 5)
        if how == "stalled":  # the stalled sender hears that nobody reads any more, instead of waiting for good
            with pytest.raises(ReaderGoneError):
                await asyncio.wait_for(w1.write(b"late"), 5)
    finally:
        stall.set()
        await asyncio.gather(first_sender, first, second, second_sender, return_exceptions=True)
    assert capfd.readouterr().out == ""  # nothing after the 1000 a's read above


async def test_a_stalled_holder_of_stdout_that_wrote_nothing_is_failed_and_the_next_sender_served(
        relay: tuple[str, ChannelRelay], capfd: pytest.CaptureFixture[bytes]) -> None:
    (w1, r1), (w2, r2) = ends(*relay), ends(*relay)
    stall = asyncio.Event()
    first_sender = asyncio.ensure_future(_send(w1, b"", stall))
    first = asyncio.ensure_future(_store(r1, {"name": "a", "size": None}, "-", None, idle_timeout=0.5))
    await until(lambda: _stdout().lock.locked())  # the first holds stdout, and sends nothing
    second_sender = asyncio.ensure_future(_send(w2, b"b" * 1000))
    second = asyncio.ensure_future(_store(r2, {"name": "b", "size": None}, "-", None, idle_timeout=0.5))
    try:
        receipt = await asyncio.wait_for(second, 10)
        with pytest.raises(ChannelIdleError, match=r"nothing from the writer for 0\.5 s"):
            await asyncio.wait_for(first, 5)
        await asyncio.wait_for(second_sender, 5)
    finally:
        stall.set()
        await asyncio.gather(first_sender, first, second, second_sender, return_exceptions=True)
    assert receipt == {"path": "-", "bytes": 1000, "sha256": receipt["sha256"], "verified": True}
    assert capfd.readouterr().out == "b" * 1000


async def _until_stdout(capfd: pytest.CaptureFixture[bytes], expected: bytes) -> None:
    seen: list[str] = []

    def arrived() -> bool:
        seen.append(capfd.readouterr().out)
        return len("".join(seen)) >= len(expected)

    await until(arrived)
    assert "".join(seen).encode() == expected


async def test_a_stalled_sender_to_a_directory_is_failed_and_leaves_nothing(
        relay: tuple[str, ChannelRelay], tmp_path: Path) -> None:
    writer, reader = ends(*relay)
    stall = asyncio.Event()
    sending = asyncio.ensure_future(_send(writer, b"a" * 1000, stall))
    data: dict[str, Any] = {"name": "a.bin", "size": None}
    try:
        with pytest.raises(ChannelIdleError, match="after 1000 bytes"):
            await asyncio.wait_for(_store(reader, data, str(tmp_path), None, idle_timeout=0.5), 10)
    finally:
        stall.set()
        await asyncio.gather(sending, return_exceptions=True)
    assert os.listdir(tmp_path) == []


def test_the_idle_timeout_option() -> None:
    from iii_channels.cli import DEFAULT_IDLE_TIMEOUT_S, build_parser

    def parse(*extra: str) -> Any:
        return build_parser().parse_args(["serve", "--function", "f", "--out", "-", *extra]).idle_timeout

    assert parse() == DEFAULT_IDLE_TIMEOUT_S == 300.0
    assert parse("--idle-timeout", "2.5") == 2.5
    for bad in ("0", "-1", "x", "86401"):
        with pytest.raises(SystemExit):
            parse("--idle-timeout", bad)
