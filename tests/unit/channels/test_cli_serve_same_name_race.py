"""Two transfers of one name into ``serve --out DIR`` at once: one file is placed, the other transfer fails.

Both passed the "does it exist" check before either was placed, and the file then went in with a rename that
replaced whatever was there: both senders heard "verified" with the same path, and only the last content was left
(without --overwrite).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from iii_channels import files
from iii_channels.cli import _store
from iii_channels.sink import ChannelSink
from iii_engine.testing import local_channel


async def test_the_second_of_two_racing_transfers_of_one_name_fails_and_keeps_the_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    loop = asyncio.get_running_loop()
    parts: list[str] = []
    both_past_checks = asyncio.Event()

    def part_file(directory: str | os.PathLike[str]) -> tuple[int, str]:
        # a receive holds its part file once past its checks: both must be, before either places its file
        made = create_part_file(directory)
        parts.append(made[1])
        if len(parts) == 2:
            loop.call_soon_threadsafe(both_past_checks.set)
        return made

    create_part_file = files._create_part_file
    monkeypatch.setattr(files, "_create_part_file", part_file)
    async with local_channel() as first:
        second = await first.iii.create_channel_async()
        stores = [asyncio.ensure_future(_store(ch.reader, {"name": "same.txt"}, str(inbox), None))
                  for ch in (first, second)]
        await asyncio.wait_for(both_past_checks.wait(), 10)
        for ch, data in ((first, b"first"), (second, b"second")):
            async with ChannelSink(ch.writer) as sink:
                await sink.write(data)
            if ch is first:
                await stores[0]  # placed first: the second finds its name taken as it places its file
        results = await asyncio.gather(*stores, return_exceptions=True)
    assert isinstance(results[0], dict) and results[0]["verified"] is True, results
    assert isinstance(results[1], FileExistsError), results
    assert "already exists on the receiver (serve --overwrite replaces files)" in str(results[1])
    assert (inbox / "same.txt").read_bytes() == b"first"
    assert os.listdir(inbox) == ["same.txt"]  # the loser's part file is gone


async def test_overwrite_still_replaces(tmp_path: Path) -> None:
    (tmp_path / "same.txt").write_bytes(b"old")
    async with local_channel() as ch:
        store = asyncio.ensure_future(_store(ch.reader, {"name": "same.txt"}, str(tmp_path), None, overwrite=True))
        async with ChannelSink(ch.writer) as sink:
            await sink.write(b"new")
        assert (await store)["verified"] is True
    assert (tmp_path / "same.txt").read_bytes() == b"new"
