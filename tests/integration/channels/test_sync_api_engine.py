"""The channel writer's sync API through the embedded engine, used as the reference SDK's users do: a sync handler
that writes into the writer it got in its payload, and a script thread that creates a channel and writes into it.
Several sync calls each: before, the second one of any writer failed (``attached to a different loop``) and the
reader never got the end of its stream."""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

from iii.channels import ChannelReader, ChannelWriter
from iii.iii_types import StreamChannelRef
from iii_engine.testing import local_channel


async def test_a_sync_handler_writes_into_the_writer_of_its_payload() -> None:
    blocks = [os.urandom(300_000) for _ in range(5)]

    def produce(data: dict[str, Any]) -> dict[str, int]:  # a sync handler: runs in the client's handler threads
        out = data["out"]
        assert isinstance(out, ChannelWriter)
        out.send_message("header")
        for block in blocks[:-1]:
            out.stream.write(block)
        out.stream.end(blocks[-1])
        return {"sent": out.bytes_written}

    async with local_channel() as ch:
        ch.iii.register_function("test::produce", produce)
        texts: list[str] = []
        ch.reader.on_message(texts.append)
        call = ch.iii.trigger_async({"function_id": "test::produce", "payload": {"out": ch.writer}})
        answer, data = await asyncio.wait_for(asyncio.gather(call, ch.reader.read_all()), 20)
    assert answer == {"sent": sum(map(len, blocks))}
    assert texts == ["header"]
    assert hashlib.sha256(data).digest() == hashlib.sha256(b"".join(blocks)).digest()


async def test_a_script_thread_creates_a_channel_and_writes_with_sync_calls() -> None:
    async with local_channel() as ch:
        client = ch.iii

        def script() -> StreamChannelRef:
            channel = client.create_channel()  # the client's sync API, from a thread with no loop
            channel.writer.stream.write(b"one ")
            channel.writer.stream.write(b"two ")
            channel.writer.send_message("note")
            channel.writer.stream.write(b"three")
            channel.writer.close()
            return channel.reader_ref

        ref = await asyncio.wait_for(asyncio.to_thread(script), 20)
        reader = ChannelReader(ch.engine.url, ref)
        texts: list[str] = []
        reader.on_message(texts.append)
        assert await asyncio.wait_for(reader.read_all(), 10) == b"one two three"
        assert texts == ["note"]
