"""The relay's cheap per-request channel work (H-REG): ``ChannelRelay.reserve_pair`` makes the REST API's two
channels in one call, exactly as ``create`` + ``fill`` would; ids and keys come from whole-batch passes with no
Python work per channel; the idle event is touched only when the relay turns busy or idle.

Each test fails on the code before this change (no ``reserve_pair``; per-channel id formatting; an
``Event.clear()`` per create)."""

from __future__ import annotations

import asyncio
import base64
import collections
import gc
import sys
import uuid
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from iii.channels import build_channel_url
from iii_engine.channels import ChannelRefused, ChannelRelay, TooManyChannels, registry
from iii_engine.channels.limits import DEFAULT_BUFFER_SIZE

from .test_fill import OPTS


def _lines_run(function: Any, count: int) -> int:
    """Python lines executed by ``function()`` with a batch of ``count`` (the generator lines included)."""
    lines = 0

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal lines
        if event == "line":
            lines += 1
        return tracer

    saved = registry._ID_BATCH
    registry._ID_BATCH = count
    # A collection during the call would run other objects' finalizers (weakref.finalize callbacks, __del__) under
    # the tracer, counting their lines: the count then depended on the tests run before.
    collecting = gc.isenabled()
    gc.collect()
    gc.disable()
    sys.settrace(tracer)
    try:
        function()
    finally:
        sys.settrace(None)
        if collecting:
            gc.enable()
        registry._ID_BATCH = saved
        registry._ready_ids.clear()
    return lines


def test_making_a_batch_of_ids_runs_no_python_line_per_channel() -> None:
    small = _lines_run(registry._make_ids, 16)
    large = _lines_run(registry._make_ids, 1024)
    assert large == small, f"{small} lines for 16 channels' ids, {large} for 1024"


def test_batched_ids_are_version_4_uuids_and_keys_cover_the_whole_alphabet() -> None:
    registry._ready_ids.clear()
    triples = [registry._new_ids() for _ in range(4 * registry._ID_BATCH)]
    variants: collections.Counter[str] = collections.Counter()
    key_chars: collections.Counter[str] = collections.Counter()
    for channel_id, writer_key, reader_key in triples:
        parsed = uuid.UUID(channel_id)
        assert str(parsed) == channel_id and parsed.version == 4 and parsed.variant == uuid.RFC_4122
        variants[channel_id[19]] += 1
        for key in (writer_key, reader_key):
            assert len(key) == 32 and len(base64.urlsafe_b64decode(key)) == 24  # 192 bits, no padding
            key_chars.update(key)
    assert set(variants) == set("89ab")
    assert len(key_chars) == 64  # every URL-safe base64 character turns up: 6 random bits per character
    assert len({value for triple in triples for value in triple}) == 3 * len(triples)


@pytest.fixture
def counted_idle(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    calls: list[str] = []
    clear, set_ = asyncio.Event.clear, asyncio.Event.set

    def counting_clear(self: asyncio.Event) -> None:
        calls.append("clear")
        clear(self)

    def counting_set(self: asyncio.Event) -> None:
        calls.append("set")
        set_(self)

    monkeypatch.setattr(asyncio.Event, "clear", counting_clear)
    monkeypatch.setattr(asyncio.Event, "set", counting_set)
    yield calls


async def test_the_idle_event_changes_only_when_the_relay_turns_busy_or_idle(counted_idle: list[str]) -> None:
    relay = ChannelRelay()
    counted_idle.clear()
    ids = [relay.create(None, owner=None)["reader"]["channel_id"] for _ in range(50)]
    ids += [channel_id for channel_id, _, _ in relay.reserve_pair(b"", 64)]
    ids.append(relay.create(None, owner="w")["reader"]["channel_id"])
    assert counted_idle == ["clear"]
    waiting = asyncio.ensure_future(relay.wait_idle())
    for channel_id in ids[:-1]:
        relay.discard(channel_id)
    await asyncio.sleep(0)  # a turn for the waiter: it must still be waiting (one channel is left)
    assert not waiting.done() and counted_idle == ["clear"]
    relay.discard(ids[-1])
    await asyncio.wait_for(waiting, 1)
    assert counted_idle == ["clear", "set"]
    relay.create(None, owner=None)
    assert counted_idle == ["clear", "set", "clear"]
    await relay.close()
    assert counted_idle[-1] == "set"
    await asyncio.wait_for(relay.wait_idle(), 1)


async def test_a_pair_is_two_reserved_channels_the_first_filled() -> None:
    relay = ChannelRelay(attach_timeout_s=60.0)
    (body_id, body_writer, body_reader), (response_id, response_writer, response_reader) = relay.reserve_pair(
        bytearray(b"abcde"), 2)
    assert len(relay) == 2 and not relay._channels and set(relay._pending) == {body_id, response_id}
    assert relay._pending[body_id][0] == relay._pending[response_id][0]  # one deadline for both
    body, response = relay._reserved[body_id], relay._reserved[response_id]
    assert body.fill == b"abcde" and body.chunk_size == 2 and response.fill is None
    assert body.capacity == response.capacity == DEFAULT_BUFFER_SIZE
    assert len({body_writer, body_reader, response_writer, response_reader}) == 4
    assert relay.check(body_id, body_reader, "read") is None
    assert relay.check(response_id, response_writer, "write") is None
    assert relay.check(response_id, body_reader, "read") == (404, "Channel not found")
    with pytest.raises(ChannelRefused):  # the body's writer counts as attached
        relay.fill(body_id, body_writer, b"again", 2)
    reader = relay.open_local(body_id, body_reader, "read")
    assert [message async for message in reader] == [b"ab", b"cd", b"e"]
    relay.discard(body_id)
    relay.discard(response_id)
    assert len(relay) == 0 and not relay._pending


async def test_a_pair_reaches_socket_ends_as_created_channels_do(relay: tuple[str, ChannelRelay]) -> None:
    base, live = relay
    (body_id, _, body_reader), (response_id, response_writer, response_reader) = live.reserve_pair(b"", 64)
    async with websockets.connect(build_channel_url(base, body_id, body_reader, "read"), **OPTS) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000  # an empty body: end of stream
    reader = live.open_local(response_id, response_reader, "read")
    async with websockets.connect(build_channel_url(base, response_id, response_writer, "write"), **OPTS) as ws:
        await ws.send(b"answer")
    assert [message async for message in reader] == [b"answer"]
    await asyncio.wait_for(live.wait_idle(), 5)


async def test_a_pair_nobody_attaches_to_expires_at_its_deadline() -> None:
    relay = ChannelRelay(attach_timeout_s=0.05)
    (body_id, _, body_reader), _ = relay.reserve_pair(b"x", 64)
    await asyncio.wait_for(relay.wait_idle(), 5)  # the shared sweep removed both
    assert relay.check(body_id, body_reader, "read") == (404, "Channel not found") and not relay._pending


async def test_a_pair_that_does_not_fit_under_max_open_makes_neither() -> None:
    relay = ChannelRelay(max_open=3)
    relay.create(None, owner=None)
    relay.create(None, owner="w")
    with pytest.raises(TooManyChannels, match=r"channels\.max_open 3"):
        relay.reserve_pair(b"", 64)
    assert len(relay) == 2 and len(relay._reserved) == 1
    relay.discard(next(iter(relay._reserved)))
    (first, _, _), (second, _, _) = relay.reserve_pair(b"", 64)
    assert first in relay and second in relay and len(relay) == 3


async def test_a_pair_in_production_mode_has_one_key_per_channel() -> None:
    relay = ChannelRelay(production_mode=True)
    (_, body_writer, body_reader), (response_id, response_writer, response_reader) = relay.reserve_pair(b"", 64)
    assert body_writer == body_reader and response_writer == response_reader and body_writer != response_writer
    assert relay.check(response_id, response_writer, "read") is None


async def _read_all(relay: ChannelRelay, channel_id: str, key: str) -> tuple[list[bytes], int | None]:
    reader = relay.open_local(channel_id, key, "read")
    got: list[bytes] = []
    try:
        while True:
            message = await reader.recv()
            assert isinstance(message, bytes)
            got.append(message)
    except ConnectionClosed as exc:
        return got, exc.rcvd.code if exc.rcvd is not None else None


@pytest.mark.parametrize("production", [False, True], ids=["ours", "production"])
async def test_a_pair_body_is_the_stream_create_and_fill_give_quota_included(production: bool) -> None:
    relay = ChannelRelay(max_channel_bytes=10, max_message_size=4, production_mode=production)
    (body_id, _, body_reader), _ = relay.reserve_pair(b"x" * 1000, 100)
    held = relay._reserved[body_id].fill
    assert held == (b"x" * 1000 if production else b"x" * 12)  # under a quota: messages up to the one crossing it
    refs = relay.create(None, owner=None)
    relay.fill(refs["writer"]["channel_id"], refs["writer"]["access_key"], b"x" * 1000, 100)
    assert await _read_all(relay, body_id, body_reader) == await _read_all(
        relay, refs["reader"]["channel_id"], refs["reader"]["access_key"])
