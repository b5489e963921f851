"""The reference SDK's ChannelWriter/ChannelReader (its own venv, in a subprocess) against ours, both ways."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator

import pytest

from iii.channels import ChannelReader, ChannelWriter
from iii_engine import Engine
from iii_engine.config import ChannelSettings
from tests.conftest import engine_test_config
from tests.services import reference_python

pytestmark = [
    pytest.mark.interop,
]

# Runs in the reference venv: "write N" sends N deterministic bytes; "read" prints the sha256 and size.
REF_SCRIPT = r"""
import asyncio, hashlib, json, sys
from iii.channels import ChannelReader, ChannelWriter
from iii.iii_types import StreamChannelRef

async def main():
    mode, base, ref = sys.argv[1], sys.argv[2], StreamChannelRef(**json.loads(sys.argv[3]))
    if mode == "write":
        size = int(sys.argv[4])
        w = ChannelWriter(base, ref)
        block = bytes(range(256)) * 1024
        sent = 0
        while sent < size:
            part = block[: min(len(block), size - sent)]
            await w.write(part)
            sent += len(part)
        await w.close_async()
    else:
        r = ChannelReader(base, ref)
        texts = []
        r.on_message(texts.append)
        data = await r.read_all()
        print(json.dumps({"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "texts": texts}))

asyncio.run(main())
"""


def expected(size: int) -> bytes:
    block = bytes(range(256)) * 1024
    return (block * (size // len(block) + 1))[:size]


@pytest.fixture(params=[False, True], ids=["ours", "production"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    config = engine_test_config(channels=ChannelSettings(production_mode=request.param))
    async with Engine(config=config) as running:
        yield running


async def run_ref(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        # -P: the working directory (the repository) must not shadow the reference's own ``iii`` package.
        reference_python(), "-P", "-c", REF_SCRIPT, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 25)
    assert proc.returncode == 0, err.decode()
    return out.decode()


@pytest.mark.parametrize("size", [1, 5_000_000])
async def test_reference_writer_to_our_reader(engine: Engine, size: int) -> None:
    refs = engine.channels.create(None, owner=None)
    reader = ChannelReader(engine.url, refs["reader"])
    _, got = await asyncio.gather(run_ref("write", engine.url, json.dumps(refs["writer"]), str(size)),
                                  reader.read_all())
    assert got == expected(size)


async def test_our_writer_to_reference_reader(engine: Engine) -> None:
    refs = engine.channels.create(None, owner=None)
    data = os.urandom(3_000_000)
    writer = ChannelWriter(engine.url, refs["writer"])

    async def send() -> None:
        await writer.send_message_async("hello")
        await writer.write(data)
        await writer.close_async()

    out, _ = await asyncio.gather(run_ref("read", engine.url, json.dumps(refs["reader"])), send())
    result = json.loads(out)
    assert result == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "texts": ["hello"]}


async def test_our_empty_writer_gives_reference_reader_eof(engine: Engine) -> None:
    refs = engine.channels.create(None, owner=None)
    writer = ChannelWriter(engine.url, refs["writer"])
    out, _ = await asyncio.gather(run_ref("read", engine.url, json.dumps(refs["reader"])), writer.close_async())
    assert json.loads(out)["size"] == 0


