"""Findings of an attack on the channel layer: special receive targets, arguments checked up front, trees no
receiver can store, over-long names, ``json_records`` line numbers, idle bounds on every reading adapter.

Before: ``receive_file`` renamed over a FIFO or symlink (the FIFO's reader got nothing, the symlink's target kept
its old contents); ``progress=5`` failed after the first chunk; ``read(1.5)`` failed in a slice; ``send_files`` of
``x.txt`` twice, or of ``x`` and ``x/y``, returned success for a tree every receiver refused; a 300-character name
failed only at the final rename; ``json_records`` counted lines from where it started; ``to_process``,
``receive_dir``, ``copy``, ``to_stream`` and ``to_fd`` waited for ever on a silent writer.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import iii_channels
from iii.channels import ChannelReader, ChannelWriter
from iii_channels import ChannelIdleError, ChannelSink, ChannelSource
from iii_channels.cli import _check_out, _directory_target, _Refused
from iii_channels.files import check_receive_target
from iii_channels.trees import ENTRY_KEY
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(60)


async def _send_bytes(writer: ChannelWriter, data: bytes) -> None:
    async with ChannelSink(writer) as out:
        await out.write(data)


# ---- 1. special receive targets


@pytest.mark.parametrize("kind", ["fifo", "symlink", "dangling symlink"])
async def test_receive_file_refuses_a_target_that_is_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "target"
    real = tmp_path / "real.txt"
    real.write_text("old\n")
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "symlink":
        target.symlink_to(real)
    else:
        target.symlink_to(tmp_path / "nowhere")
    async with local_channel() as ch:
        receiving = iii_channels.receive_file(ch.reader, target)
        results = await asyncio.gather(_send_bytes(ch.writer, b"payload\n"), receiving, return_exceptions=True)
    error = results[1]
    assert isinstance(error, FileExistsError), results  # before: a FileReceipt, the target a regular file
    words = "a FIFO" if kind == "fifo" else "a symlink"
    assert f"{target} is {words}, not a regular file" in str(error)
    assert not target.is_file() or target.is_symlink()
    assert real.read_text() == "old\n"
    assert [name for name in os.listdir(tmp_path) if name.startswith(".iii-part-")] == []


def test_serve_out_refuses_a_symlink_or_device_before_connecting(tmp_path: Path) -> None:
    link = tmp_path / "stdout"
    link.symlink_to("/proc/self/fd/1")
    with pytest.raises(_Refused, match="is a symlink, not a regular file"):
        _check_out(str(link))
    with pytest.raises(FileExistsError, match="/dev/null is a character device"):
        check_receive_target("/dev/null")
    (tmp_path / "plain").write_text("x")
    assert check_receive_target(tmp_path / "plain") == (False, tmp_path)  # a regular file is still replaced


async def test_receive_file_overwrite_into_a_directory_keeps_a_fifo(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    os.mkfifo(tmp_path / "in" / "a.txt")
    (tmp_path / "a.txt").write_text("new")
    async with local_channel() as ch:
        results = await asyncio.gather(iii_channels.send_file(ch.writer, tmp_path / "a.txt"),
                                       iii_channels.receive_file(ch.reader, tmp_path / "in", overwrite=True),
                                       return_exceptions=True)
    assert isinstance(results[1], FileExistsError) and "is a FIFO" in str(results[1]), results
    assert (tmp_path / "in" / "a.txt").is_fifo()


async def test_receive_dir_refuses_a_symlink_destination(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    (tmp_path / "a.txt").write_text("a")
    async with local_channel() as ch:
        results = await asyncio.gather(iii_channels.send_files(ch.writer, [tmp_path / "a.txt"]),
                                       iii_channels.receive_dir(ch.reader, tmp_path / "link"), return_exceptions=True)
    assert isinstance(results[1], FileExistsError) and "is a symlink" in str(results[1]), results
    assert list((tmp_path / "empty").iterdir()) == []


# ---- 2. arguments checked up front


def test_a_progress_that_is_not_callable_is_refused_at_construction() -> None:
    reader = ChannelReader("ws://127.0.0.1:9", {"channel_id": "c", "access_key": "k", "direction": "read"})
    writer = ChannelWriter("ws://127.0.0.1:9", {"channel_id": "c", "access_key": "k", "direction": "write"})
    with pytest.raises(TypeError, match="progress must be None, True, False or a callable"):
        ChannelSource(reader, progress="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="progress must be"):
        iii_channels.sink(writer, progress=5)


async def test_send_file_with_a_bad_progress_fails_before_sending(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    async with local_channel() as ch:
        results = await asyncio.gather(iii_channels.send_file(ch.writer, tmp_path / "a", progress=5),  # type: ignore[arg-type]
                                       ChannelSource(ch.reader).read_all(), return_exceptions=True)
    assert isinstance(results[0], TypeError) and "progress" in str(results[0]), results
    assert isinstance(results[1], iii_channels.ChannelAbortedError), results


@pytest.mark.parametrize(("call", "name"), [
    (lambda s: s.read(1.5), "n"), (lambda s: s.read("3"), "n"), (lambda s: s.read(None), "n"),
    (lambda s: s.readexactly(2.0), "n"), (lambda s: s.readline(limit=1.5), "limit"),
    (lambda s: s.readuntil(b";", limit="9"), "limit"),
])
async def test_byte_counts_of_the_wrong_type_are_refused_naming_them(
        call: Callable[[ChannelSource], Awaitable[bytes]], name: str) -> None:
    async with local_channel() as ch:
        await _send_bytes(ch.writer, b"abc\ndef")
        source = ChannelSource(ch.reader)
        with pytest.raises(TypeError, match=f"^{name} must be a number of bytes"):
            await call(source)
        assert await source.read(-1) == b"abc\ndef"  # read(-1) reads to the end, as documented; nothing was lost


# ---- 3. trees no receiver can store; one rule for names


@pytest.mark.parametrize(("names", "message"), [
    (["x.txt", "x.txt"], "'x.txt' is named twice"),
    (["x", "x/y"], "'x' is a file, and a directory for 'x/y'"),
    (["x/y", "x"], "'x' is a file, and a directory for 'x/y'"),
])
async def test_send_files_refuses_names_that_clash_before_sending(tmp_path: Path, names: list[str],
                                                                  message: str) -> None:
    (tmp_path / "f").write_text("x")
    async with local_channel() as ch:
        results = await asyncio.gather(iii_channels.send_files(ch.writer, [(n, tmp_path / "f") for n in names]),
                                       ChannelSource(ch.reader).read_all(), return_exceptions=True)
    assert isinstance(results[0], ValueError) and message in str(results[0]), results  # before: it returned 2
    assert isinstance(results[1], iii_channels.ChannelAbortedError), results


@pytest.mark.parametrize("name", ["x\\y", "x\ny", "d/a\tb"])
async def test_receive_dir_holds_names_to_receive_file_rules(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="refusing the sender's file name"):
        iii_channels.files.checked_file_name(name.rpartition("/")[2])
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="refusing the sender's path"):  # the sender's up-front check
        iii_channels.trees.check_entry_path(name)
    async with local_channel() as ch:  # and the receiver, for a sender that does not check
        async def send() -> None:
            async with ChannelSink(ch.writer) as out:
                await out.send_text(json.dumps({ENTRY_KEY: {"path": name, "type": "dir"}}))
        results = await asyncio.gather(send(), iii_channels.receive_dir(ch.reader, tmp_path / "out"),
                                       return_exceptions=True)
    assert isinstance(results[1], iii_channels.IntegrityError), results  # before: a TreeReceipt
    assert not (tmp_path / "out").exists()


# ---- 4. an over-long name, found before receiving


def test_serve_refuses_an_over_long_name_before_receiving_and_cuts_it(tmp_path: Path) -> None:
    name = "n" * 300
    with pytest.raises(ValueError) as raised:
        _directory_target(tmp_path, name, False)
    message = str(raised.value)
    assert "300 bytes, more than the 255" in message
    assert name not in message and "n" * 40 + "…" + "n" * 16 in message


# ---- 5. json_records names the stream's line


async def test_json_records_says_where_its_line_numbers_count_from() -> None:
    async with local_channel() as ch:
        await _send_bytes(ch.writer, b'orders v1\n{"a": 1}\n\n{"b": 2}\nnot json\n')
        source = ChannelSource(ch.reader)
        assert await source.readline() == b"orders v1\n"
        # before: "line 4", the fifth line of the stream. Counting the stream's lines as they are read cost every
        # line read ~20 %, so the message says where its count began instead
        with pytest.raises(ValueError, match=r": line 4 of the lines json_records read \(it began at byte 10 of the "
                                             r"stream\) is not JSON"):
            async for _ in source.json_records():
                pass


async def test_json_records_from_the_start_names_the_stream_s_line() -> None:
    async with local_channel() as ch:
        await _send_bytes(ch.writer, b'[1]\nnot json\n')
        with pytest.raises(ValueError, match=r": line 2 is not JSON"):
            async for _ in ChannelSource(ch.reader).json_records():
                pass


# ---- 6. an idle bound on every reading adapter


async def _stalled(writer: ChannelWriter, stop: asyncio.Event) -> None:
    out = ChannelSink(writer)
    await out.send_text("starting")  # (text: bytes without an entry record would fail receive_dir at once)
    await out.drain()
    await stop.wait()
    await out.abort("test over")


def _to_stream(reader: ChannelReader, **kw: Any) -> Awaitable[int]:
    ours, theirs = socket.socketpair()

    async def run() -> int:
        try:
            _, stream = await asyncio.open_connection(sock=ours)
            return await iii_channels.to_stream(reader, stream, **kw)
        finally:
            theirs.close()
    return run()


def _to_fd(reader: ChannelReader, **kw: Any) -> Awaitable[int]:
    async def run() -> int:
        fd = os.open(os.devnull, os.O_WRONLY)
        try:
            return await iii_channels.to_fd(reader, fd, **kw)
        finally:
            os.close(fd)
    return run()


@pytest.mark.parametrize("adapter", ["to_process", "receive_dir", "copy", "to_stream", "to_fd"])
async def test_a_silent_writer_fails_the_reading_adapter_after_idle_timeout(tmp_path: Path, adapter: str) -> None:
    async with local_channel() as ch:
        onward = await ch.iii.create_channel_async()
        readers: dict[str, Callable[..., Awaitable[Any]]] = {
            "to_process": lambda **kw: iii_channels.to_process(ch.reader, ["cat"], stdout=asyncio.subprocess.DEVNULL,
                                                               **kw),
            "receive_dir": lambda **kw: iii_channels.receive_dir(ch.reader, tmp_path / "out", **kw),
            "copy": lambda **kw: iii_channels.copy(ch.reader, onward.writer, **kw),
            "to_stream": lambda **kw: _to_stream(ch.reader, **kw),
            "to_fd": lambda **kw: _to_fd(ch.reader, **kw),
        }
        stop = asyncio.Event()
        writing = asyncio.ensure_future(_stalled(ch.writer, stop))
        draining = asyncio.ensure_future(ChannelSource(onward.reader).read_all())
        try:
            with pytest.raises(ChannelIdleError, match=r"nothing from the writer for 0\.5 s"):
                await asyncio.wait_for(readers[adapter](idle_timeout=0.5), 20)  # before: a TypeError (no option)
        finally:
            stop.set()
            draining.cancel()  # (its writer is used by copy alone)
            await asyncio.gather(writing, draining, return_exceptions=True)
    assert not (tmp_path / "out").exists()


async def test_idle_timeout_is_checked_before_anything_starts() -> None:
    async with local_channel() as ch:
        with pytest.raises(ValueError, match="idle_timeout must be more than 0"):
            await iii_channels.to_process(ch.reader, ["cat"], idle_timeout=0)
        with pytest.raises(ValueError, match="idle_timeout is given to the ChannelSource"):
            await iii_channels.to_fd(ChannelSource(ch.reader), 1, idle_timeout=1.0)
