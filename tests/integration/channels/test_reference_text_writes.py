"""A str written to a channel writer is a text message at the other end, both ways between the reference SDK (its
own venv, in a subprocess) and ours: the reference's ``ChannelWriter.write(str)`` sends a text frame, and ours,
which raised ``TypeError`` for a str, now sends one too (``write``, ``stream.write``, ``stream.end``)."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest

from iii.channels import ChannelReader, ChannelWriter
from iii_engine import Engine
from tests.integration.channels.test_reference_interop import engine, run_ref
from tests.services import reference_python

pytestmark = [pytest.mark.interop, pytest.mark.timeout(30)]
__all__ = ["engine"]  # the fixture, both engine modes

# Runs in the reference venv: its writer writes a str, then bytes.
REF_TEXT_WRITER = r"""
import asyncio, json, sys
from iii.channels import ChannelWriter
from iii.iii_types import StreamChannelRef

async def main():
    w = ChannelWriter(sys.argv[1], StreamChannelRef(**json.loads(sys.argv[2])))
    await w.write("ref text")
    await w.write(b"ref bytes")
    await w.close_async()

asyncio.run(main())
"""


async def test_a_str_our_writer_writes_is_text_at_the_reference_reader(engine: Engine) -> None:
    refs = engine.channels.create(None, owner=None)
    writer = ChannelWriter(engine.url, refs["writer"])

    async def send() -> None:
        await writer.write("first")  # type: ignore[arg-type]  # untyped drop-in code of the reference's
        writer.stream.write("second")
        await writer.write(b"data")
        writer.stream.end("last")
        await writer.close_async()

    out, _ = await asyncio.gather(run_ref("read", engine.url, json.dumps(refs["reader"])), send())
    assert json.loads(out) == {"sha256": hashlib.sha256(b"data").hexdigest(), "size": 4,
                               "texts": ["first", "second", "last"]}


async def test_a_str_the_reference_writer_writes_is_text_at_our_reader(engine: Engine) -> None:
    refs = engine.channels.create(None, owner=None)
    reader = ChannelReader(engine.url, refs["reader"])
    writing = await asyncio.create_subprocess_exec(  # -P: the repository must not shadow the reference's ``iii``
        reference_python(), "-P", "-c", REF_TEXT_WRITER, engine.url, json.dumps(refs["writer"]),
        stderr=asyncio.subprocess.PIPE)
    received: list[bytes | str] = []
    while (message := await asyncio.wait_for(reader.recv(), 20)) is not None:
        received.append(message)
    _, err = await asyncio.wait_for(writing.communicate(), 20)
    assert writing.returncode == 0, err.decode()
    assert received == ["ref text", b"ref bytes"]


async def test_a_str_over_1_mib_our_writer_writes_reaches_the_reference_reader_whole(engine: Engine) -> None:
    # The reference reader keeps websockets' 1 MiB limit on a message and takes the 1009 close of a larger one for
    # a normal end of stream: sent as one message, this str ended the stream after b"head;" (exit 0, no error).
    # Cut as the reference's own writer cuts a str (65,536 characters a message), every piece arrives.
    refs = engine.channels.create(None, owner=None)
    writer = ChannelWriter(engine.url, refs["writer"])
    text = "é" * 600_000  # 1.2 MB of UTF-8

    async def send() -> None:
        await writer.write(b"head;")
        await writer.write(text)  # type: ignore[arg-type]  # untyped drop-in code of the reference's
        await writer.write(b"tail")
        await writer.close_async()

    out, _ = await asyncio.gather(run_ref("read", engine.url, json.dumps(refs["reader"])), send())
    result = json.loads(out)
    assert (result["size"], result["sha256"]) == (9, hashlib.sha256(b"head;tail").hexdigest())
    assert "".join(result["texts"]) == text
    assert [len(piece) for piece in result["texts"]] == [65_536] * 9 + [10_176]
