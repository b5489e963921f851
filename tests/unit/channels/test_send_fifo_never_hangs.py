"""``send_file`` / ``send_dir`` / ``send_files`` opened files with a blocking ``open()`` in a thread: on a FIFO nobody
writes to the thread blocked for good, a cancel could not free it, and ``asyncio.run`` never returned (attack C,
fault 3: ``wait_for(send_file(w, fifo), 2)`` timed out, then the process hung). ``send_dir`` checked for a regular
file only while listing, so a listed file swapped for a FIFO blocked it the same way. Files are opened with
``O_NONBLOCK`` now; a FIFO is read through the event loop; a listed file found to be another file is a
``FileChangedError`` before any of it is read; ``send_files`` refuses what is not a regular file."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from iii.channels import ChannelAbortedError
from iii_channels import FileChangedError, receive_dir, receive_file, send_dir, send_file, send_files
from iii_channels import trees as trees_module
from iii_engine.testing import local_channel
from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(30)


def test_a_cancelled_send_of_a_silent_fifo_lets_the_process_end(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    script = textwrap.dedent(f"""
        import asyncio, time
        import iii_channels
        from iii_engine.testing import local_channel

        async def main():
            async with local_channel() as ch:
                try:
                    await asyncio.wait_for(iii_channels.send_file(ch.writer, {str(fifo)!r}), 0.5)
                except asyncio.TimeoutError:
                    print("timed out", flush=True)

        asyncio.run(main())
        print("returned", flush=True)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, cwd=ROOT)
    try:
        out, err = proc.communicate(timeout=20)  # before: never returned (a thread blocked in open())
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    assert out.decode().split() == ["timed", "out", "returned"], err.decode()[-2000:]
    assert proc.returncode == 0


async def test_send_file_reads_a_fifo_once_its_writer_comes(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    data = os.urandom(300_000)
    (tmp_path / "out").mkdir()
    async with local_channel() as ch:
        sent, received, _ = await asyncio.gather(
            send_file(ch.writer, fifo, chunk_size=65536),
            receive_file(ch.reader, tmp_path / "out", require_trailer=True),
            asyncio.to_thread(fifo.write_bytes, data))  # its open waits for the reader's
    assert (sent, received.verified, received.size) == (len(data), True, len(data))
    assert (tmp_path / "out" / "fifo").read_bytes() == data


async def test_send_dir_refuses_a_listed_file_swapped_for_a_fifo(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.bin").write_bytes(b"a" * 1000)
    (tree / "b.bin").write_bytes(b"small")
    walk = trees_module._walk

    def walk_then_swap(directory: Path) -> object:
        listed = walk(directory)
        (tree / "b.bin").unlink()  # listed as a regular file; a FIFO by the time it is opened
        os.mkfifo(tree / "b.bin")
        return listed

    monkeypatch.setattr(trees_module, "_walk", walk_then_swap)
    async with local_channel() as ch:
        sent, received = await asyncio.wait_for(
            asyncio.gather(send_dir(ch.writer, tree), receive_dir(ch.reader, tmp_path / "copy"),
                           return_exceptions=True), 15)  # before: blocked for good
    assert isinstance(sent, FileChangedError), repr(sent)
    assert "b.bin was replaced by a FIFO while it was sent (0 bytes read)" in str(sent)
    assert isinstance(received, ChannelAbortedError), repr(received)
    assert not (tmp_path / "copy").exists()


async def test_send_files_refuses_a_fifo_before_sending(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    os.mkfifo(tmp_path / "fifo")
    async with local_channel() as ch:
        reading = asyncio.ensure_future(ch.reader.read_all())
        with pytest.raises(ValueError, match=r"fifo is a FIFO, not a regular file"):
            await asyncio.wait_for(send_files(ch.writer, [tmp_path / "a.txt", tmp_path / "fifo"]), 15)
        with pytest.raises(ChannelAbortedError):
            await asyncio.wait_for(reading, 10)
