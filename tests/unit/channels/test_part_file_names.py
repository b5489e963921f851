"""A received file named like a partial transfer (``.iii-part-<dead pid>-…``) is refused, and never reclaimed.

Before, ``checked_file_name`` accepted such a name: the file was stored and verified, then the next transfer into
the directory took it for a dead receiver's leftover and deleted it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from iii_channels.cli import _directory_target
from iii_channels.files import checked_file_name, receive_file, reclaim_stale_parts, send_file
from iii_engine.testing import local_channel

DEAD = 3999999  # above Linux's pid_max (4194304 at most): no process has it


def test_a_name_with_the_part_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match=r"'.iii-part-3999999-report.txt': .iii-part-\* names are kept"):
        checked_file_name(f".iii-part-{DEAD}-report.txt")
    with pytest.raises(ValueError, match="kept for partial transfers"):
        _directory_target(Path("/tmp"), f".iii-part-{DEAD}-report.txt", overwrite=True)


def test_reclaim_leaves_a_file_that_is_not_one_of_its_parts(tmp_path: Path) -> None:
    kept = tmp_path / f".iii-part-{DEAD}-report.txt"  # stored by a receiver that did not refuse it yet
    kept.write_bytes(b"important")
    leftover = tmp_path / f".iii-part-{DEAD}-k3_9zq0a"  # what mkstemp names our parts
    leftover.write_bytes(b"partial")
    assert reclaim_stale_parts(tmp_path) == {leftover: 7}
    assert kept.read_bytes() == b"important"


async def test_a_transfer_into_the_directory_leaves_such_a_file(tmp_path: Path) -> None:
    kept = Path(f".iii-part-{DEAD}-report.txt")
    (tmp_path / "other.txt").write_bytes(b"other")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / kept.name).write_bytes(b"important")
    async with local_channel() as ch:
        await asyncio.gather(send_file(ch.writer, tmp_path / "other.txt"), receive_file(ch.reader, inbox))
    assert sorted(p.name for p in inbox.iterdir()) == [kept.name, "other.txt"]
    assert (inbox / kept.name).read_bytes() == b"important"
