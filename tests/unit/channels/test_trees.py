"""Many files over one channel: send_dir / send_files / receive_dir, and nothing left behind on failure."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

import pytest

import iii_channels
from iii.channels import ChannelReader, ChannelWriter
from iii_channels import ChannelError, ChannelSink, IntegrityError
from iii_channels.trees import END_KEY, ENTRY_KEY, check_entry_path
from iii_engine.channels import ChannelRelay


def ends(base: str, relay: ChannelRelay) -> tuple[ChannelWriter, ChannelReader]:
    refs = relay.create(None, owner="w")
    return ChannelWriter(base, refs["writer"]), ChannelReader(base, refs["reader"])


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Relative path -> content (None for directories)."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".iii-part-")]


async def test_directory_roundtrip(any_relay: tuple[str, ChannelRelay], tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "empty_dir").mkdir()
    (src / "top.txt").write_bytes(b"hello\n")
    (src / "empty.bin").write_bytes(b"")
    (src / "a" / "big.bin").write_bytes(os.urandom(2_500_000))
    (src / "a" / "b" / "deep.txt").write_bytes(b"deep" * 1000)
    os.mkfifo(src / "a" / "fifo")  # skipped: reading it would block forever
    (src / "link.txt").symlink_to(src / "top.txt")
    writer, reader = ends(*any_relay)
    dest = tmp_path / "out" / "copy"
    seen: list[int] = []
    sent, receipt = await asyncio.gather(
        iii_channels.send_dir(writer, src, progress=lambda done, total: seen.append(done)),
        iii_channels.receive_dir(reader, dest))
    expected = {k: v for k, v in snapshot(src).items() if k != "a/fifo"}
    assert snapshot(dest) == expected
    assert sent == receipt.bytes == sum(len(v) for v in expected.values() if v)
    assert seen[-1] == sent
    by_name = {f.name: f for f in receipt.files}
    assert set(by_name) == {"top.txt", "empty.bin", "a/big.bin", "a/b/deep.txt", "link.txt"}
    big = by_name["a/big.bin"]
    assert big.path == dest / "a" / "big.bin" and big.verified
    assert big.sha256 == hashlib.sha256((src / "a" / "big.bin").read_bytes()).hexdigest()
    assert "empty_dir" in receipt.directories
    assert leftovers(tmp_path / "out") == []
    assert (dest / "top.txt").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


async def test_send_files_with_names(relay: tuple[str, ChannelRelay], tmp_path: Path) -> None:
    one, two = tmp_path / "one.txt", tmp_path / "two.txt"
    one.write_bytes(b"1" * 10)
    two.write_bytes(b"2" * 20)
    writer, reader = ends(*relay)
    _, receipt = await asyncio.gather(
        iii_channels.send_files(writer, [one, ("renamed/second.txt", two)]),
        iii_channels.receive_dir(reader, tmp_path / "dest"))
    assert snapshot(tmp_path / "dest") == {"one.txt": b"1" * 10, "renamed": None, "renamed/second.txt": b"2" * 20}
    assert receipt.bytes == 30


async def test_writer_abort_mid_file_leaves_nothing(any_relay: tuple[str, ChannelRelay], tmp_path: Path) -> None:
    writer, reader = ends(*any_relay)

    async def crash() -> None:
        async with ChannelSink(writer) as sink:
            await sink.send_text(json.dumps({ENTRY_KEY: {"path": "f.bin", "type": "file", "size": 10_000_000}}))
            await sink.write(os.urandom(1_000_000))
            await sink.drain()
            raise OSError("disk on fire")

    dest = tmp_path / "dest"
    results = await asyncio.gather(crash(), iii_channels.receive_dir(reader, dest), return_exceptions=True)
    assert isinstance(results[0], OSError)
    # Ours: the abort code; production (no abort signal): the missing trailer / unfinished file.
    assert isinstance(results[1], ChannelError)
    assert not dest.exists()
    assert leftovers(tmp_path) == []


async def test_corrupt_file_detected_and_nothing_left(relay: tuple[str, ChannelRelay], tmp_path: Path) -> None:
    writer, reader = ends(*relay)

    async def lie() -> None:
        async with ChannelSink(writer) as sink:
            await sink.send_text(json.dumps({ENTRY_KEY: {"path": "ok.txt", "type": "file", "size": 3}}))
            await sink.write(b"abc")
            await sink.send_text(json.dumps({END_KEY: {"bytes": 3, "sha256": hashlib.sha256(b"abd").hexdigest()}}))

    dest = tmp_path / "dest"
    results = await asyncio.gather(lie(), iii_channels.receive_dir(reader, dest), return_exceptions=True)
    assert isinstance(results[1], IntegrityError)
    assert "'ok.txt'" in str(results[1])
    assert not dest.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("bad", ["../escape.txt", "/etc/passwd", "a/../../x", "", "a//b"])
async def test_unsafe_paths_refused(relay: tuple[str, ChannelRelay], tmp_path: Path, bad: str) -> None:
    writer, reader = ends(*relay)

    async def evil() -> None:
        async with ChannelSink(writer) as sink:
            await sink.send_text(json.dumps({ENTRY_KEY: {"path": bad, "type": "file", "size": 1}}))
            await sink.write(b"x")

    dest = tmp_path / "sub" / "dest"
    results = await asyncio.gather(evil(), iii_channels.receive_dir(reader, dest), return_exceptions=True)
    assert isinstance(results[1], IntegrityError) and "unsafe path" in str(results[1])
    assert list(snapshot(tmp_path)) == ["sub"]


async def test_existing_destination_refused(relay: tuple[str, ChannelRelay], tmp_path: Path) -> None:
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "keep.txt").write_text("mine")
    _, reader = ends(*relay)
    with pytest.raises(FileExistsError, match="not an empty directory"):
        await iii_channels.receive_dir(reader, tmp_path / "dest")
    assert (tmp_path / "dest" / "keep.txt").read_text() == "mine"


async def test_empty_destination_directory_is_filled(relay: tuple[str, ChannelRelay], tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x").write_bytes(b"x")
    (tmp_path / "dest").mkdir()
    writer, reader = ends(*relay)
    await asyncio.gather(iii_channels.send_dir(writer, tmp_path / "src"),
                         iii_channels.receive_dir(reader, tmp_path / "dest"))
    assert snapshot(tmp_path / "dest") == {"x": b"x"}


def test_check_entry_path() -> None:
    assert check_entry_path("a/b/c.txt").parts == ("a", "b", "c.txt")
    for bad in ("..", ".", "a/./b", "x\x00y", 5):
        with pytest.raises(ValueError, match="unsafe path"):
            check_entry_path(bad)


async def test_failed_receive_tells_the_writer(relay: tuple[str, ChannelRelay], tmp_path: Path) -> None:
    writer, reader = ends(*relay)

    async def evil_then_lots() -> None:
        async with ChannelSink(writer) as sink:
            await sink.send_text(json.dumps({ENTRY_KEY: {"path": "../x", "type": "file"}}))
            for _ in range(200):  # 200 MiB: far beyond every buffer, so only "reader gone" can end this
                await sink.write(bytes(1 << 20))

    results = await asyncio.wait_for(
        asyncio.gather(evil_then_lots(), iii_channels.receive_dir(reader, tmp_path / "d"), return_exceptions=True),
        15)
    assert isinstance(results[1], IntegrityError)
    assert isinstance(results[0], iii_channels.ReaderGoneError)
