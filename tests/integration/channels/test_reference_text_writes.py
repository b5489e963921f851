"""A str written to a channel writer is a text message at the other end, both ways between the reference SDK (its
own venv, in a subprocess) and ours: the reference's ``ChannelWriter.write(str)`` sends a text frame, and ours,
which raised ``TypeError`` for a str, now sends one too (``write``, ``stream.write``, ``stream.end``)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from collections.abc import Awaitable, Callable

import pytest

from iii.channels import ChannelReader, ChannelWriter
from iii_engine import Engine
from tests.integration.channels.test_reference_interop import REF_SCRIPT, engine
from tests.interop.refsdk import reference_child

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

# Runs in the reference venv: "read" prints the sha256, size and texts of what it read. A name of this module (as
# REF_TEXT_WRITER is), so that the test of a dying child below can swap in one.
REF_READER = REF_SCRIPT


async def _read_by_reference(engine: Engine, reader_ref: dict[str, object], send: Awaitable[None]) -> object:
    async with reference_child(REF_READER, "read", engine.url, json.dumps(reader_ref)) as child:
        await child.watch(send)
        return json.loads(await child.finish())


async def test_a_str_our_writer_writes_is_text_at_the_reference_reader(engine: Engine) -> None:
    refs = engine.channels.create(None, owner=None)
    writer = ChannelWriter(engine.url, refs["writer"])

    async def send() -> None:
        await writer.write("first")  # type: ignore[arg-type]  # untyped drop-in code of the reference's
        writer.stream.write("second")
        await writer.write(b"data")
        writer.stream.end("last")
        await writer.close_async()

    assert await _read_by_reference(engine, refs["reader"], send()) == {
        "sha256": hashlib.sha256(b"data").hexdigest(), "size": 4, "texts": ["first", "second", "last"]}


async def test_a_str_the_reference_writer_writes_is_text_at_our_reader(engine: Engine) -> None:
    refs = engine.channels.create(None, owner=None)
    reader = ChannelReader(engine.url, refs["reader"])
    received: list[bytes | str] = []

    async def receive() -> None:
        while (message := await reader.recv()) is not None:
            received.append(message)

    async with reference_child(REF_TEXT_WRITER, engine.url, json.dumps(refs["writer"])) as child:
        await child.watch(receive())  # a child that dies fails the test now, not after a 20 s wait for a message
        await child.finish()
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

    result = await _read_by_reference(engine, refs["reader"], send())
    assert isinstance(result, dict)
    assert (result["size"], result["sha256"]) == (9, hashlib.sha256(b"head;tail").hexdigest())
    assert "".join(result["texts"]) == text
    assert [len(piece) for piece in result["texts"]] == [65_536] * 9 + [10_176]


# A child that crashes: 60 lines on stderr, exit code 3.
BROKEN_CHILD = "import sys\nfor n in range(60):\n    print(f'broken line {n}', file=sys.stderr)\nsys.exit(3)\n"


@pytest.mark.parametrize("script", ["REF_READER", "REF_TEXT_WRITER"])
async def test_a_reference_child_that_dies_fails_the_test_at_once_with_its_exit_code_and_stderr(
        engine: Engine, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    # Before, our reader waited 20 s for a message from a writer that had died, then failed with a bare TimeoutError.
    monkeypatch.setattr(sys.modules[__name__], script, BROKEN_CHILD)
    test: Callable[[Engine], Awaitable[None]] = {
        "REF_READER": test_a_str_our_writer_writes_is_text_at_the_reference_reader,
        "REF_TEXT_WRITER": test_a_str_the_reference_writer_writes_is_text_at_our_reader}[script]
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(AssertionError) as failed:
        async with asyncio.timeout(5):
            await test(engine)
    assert loop.time() - started < 2
    message = str(failed.value)
    assert "exited with code 3" in message
    assert "broken line 59" in message and "broken line 20" in message and "broken line 19" not in message
