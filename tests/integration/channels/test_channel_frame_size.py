"""The frame-size extension (docs/protocol.md#frame-size-extension): our engine invites a writer to send binary
frames larger than 64 KiB with a response header; our writer takes the invitation, and keeps 64 KiB frames when a
server sends none (the production engine) or a malformed one. Readers (ours, the reference's) get every byte."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator

import pytest
import websockets
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from iii.channel_end import FRAME_SIZE_HEADER
from iii.channels import ChannelReader, ChannelWriter
from iii_engine import Engine
from iii_engine.config import ChannelSettings
from iii_engine.server import FRAME_INVITATION
from tests.conftest import engine_test_config
from tests.services import reference_python

pytestmark = pytest.mark.our_engine("the frame-size header is our engine's extension")

KIB = 1024
DATA = os.urandom(3 * 1024 * KIB + 12345)  # several large frames and a short last one


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    async with Engine(config=engine_test_config()) as running:
        yield running


async def _upgrade_headers(url: str) -> list[str]:
    async with websockets.connect(url, compression=None) as ws:
        assert ws.response is not None
        return ws.response.headers.get_all(FRAME_SIZE_HEADER)


async def test_writer_upgrade_carries_the_invitation_and_reader_upgrade_none(engine: Engine) -> None:
    refs = engine.channels.create(None, owner=None)
    base = engine.url.rstrip("/")
    writer = f"{base}/ws/channels/{refs['writer']['channel_id']}?key={refs['writer']['access_key']}&dir=write"
    reader = f"{base}/ws/channels/{refs['reader']['channel_id']}?key={refs['reader']['access_key']}&dir=read"
    assert await _upgrade_headers(writer) == [str(FRAME_INVITATION)]
    assert await _upgrade_headers(reader) == []
    assert 64 * KIB < FRAME_INVITATION <= 1024 * KIB


@pytest.mark.parametrize(("max_message_size", "header"), [(100_000, "100000"), (None, None)])
async def test_invitation_follows_max_message_size_and_production_mode_sends_none(
        max_message_size: int | None, header: str | None) -> None:
    # max_message_size None: production mode (whose engine sends no header) with the default size limit.
    settings = (ChannelSettings(max_message_size=max_message_size) if max_message_size is not None
                else ChannelSettings(production_mode=True))
    async with Engine(config=engine_test_config(channels=settings)) as running:
        ref = running.channels.create(None, owner=None)["writer"]
        url = f"{running.url.rstrip('/')}/ws/channels/{ref['channel_id']}?key={ref['access_key']}&dir=write"
        assert await _upgrade_headers(url) == ([header] if header else [])


async def test_our_writer_sends_invited_frames_our_reader_gets_every_byte(engine: Engine) -> None:
    refs = engine.channels.create(None, owner=None)
    writer, reader = ChannelWriter(engine.url, refs["writer"]), ChannelReader(engine.url, refs["reader"])
    chunks: list[bytes] = []

    async def send() -> None:
        await writer.send_message_async("meta")  # a text message stays whole, before and after the binary ones
        await writer.write(DATA)
        await writer.close_async()

    async def receive() -> None:
        # Our relay forwards each frame as one message: the chunk sizes are the writer's frame sizes.
        while (message := await reader.recv()) is not None:
            chunks.append(message.encode() if isinstance(message, str) else message)

    await asyncio.gather(send(), receive())
    assert chunks[0] == b"meta"
    assert b"".join(chunks[1:]) == DATA
    assert {len(chunk) for chunk in chunks[1:-1]} == {FRAME_INVITATION}


REF_READER = r"""
import asyncio, hashlib, json, sys
from iii.channels import ChannelReader
from iii.iii_types import StreamChannelRef

async def main():
    reader = ChannelReader(sys.argv[1], StreamChannelRef(**json.loads(sys.argv[2])))
    digest, size, largest = hashlib.sha256(), 0, 0
    async for chunk in reader:
        digest.update(chunk); size += len(chunk); largest = max(largest, len(chunk))
    print(json.dumps({"sha256": digest.hexdigest(), "size": size, "largest": largest}))

asyncio.run(main())
"""


@pytest.mark.interop
async def test_reference_reader_gets_every_byte_of_invited_frames(engine: Engine) -> None:
    # The reference SDK's reader keeps websockets' default max_size (1 MiB): the invitation stays within it.
    refs = engine.channels.create(None, owner=None)
    writer = ChannelWriter(engine.url, refs["writer"])
    proc = await asyncio.create_subprocess_exec(
        reference_python(), "-P", "-c", REF_READER, engine.url, json.dumps(refs["reader"]),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)

    async def send() -> None:
        await writer.write(DATA)
        await writer.close_async()

    (out, err), _ = await asyncio.wait_for(asyncio.gather(proc.communicate(), send()), 25)
    assert proc.returncode == 0, err.decode()
    assert json.loads(out) == {"sha256": hashlib.sha256(DATA).hexdigest(), "size": len(DATA),
                               "largest": FRAME_INVITATION}


@pytest.mark.parametrize(("header", "frame"), [
    (None, 64 * KIB),  # the production engine, any other server: no header
    ("262144", 256 * KIB),
    ("4194304", 1024 * KIB),  # clamped to what every reader accepts
    ("1000", 64 * KIB),  # never below the reference's size
    ("1e6", 64 * KIB),  # malformed
    ("+262144", 64 * KIB),
])
async def test_our_writer_against_a_plain_server_uses_what_its_response_says(header: str | None,
                                                                              frame: int) -> None:
    sizes: list[int] = []
    done = asyncio.Event()

    def process_response(connection: ServerConnection, request: Request, response: Response) -> None:
        if header is not None:
            response.headers[FRAME_SIZE_HEADER] = header

    async def handler(ws: ServerConnection) -> None:
        # Our writer never fragments, so each message is one frame.
        async for message in ws:
            sizes.append(len(message))
        done.set()

    async with serve(handler, "127.0.0.1", 0, max_size=None, compression=None,
                     process_response=process_response) as server:
        port = server.sockets[0].getsockname()[1]
        ref = {"channel_id": "c1", "access_key": "k", "direction": "write"}
        writer = ChannelWriter(f"ws://127.0.0.1:{port}", ref)
        await writer.write(DATA)
        await writer.close_async()
        await done.wait()
    assert sum(sizes) == len(DATA)
    assert set(sizes[:-1]) == {frame} and 0 < sizes[-1] <= frame
