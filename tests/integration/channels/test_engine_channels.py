"""Channels through the real embedded engine and our SDK client, in our mode and in production mode."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import iii_channels
from iii.channels import ChannelReader, ChannelWriter
from iii.iii import III
from iii_engine import Engine
from iii_engine.config import ChannelSettings
from tests.conftest import engine_test_config

pytestmark = pytest.mark.our_engine("switches our relay between our mode and production_mode and reads its state")


@pytest.fixture(params=[False, True], ids=["ours", "production"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Engine, III]]:
    config = engine_test_config(channels=ChannelSettings(production_mode=request.param))
    async with Engine(config=config) as engine:
        worker = III(engine.url)
        await worker.connect_async()
        try:
            yield engine, worker
        finally:
            await worker.shutdown_async()


async def test_large_transfer_digest(client: tuple[Engine, III]) -> None:
    engine, worker = client
    channel = await worker.create_channel_async()
    data = os.urandom(64 << 20)

    async def send() -> None:
        await channel.writer.write(data)
        await channel.writer.close_async()

    async def receive() -> str:
        digest = hashlib.sha256()
        async for chunk in channel.reader:
            digest.update(chunk)
        return digest.hexdigest()

    _, got = await asyncio.gather(send(), receive())
    assert got == hashlib.sha256(data).hexdigest()
    await asyncio.wait_for(engine.channels.wait_idle(), 5)


async def test_reader_passed_to_a_function(client: tuple[Engine, III], tmp_path: Path) -> None:
    _, worker = client
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(3_000_000))

    async def store(data: dict[str, Any]) -> dict[str, Any]:
        reader = data["reader"]
        assert isinstance(reader, ChannelReader)
        receipt = await iii_channels.receive_file(reader, tmp_path / "stored.bin", require_trailer=True)
        return {"sha256": receipt.sha256, "verified": receipt.verified}

    worker.register_function("files::store", store)
    channel = await worker.create_channel_async()
    # The channel object itself goes in the payload and travels as its ref (S11).
    call = worker.trigger_async({"function_id": "files::store", "payload": {"reader": channel.reader}})
    _, result = await asyncio.gather(iii_channels.send_file(channel.writer, src), call)
    assert result == {"sha256": hashlib.sha256(src.read_bytes()).hexdigest(), "verified": True}


async def test_wrong_direction_refused(client: tuple[Engine, III]) -> None:
    engine, worker = client
    channel = await worker.create_channel_async()
    wrong = ChannelReader(engine.url, channel.writer_ref.model_dump() | {"direction": "read"})
    if engine.config.channels.production_mode:
        return  # production does not check directions (T20)
    with pytest.raises(iii_channels.ChannelNotFoundError):
        await wrong.read_all()


async def test_byte_quota_from_create(client: tuple[Engine, III]) -> None:
    engine, worker = client
    refs = await worker.trigger_async(
        {"function_id": "engine::channels::create", "payload": {"buffer_size": 8, "max_bytes": 1_000_000}})
    writer = ChannelWriter(engine.url, refs["writer"])
    reader = ChannelReader(engine.url, refs["reader"])

    async def send() -> None:
        await writer.write(bytes(1_500_000))
        await writer.close_async()

    results = await asyncio.gather(send(), reader.read_all(), return_exceptions=True)
    if engine.config.channels.production_mode:
        assert list(results) == [None, bytes(1_500_000)]  # production has no quota: the option is ignored
        return
    assert isinstance(results[0], iii_channels.ChannelError)
    assert isinstance(results[1], iii_channels.ChannelAbortedError)
    assert "quota of 1000000" in str(results[1])


async def test_negative_quota_rejected(client: tuple[Engine, III]) -> None:
    _, worker = client
    with pytest.raises(Exception, match="max_bytes must be >= 0"):
        await worker.trigger_async({"function_id": "engine::channels::create", "payload": {"max_bytes": -1}})
