"""A peer's JSON nested 100,000 deep made ``json.loads`` raise ``RecursionError``, which no reader caught: the
trailer's first ``read_all`` raised it and a second returned the data unverified, without an error; ``json_records``
raised it instead of its ``ValueError`` naming the line, and read on; ``receive_dir`` / ``receive_file`` raised it
bare. A file header's ``size`` of ``1e400`` raised ``OverflowError``, ``3.9`` / ``"3"`` / ``true`` were read as
3 / 3 / 1, and a ``name`` of 12345 was stored."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from iii.channels import ChannelClosedError
from iii_channels import ChannelSource, IntegrityError, receive_dir, receive_file, sink
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)

DEEP = "[" * 100_000 + "]" * 100_000


async def test_a_deep_trailer_is_an_integrity_error_and_the_source_keeps_failing() -> None:
    async with local_channel() as ch:
        await ch.writer.write(b"data")
        await ch.writer.send_message_async('{"iii_channels_trailer": ' + DEEP + "}")
        await ch.writer.write(b"more")
        await ch.writer.close_async()
        src = ChannelSource(ch.reader)  # require_trailer=False: a malformed trailer still fails
        with pytest.raises(IntegrityError, match="malformed integrity trailer"):
            await src.read_all()  # before: RecursionError
        with pytest.raises(ChannelClosedError, match="integrity check failed"):
            await src.read_all()  # before: b"datamore", verified False
        assert not src.verified


async def test_json_records_names_a_deep_line_and_fails_for_good() -> None:
    async with local_channel() as ch:
        async def write() -> None:
            async with sink(ch.writer, high_water_mark=0) as out:
                await out.write(b'{"ok": 1}\n' + DEEP.encode() + b"\n")
                for _ in range(200):
                    await out.write(b"x" * 65536)

        writing = asyncio.ensure_future(write())
        src = ChannelSource(ch.reader)
        got = []
        with pytest.raises(ValueError, match=r"line 2 is not JSON"):  # before: RecursionError
            async for record in src.json_records():
                got.append(record)
        assert got == [{"ok": 1}]
        with pytest.raises(ChannelClosedError, match="not JSON"):
            await src.read(10)  # before: b"xxxxxxxxxx"
        with pytest.raises(Exception) as writer_error:  # released: before, blocked on backpressure for good
            await asyncio.wait_for(writing, 10)
        assert not isinstance(writer_error.value, asyncio.TimeoutError), repr(writer_error.value)


async def test_receive_dir_refuses_a_deep_record(tmp_path: Path) -> None:
    async with local_channel() as ch:
        await ch.writer.send_message_async('{"iii_channels_entry": ' + DEEP + "}")
        await ch.writer.close_async()
        with pytest.raises(IntegrityError, match="malformed iii_channels_entry record"):
            await receive_dir(ch.reader, tmp_path / "out")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("header", [
    '{"iii_channels_file": ' + DEEP + "}",
    '{"iii_channels_file": {"name": "a.txt", "size": 1e400}}',
    '{"iii_channels_file": {"name": "a.txt", "size": 3.9}}',
    '{"iii_channels_file": {"name": "a.txt", "size": true}}',
    '{"iii_channels_file": {"name": "a.txt", "size": "3"}}',
    '{"iii_channels_file": {"name": "a.txt", "size": -3}}',
    '{"iii_channels_file": {"name": 12345, "size": 3}}',
    '{"iii_channels_file": ["a.txt", 3]}',
])
async def test_receive_file_refuses_a_malformed_header(tmp_path: Path, header: str) -> None:
    async with local_channel() as ch:
        await ch.writer.send_message_async(header)
        await ch.writer.write(b"abc")
        await ch.writer.close_async()
        with pytest.raises(IntegrityError, match="malformed file header"):
            await receive_file(ch.reader, tmp_path)
    assert os.listdir(tmp_path) == []


async def test_a_well_formed_header_is_still_taken(tmp_path: Path) -> None:
    async with local_channel() as ch:
        await ch.writer.send_message_async('{"iii_channels_file": {"name": "a.txt", "size": 3}}')
        await ch.writer.write(b"abc")
        await ch.writer.close_async()
        receipt = await receive_file(ch.reader, tmp_path)
    assert (receipt.name, receipt.size, (tmp_path / "a.txt").read_bytes()) == ("a.txt", 3, b"abc")
