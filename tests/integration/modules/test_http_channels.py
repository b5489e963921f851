"""The REST API module's channel ends, in-process (``relay.open_local``) and over loopback sockets (fallback)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from iii.wire import dumps
from iii_engine import Engine, EngineConfig
from iii_engine.channels import LocalChannelEnd
from iii_engine.modules.http.channels import ChannelAborted, ResponseChannel, write_body

pytestmark = pytest.mark.our_engine("reads our channel relay's state")


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0)) as running:
        yield running


def open_local(engine: Engine, ref: dict[str, str]) -> LocalChannelEnd:
    return engine.channels.open_local(ref["channel_id"], ref["access_key"], ref["direction"])


def relay_for(engine: Engine, mode: str) -> Any:
    return engine.channels if mode == "local" else None


@pytest.mark.parametrize("mode", ["local", "socket"])
async def test_body_and_response_round_trip(engine: Engine, mode: str) -> None:
    relay = relay_for(engine, mode)
    body = bytes(range(256)) * 1000  # 256 000 bytes: several 64 KiB chunks
    refs = engine.channels.create(4, owner=None)
    upload = asyncio.ensure_future(write_body(engine.url, refs["writer"], body, relay))
    reader = ResponseChannel(engine.url, refs["reader"], relay)
    first = await reader.first_chunk()
    assert first is not None
    rest = [chunk async for chunk in reader.chunks()]
    await upload
    assert first + b"".join(rest) == body
    assert len(first) == 64 * 1024
    await reader.aclose()
    await asyncio.wait_for(engine.channels.wait_idle(), 5)


@pytest.mark.parametrize("mode", ["local", "socket"])
async def test_control_frames_then_eof_without_body(engine: Engine, mode: str) -> None:
    relay = relay_for(engine, mode)
    refs = engine.channels.create(None, owner=None)
    writer = open_local(engine, refs["writer"])
    await writer.send(dumps({"type": "set_status", "status_code": 201}))
    await writer.send(dumps({"type": "set_headers", "headers": {"x-a": "1"}}))
    await writer.close()
    reader = ResponseChannel(engine.url, refs["reader"], relay)
    assert await reader.first_chunk() is None
    assert (reader.status, reader.headers) == (201, {"x-a": "1"})
    await reader.aclose()


@pytest.mark.parametrize("mode", ["local", "socket"])
async def test_abort_and_refusal_become_channel_aborted(engine: Engine, mode: str) -> None:
    relay = relay_for(engine, mode)
    refs = engine.channels.create(None, owner=None)
    writer = open_local(engine, refs["writer"])
    await writer.send(b"part")
    reader = ResponseChannel(engine.url, refs["reader"], relay)
    assert await reader.first_chunk() == b"part"
    await writer.close(4000, "handler crashed")  # after the read: an abort drops what is still queued
    with pytest.raises(ChannelAborted, match="4001"):
        async for _ in reader.chunks():
            pass
    wrong = dict(refs["reader"], access_key="nope")
    with pytest.raises(ChannelAborted, match="cannot open channel"):
        await ResponseChannel(engine.url, wrong, relay).first_chunk()


@pytest.mark.parametrize("mode", ["local", "socket"])
async def test_cancelled_upload_aborts_the_reader(engine: Engine, mode: str) -> None:
    relay = relay_for(engine, mode)
    refs = engine.channels.create(1, owner=None)
    sent = asyncio.Event()

    async def client_body() -> AsyncIterator[bytes]:
        yield b"first"
        sent.set()
        await asyncio.Event().wait()  # an HTTP client that never sends the rest
        yield b""

    upload = asyncio.ensure_future(write_body(engine.url, refs["writer"], client_body(), relay))
    reader = open_local(engine, refs["reader"])
    assert await reader.recv() == b"first"
    await sent.wait()
    upload.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upload
    with pytest.raises(Exception) as info:
        await reader.recv()
    rcvd = getattr(info.value, "rcvd", None)
    assert rcvd is not None and rcvd.code == 4001
