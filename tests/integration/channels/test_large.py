"""1 GiB through the embedded engine, digests compared.

The streamed tests (about 7 s each on a 2-core machine) run with ``III_SLOW_TESTS=1`` or when ``CI`` is true; the
file test also needs 2 GiB of temporary disk, so it runs only with ``III_SLOW_TESTS=1``.

    III_SLOW_TESTS=1 .venv/bin/python -m pytest tests/integration/channels/test_large.py
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import iii_channels
from examples.channel_demo import MIB, generate
from iii.iii import III
from iii_engine import Engine
from iii_engine.config import ChannelSettings
from tests.conftest import engine_test_config

GIB = 1024 * MIB

SLOW = os.environ.get("III_SLOW_TESTS") == "1"
CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600), pytest.mark.our_engine("reads our relay's state")]
in_ci_or_slow = pytest.mark.skipif(not (SLOW or CI), reason="1 GiB transfers: set III_SLOW_TESTS=1 (or CI=true)")
slow_only = pytest.mark.skipif(not SLOW, reason="1 GiB file on disk (2 GiB of temp space): set III_SLOW_TESTS=1")


async def produce(size: int, digest: hashlib._Hash) -> AsyncIterator[bytes]:
    for chunk in generate(size):
        digest.update(chunk)
        yield chunk


async def _client(production: bool) -> tuple[Engine, III]:
    engine = Engine(config=engine_test_config(channels=ChannelSettings(production_mode=production)))
    await engine.__aenter__()
    worker = III(engine.url)
    await worker.connect_async()
    return engine, worker


@in_ci_or_slow
@pytest.mark.parametrize("production", [False, True], ids=["ours", "production"])
async def test_one_gib_streamed_with_trailer(production: bool) -> None:
    engine, worker = await _client(production)
    try:
        channel = await worker.create_channel_async()
        sent = hashlib.sha256()
        source = iii_channels.ChannelSource(channel.reader, require_trailer=True)
        received = hashlib.sha256()

        async def consume() -> int:
            async for chunk in source.chunks():
                received.update(chunk)
            return source.bytes_read

        count, got = await asyncio.gather(iii_channels.from_iterable(channel.writer, produce(GIB, sent)), consume())
        assert count == got == GIB
        assert source.verified
        assert received.hexdigest() == sent.hexdigest()
        await asyncio.wait_for(engine.channels.wait_idle(), 10)
    finally:
        await worker.shutdown_async()
        await engine.__aexit__(None, None, None)


@slow_only
async def test_one_gib_file(tmp_path: Path) -> None:
    engine, worker = await _client(False)
    try:
        src = tmp_path / "big.bin"
        with src.open("wb") as fh:
            fh.writelines(generate(GIB))
        inbox = tmp_path / "inbox"
        inbox.mkdir()
        channel = await worker.create_channel_async()
        sent, receipt = await asyncio.gather(
            iii_channels.send_file(channel.writer, src),
            iii_channels.receive_file(channel.reader, inbox, require_trailer=True))
        expected = hashlib.sha256()
        for chunk in generate(GIB):
            expected.update(chunk)
        assert sent == receipt.size == GIB
        assert receipt.verified and receipt.sha256 == expected.hexdigest()
        assert [p.name for p in inbox.iterdir()] == ["big.bin"]
        assert receipt.path.stat().st_size == GIB
    finally:
        await worker.shutdown_async()
        await engine.__aexit__(None, None, None)
