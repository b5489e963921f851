"""``receive_file``'s progress knows the total from the sender's header, which comes before any byte: its first
report carried ``None`` all the same (the total was set only after the first chunk had been reported)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from iii_channels import receive_file, send_file
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)


async def test_the_first_progress_report_carries_the_total(tmp_path: Path) -> None:
    (tmp_path / "src").write_bytes(bytes(10_000))
    seen: list[tuple[int, int | None]] = []
    async with local_channel() as ch:
        await asyncio.gather(send_file(ch.writer, tmp_path / "src", chunk_size=1000),
                             receive_file(ch.reader, tmp_path / "dst",
                                          progress=lambda done, total: seen.append((done, total))))
    # before: seen[0] == (1000, None)
    assert seen[0] == (1000, 10_000)
    assert {total for _, total in seen} == {10_000} and seen[-1] == (10_000, 10_000)
