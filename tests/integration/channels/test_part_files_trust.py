"""Issue #8, partial files: a receiver killed mid-transfer leaves a ``.iii-part-*`` behind; the next receive in
that directory reclaims it, never the part of a receive that is still running; a target naming a missing
directory is refused before anything is written."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from iii.channels import ChannelReader, ChannelWriter, ReaderGoneError
from iii_channels.files import PART_PREFIX, receive_file, reclaim_stale_parts
from iii_channels.sink import ChannelSink
from iii_channels.trees import receive_dir
from iii_engine import Engine
from tests.conftest import ROOT

RECEIVER = r"""
import asyncio, json, sys
from iii.channels import ChannelReader
from iii_channels.files import receive_file
async def main():
    receipt = await receive_file(ChannelReader(sys.argv[1], json.loads(sys.argv[2])), sys.argv[3])
    print(receipt.size, flush=True)
asyncio.run(main())
"""
BLOCK = b"p" * (1 << 20)


def _dead_pid() -> int:
    """The PID of a process that has exited and been reaped."""
    out = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                         check=True, timeout=20)
    return int(out.stdout)


def _parts(directory: Path) -> dict[str, int]:
    """Part files and their sizes; one that a receiver reclaims between the listing and its stat is left out."""
    sizes: dict[str, int] = {}
    for path in directory.iterdir():
        if path.name.startswith(PART_PREFIX):
            with contextlib.suppress(FileNotFoundError):
                sizes[path.name] = path.stat().st_size
    return sizes


async def _part_growing(directory: Path, ignore: set[str], at_least: int = 1 << 20) -> str:
    """The name of a new part file in ``directory`` once it holds ``at_least`` bytes. The receiver's writes to
    disk have no other observable signal, so this polls the file system (20 ms steps, 15 s limit)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for name, size in _parts(directory).items():
            if name not in ignore and size >= at_least:
                return name
        await asyncio.sleep(0.02)
    raise AssertionError(f"no part file grew to {at_least} bytes in {directory}: {_parts(directory)}")


async def _feed(writer: ChannelWriter, blocks: int, close: bool) -> None:
    sink = ChannelSink(writer)
    for _ in range(blocks):
        await sink.write(BLOCK)
    if close:
        await sink.close()


class Receiver:
    """``receive_file`` in its own process, fed by a writer in this one."""

    def __init__(self, engine: Engine, target: Path) -> None:
        refs = engine.channels.create(None, owner=None)
        self.writer = ChannelWriter(engine.url, refs["writer"])
        self.reader_ref = refs["reader"]
        self.engine = engine
        self.target = target
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> asyncio.subprocess.Process:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OTEL_ENABLED": "false"}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", RECEIVER, self.engine.url, json.dumps(self.reader_ref), str(self.target),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
        return self.proc


@pytest.fixture
async def receivers() -> AsyncIterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for receiver in made:
        if receiver.proc is not None and receiver.proc.returncode is None:
            receiver.proc.kill()
            await receiver.proc.wait()


async def test_a_killed_receivers_part_is_reclaimed_and_a_live_one_is_kept(
    engine: Engine, tmp_path: Path, receivers: list[Receiver]
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()

    # 1. A receiver killed -9 in the middle of a transfer leaves its part file.
    doomed = Receiver(engine, inbox / "doomed.bin")
    receivers.append(doomed)
    proc = await doomed.start()
    feeding = asyncio.ensure_future(_feed(doomed.writer, 64, close=True))
    dead_part = await _part_growing(inbox, set())
    proc.kill()
    await proc.wait()
    with pytest.raises((ReaderGoneError, ConnectionError)):
        await asyncio.wait_for(feeding, 10)
    assert _parts(inbox)[dead_part] >= 1 << 20

    # 2. Another receiver is mid-transfer in the same directory.
    live = Receiver(engine, inbox / "live.bin")
    receivers.append(live)
    live_proc = await live.start()
    live_sink = ChannelSink(live.writer)
    for _ in range(3):
        await asyncio.wait_for(live_sink.write(BLOCK), 10)
    live_part = await _part_growing(inbox, {dead_part})

    # 3. The next receive in that directory removes the dead part and leaves the live one alone.
    refs = engine.channels.create(None, owner=None)
    small = asyncio.ensure_future(_feed(ChannelWriter(engine.url, refs["writer"]), 1, close=True))
    receipt = await asyncio.wait_for(receive_file(ChannelReader(engine.url, refs["reader"]), inbox / "small.bin"), 10)
    await small
    assert receipt.size == len(BLOCK)
    parts = _parts(inbox)
    assert dead_part not in parts
    assert live_part in parts

    # 4. The live transfer still completes, and leaves nothing behind.
    await live_sink.write(BLOCK)
    await live_sink.close()
    out, err = await asyncio.wait_for(live_proc.communicate(), 15)
    assert live_proc.returncode == 0, err.decode()[-2000:]
    assert int(out) == 4 * len(BLOCK)
    assert (inbox / "live.bin").stat().st_size == 4 * len(BLOCK)
    assert _parts(inbox) == {}


def test_reclaim_rules(tmp_path: Path) -> None:
    dead, alive = _dead_pid(), os.getpid()
    stale = tmp_path / f"{PART_PREFIX}{dead}-aaaaaaaa"
    stale.write_bytes(b"x" * 1000)
    locked = tmp_path / f"{PART_PREFIX}{dead}-bbbbbbbb"  # a dead-looking PID (another PID namespace) but locked
    locked.write_bytes(b"y")
    ours = tmp_path / f"{PART_PREFIX}{alive}-cccccccc"  # a live owner that has not locked yet
    ours.write_bytes(b"z")
    legacy_fresh = tmp_path / f"{PART_PREFIX}k2j3h4k2"
    legacy_fresh.write_bytes(b"l")
    legacy_old = tmp_path / f"{PART_PREFIX}q9w8e7q9"
    legacy_old.write_bytes(b"o")
    os.utime(legacy_old, (time.time() - 7200, time.time() - 7200))
    staging = tmp_path / f"{PART_PREFIX}{dead}-dddddddd"
    (staging / "sub").mkdir(parents=True)
    (staging / "sub" / "f").write_bytes(b"s" * 10)
    elsewhere = tmp_path / "keep.txt"
    elsewhere.write_bytes(b"k")
    link = tmp_path / f"{PART_PREFIX}{dead}-eeeeeeee"
    link.symlink_to(elsewhere)
    unrelated = tmp_path / "report.iii-part-1-x"
    unrelated.write_bytes(b"u")
    # a user's own, named like a part but not as tempfile names them: an hour old, it was removed with what it held
    users = tmp_path / f"{PART_PREFIX}cache"
    users.mkdir()
    (users / "precious.db").write_bytes(b"p")
    os.utime(users, (time.time() - 7200, time.time() - 7200))

    fd = os.open(locked, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        removed = reclaim_stale_parts(tmp_path)
        assert removed == {stale: 1000, legacy_old: 1, staging: 10}
        assert locked.exists() and ours.exists() and legacy_fresh.exists() and link.is_symlink()
        assert elsewhere.read_bytes() == b"k" and unrelated.exists()
        assert (users / "precious.db").read_bytes() == b"p"
    finally:
        os.close(fd)
    assert reclaim_stale_parts(tmp_path) == {locked: 1}  # unlocked now, owner gone


def test_reclaim_in_a_missing_directory_is_a_no_op(tmp_path: Path) -> None:
    assert reclaim_stale_parts(tmp_path / "nope") == {}


@pytest.mark.parametrize("kind", ["slash", "missing_parent", "file_with_slash"])
async def test_a_target_naming_a_missing_directory_is_refused(engine: Engine, tmp_path: Path, kind: str) -> None:
    (tmp_path / "plain").write_bytes(b"")
    target, error, words = {
        "slash": (str(tmp_path / "missing") + "/", FileNotFoundError, "does not exist"),
        "missing_parent": (str(tmp_path / "nodir" / "x.bin"), FileNotFoundError, "does not exist"),
        "file_with_slash": (str(tmp_path / "plain") + "/", NotADirectoryError, "is not a directory"),
    }[kind]
    refs = engine.channels.create(None, owner=None)
    feeding = asyncio.ensure_future(_feed(ChannelWriter(engine.url, refs["writer"]), 64, close=True))
    with pytest.raises(error, match=words):
        await asyncio.wait_for(receive_file(ChannelReader(engine.url, refs["reader"]), target), 10)
    # The writer is told at once (the reader was closed) instead of blocking on backpressure.
    with pytest.raises(ReaderGoneError):
        await asyncio.wait_for(feeding, 10)
    assert sorted(os.listdir(tmp_path)) == ["plain"]  # no file named after the directory


async def test_receive_dir_reclaims_a_dead_staging_directory(engine: Engine, tmp_path: Path) -> None:
    stale = tmp_path / f"{PART_PREFIX}{_dead_pid()}-zzzzzzzz"
    (stale / "a").mkdir(parents=True)
    (stale / "a" / "big").write_bytes(b"b" * 4096)
    refs = engine.channels.create(None, owner=None)
    from iii_channels.trees import send_files

    src = tmp_path / "one.txt"
    src.write_bytes(b"hello")
    sending = asyncio.ensure_future(send_files(ChannelWriter(engine.url, refs["writer"]), [src]))
    receipt = await asyncio.wait_for(receive_dir(ChannelReader(engine.url, refs["reader"]), tmp_path / "got"), 10)
    await sending
    assert receipt.bytes == 5
    assert not stale.exists()
    assert _parts(tmp_path) == {}
