"""Attack C2 on today's channel-adapter fixes: legitimate transfers they might refuse, and what they broke.

Faults found carry "(before: …)" in their docstring and failed on the code before their fix; the rest are guards
that held when written (a file changing size while sent, empty files, trees through the byte-only adapters,
subprocess exit handling, leaks over many runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import iii_channels
from iii.channels import ChannelReader, ChannelWriter
from iii_channels import ChannelSink, ChannelSource, FileChangedError, IntegrityError, ProcessError
from iii_channels.files import DEFAULT_CHUNK, file_header
from iii_channels.sink import DEFAULT_SINK_HIGH_WATER_MARK
from iii_engine.channels import ChannelRelay
from tests.polling import until
from tests.unit.channels.relay_server import relay_server

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(params=[False, True], ids=["ours", "production"])
async def any_relay(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, ChannelRelay]]:
    async with relay_server(ChannelRelay(production_mode=request.param, attach_timeout_s=5.0)) as served:
        yield served


@pytest.fixture
async def relay() -> AsyncIterator[tuple[str, ChannelRelay]]:
    async with relay_server(ChannelRelay(attach_timeout_s=5.0)) as served:
        yield served


def ends(base: str, relay: ChannelRelay, buffer_size: int | None = None) -> tuple[ChannelWriter, ChannelReader]:
    refs = relay.create(buffer_size, owner="w")
    return ChannelWriter(base, refs["writer"]), ChannelReader(base, refs["reader"])


# ------------------------------------------------------------------------- send_file / receive_file: legit transfers


@pytest.mark.parametrize("change", ["grows", "shrinks"])
async def test_a_file_changing_size_while_sent_fails_the_send_and_nothing_is_stored(
        any_relay: tuple[str, ChannelRelay], tmp_path: Path, change: str) -> None:
    """A file that changes while it is sent is not stored as if whole (432a8d0): the sender fails with
    FileChangedError and aborts the stream, on both relays (before, the verified trailer won and it was stored)."""
    # Three times the sink's high-water mark: the sender has read at most a third of it when the first chunk goes
    # out, which is when the file changes.
    size = 3 * DEFAULT_SINK_HIGH_WATER_MARK
    src = tmp_path / "log.txt"
    src.write_bytes(b"a" * size)
    changed: list[int] = []

    def on_progress(done: int, total: int | None) -> None:
        if not changed:
            with open(src, "r+b") as fh:
                if change == "grows":
                    fh.seek(0, os.SEEK_END)
                    fh.write(b"b" * 100_000)
                else:
                    fh.truncate(size * 2 // 3)
            changed.append(done)

    writer, reader = ends(*any_relay)
    (out := tmp_path / "in").mkdir()
    results = await asyncio.wait_for(asyncio.gather(
        iii_channels.send_file(writer, src, progress=on_progress),
        iii_channels.receive_file(reader, out / "copy", require_trailer=True), return_exceptions=True), 15)
    assert isinstance(results[0], FileChangedError), results[0]
    assert isinstance(results[1], Exception), results[1]  # aborted (ours) or no trailer (production): no receipt
    assert not (out / "copy").exists()


async def test_a_grown_file_without_trailer_is_refused_not_stored_short_or_long(
        relay: tuple[str, ChannelRelay], tmp_path: Path) -> None:
    """Without a trailer the sender's own check fails it (FileChangedError, 432a8d0), and the receiver stores
    nothing under the target."""
    size = 3 * DEFAULT_SINK_HIGH_WATER_MARK
    src = tmp_path / "log.txt"
    src.write_bytes(b"a" * size)

    def grow(done: int, total: int | None) -> None:
        if done <= DEFAULT_CHUNK:  # the first chunk went out; the sender has read at most a third of the file
            with open(src, "ab") as fh:
                fh.write(b"b" * 1000)

    writer, reader = ends(*relay)
    results = await asyncio.wait_for(asyncio.gather(
        iii_channels.send_file(writer, src, progress=grow, trailer=False),
        iii_channels.receive_file(reader, tmp_path / "copy"), return_exceptions=True), 15)
    assert isinstance(results[0], FileChangedError), results[0]
    assert isinstance(results[1], Exception), results[1]
    assert not (tmp_path / "copy").exists()


@pytest.mark.parametrize("trailer", [True, False])
@pytest.mark.parametrize("into", ["file", "directory"])
async def test_an_empty_file_is_received(any_relay: tuple[str, ChannelRelay], tmp_path: Path, trailer: bool,
                                         into: str) -> None:
    src = tmp_path / "empty.bin"
    src.write_bytes(b"")
    (out := tmp_path / "in").mkdir()
    writer, reader = ends(*any_relay)
    target = out if into == "directory" else out / "named"
    sent, receipt = await asyncio.wait_for(asyncio.gather(
        iii_channels.send_file(writer, src, trailer=trailer),
        iii_channels.receive_file(reader, target, require_trailer=trailer)), 10)
    assert sent == receipt.size == 0 and receipt.verified is trailer
    assert receipt.path == (out / "empty.bin" if into == "directory" else out / "named")
    assert receipt.path.read_bytes() == b""
    assert [p.name for p in out.iterdir()] == [receipt.path.name]


async def test_a_header_over_4_gib_is_compared_exactly(relay: tuple[str, ChannelRelay], tmp_path: Path) -> None:
    """A header announcing 4 GiB + 3 bytes, 3 bytes sent and no trailer: refused, naming both counts (no 32-bit
    wrap-around makes 3 look complete)."""
    writer, reader = ends(*relay)

    async def send() -> None:
        async with ChannelSink(writer, trailer=False) as sink:
            await sink.send_text(file_header("big.iso", (1 << 32) + 3))
            await sink.write(b"abc")

    results = await asyncio.wait_for(asyncio.gather(
        send(), iii_channels.receive_file(reader, tmp_path / "big.iso"), return_exceptions=True), 10)
    assert isinstance(results[1], IntegrityError)
    assert f"ended after 3 of the {(1 << 32) + 3} bytes" in str(results[1])


# --------------------------------------------------------------- text in the byte-only adapters (text_limit=0)


async def test_a_tree_stream_passes_through_the_byte_only_adapters(relay: tuple[str, ChannelRelay],
                                                                   tmp_path: Path) -> None:
    """send_dir interleaves entry headers, end records and the trailer with the bytes; to_fd keeps none of the text
    (text_limit=0) and refuses none of it, and verifies the trailer: the output is the files' bytes in order."""
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.bin").write_bytes(b"A" * 70_000)
    (tree / "sub" / "b.bin").write_bytes(b"B" * 5)
    (tree / "sub" / "empty").write_bytes(b"")
    writer, reader = ends(*relay)
    read_fd, write_fd = os.pipe()
    source = ChannelSource(reader, require_trailer=True, text_limit=0)
    try:
        loop = asyncio.get_running_loop()
        collected = loop.run_in_executor(None, _read_all_fd, read_fd)
        await asyncio.wait_for(asyncio.gather(
            iii_channels.send_dir(writer, tree), iii_channels.to_fd(source, write_fd)), 10)
    finally:
        os.close(write_fd)
    data = await collected
    os.close(read_fd)
    assert data == b"A" * 70_000 + b"B" * 5
    assert source.verified


async def test_text_far_past_the_default_limit_passes_a_byte_only_adapter(relay: tuple[str, ChannelRelay]) -> None:
    """20 Mi characters of text messages (over DEFAULT_TEXT_LIMIT) between the bytes: to_fd holds none of them."""
    writer, reader = ends(*relay)
    text = "t" * (1 << 20)

    async def send() -> None:
        async with ChannelSink(writer) as sink:
            for _ in range(20):
                await sink.send_text(text)
                await sink.write(b"x")

    read_fd, write_fd = os.pipe()
    try:
        collected = asyncio.get_running_loop().run_in_executor(None, _read_all_fd, read_fd)
        _, count = await asyncio.wait_for(asyncio.gather(send(), iii_channels.to_fd(reader, write_fd)), 20)
    finally:
        os.close(write_fd)
    assert count == 20 and await collected == b"x" * 20
    os.close(read_fd)


def _read_all_fd(fd: int) -> bytes:
    parts = []
    while chunk := os.read(fd, 1 << 16):
        parts.append(chunk)
    return b"".join(parts)


# ------------------------------------------------------------------------------------ serve --out -: the stdout lock


async def test_serve_to_stdout_a_second_sender_waiting_for_the_first_does_not_expire(
        capfd: pytest.CaptureFixture[bytes]) -> None:
    """(before: the second transfer's reader attached only once it had the stdout lock, so a sender waiting behind a
    transfer longer than the engine's attach deadline -- 300 s on ours -- got ChannelExpiredError, and its reader
    then failed with "not found": two legitimate transfers, one refused.)"""
    from iii_channels.cli import _store

    async with relay_server(ChannelRelay(attach_timeout_s=1.0)) as (base, relay):
        (w1, r1), (w2, r2) = ends(base, relay), ends(base, relay)
        go_on = asyncio.Event()

        async def slow_first() -> None:
            async with ChannelSink(w1) as sink:
                await sink.write(b"a" * 1000)
                await go_on.wait()
                await sink.write(b"a" * 1000)

        async def second() -> None:
            async with ChannelSink(w2) as sink:
                await sink.write(b"b" * 1000)
                await sink.drain()
                await go_on.wait()

        tasks = [asyncio.ensure_future(c) for c in (
            slow_first(), _store(r1, {"name": "a", "size": None}, "-", None))]
        await until(lambda: channel_state(relay, r1) == "attached")
        second_sender = asyncio.ensure_future(second())
        tasks += [second_sender, asyncio.ensure_future(_store(r2, {"name": "b", "size": None}, "-", None))]
        try:
            # Its reader attaches while it waits its turn (the deadline then no longer applies), or 1 s later the
            # channel expires.
            await until(lambda: channel_state(relay, r2) != "waiting", 5)
            assert channel_state(relay, r2) == "attached", "the waiting transfer's channel expired"
        finally:
            go_on.set()
            results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert capfd.readouterr().out == "a" * 2000 + "b" * 1000


def channel_state(relay: ChannelRelay, reader: ChannelReader) -> str:
    """"attached" (both ends were: the attach deadline no longer applies), "waiting" for an end, or "gone"."""
    channel = relay._channels.get(reader.ref.channel_id)
    if channel is None:
        return "waiting" if reader.ref.channel_id in relay._reserved else "gone"
    return "attached" if channel.machine.both_attached else "waiting"


# -------------------------------------------------------------------------------------- subprocesses: exit handling


async def test_a_slow_exiting_process_is_not_killed(relay: tuple[str, ChannelRelay]) -> None:
    """Closes stdout, works 1 s more, exits 0: within exit_timeout it is waited for, and the stream completes."""
    script = "import os, sys, time; sys.stdout.write('x' * 10); sys.stdout.flush(); os.close(1); time.sleep(1)"
    writer, reader = ends(*relay)
    source = ChannelSource(reader, require_trailer=True)
    sent, data = await asyncio.wait_for(asyncio.gather(
        iii_channels.from_process(writer, [sys.executable, "-c", script], exit_timeout=10), source.read_all()), 15)
    assert sent == 10 and data == b"x" * 10 and source.verified


async def test_stderr_of_megabytes_gives_its_tail(relay: tuple[str, ChannelRelay]) -> None:
    """A process writing 8 MB to stderr and 1 MB to stdout, exit 3: no pipe deadlock, the error carries the last
    64 KiB of stderr and the stream is aborted."""
    script = ("import sys; sys.stderr.write('e' * (8 << 20)); sys.stdout.write('o' * (1 << 20)); "
              "sys.stderr.write('THE END'); sys.exit(3)")
    writer, reader = ends(*relay)
    source = ChannelSource(reader)
    results = await asyncio.wait_for(asyncio.gather(
        iii_channels.from_process(writer, [sys.executable, "-c", script]), source.read_all(),
        return_exceptions=True), 20)
    error = results[0]
    assert isinstance(error, ProcessError) and error.returncode == 3
    assert len(error.stderr) == iii_channels.pipes.STDERR_TAIL and error.stderr.endswith(b"THE END")
    assert "exit status 3" in str(error) and str(error).endswith("THE END")
    assert isinstance(results[1], iii_channels.ChannelAbortedError)


async def test_kill_of_an_already_reaped_process_returns() -> None:
    from iii_channels.pipes import _kill

    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    await asyncio.wait_for(_kill(proc), 5)
    assert proc.returncode == 0


def _alive(pid: int) -> bool:
    """Running (a zombie has exited: in a container nobody may reap an orphan)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("how", ["cancelled", "exit_timeout", "failed"])
async def test_a_stopped_process_leaves_no_child_blocked_on_our_pipes(
        relay: tuple[str, ChannelRelay], tmp_path: Path, how: str) -> None:
    """A shell whose background child writes to stdout (a pipeline, ``cmd &``): killing the shell left the child
    writing into a pipe nobody read once asyncio's buffer filled, so it blocked for ever and our end of its pipes
    stayed open (before: the child ran on, two fds held, per run; now our ends are closed and it gets SIGPIPE)."""
    pidfile = tmp_path / "child.pid"
    # Cancelled mid-stream, its child writes to stdout; otherwise the shell closes stdout and its child writes to
    # stderr while the shell waits for ever (killed at exit_timeout) or exits 3.
    start = "yes &" if how == "cancelled" else "exec >&-; yes >&2 &"
    stop = "exit 3" if how == "failed" else "wait"
    script = f"{start} echo $! > {pidfile}; {stop}"
    writer, reader = ends(*relay)
    baseline = _open_fds()
    producing = asyncio.ensure_future(iii_channels.from_process(writer, ["sh", "-c", script], exit_timeout=0.2))
    try:
        if how == "cancelled":
            await asyncio.wait_for(ChannelSource(reader).readexactly(100_000), 10)
            producing.cancel()
        results = await asyncio.wait_for(asyncio.gather(
            producing, ChannelSource(reader).read_all(), return_exceptions=True), 10)
        assert isinstance(results[0], asyncio.CancelledError if how == "cancelled" else ProcessError), results[0]
        await until(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
        pid = int(pidfile.read_text())
        await until(lambda: not _alive(pid), 5)
        await until(lambda: _open_fds() <= baseline, 5)
    finally:
        if pidfile.exists() and pidfile.read_text().strip():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pidfile.read_text()), signal.SIGKILL)


async def test_waiting_for_a_process_to_exit_does_not_poll(relay: tuple[str, ChannelRelay]) -> None:
    """A process working 2 s after closing stdout: its exit is awaited through a pidfd, not by waking the loop every
    50 ms: ~20 wake-ups, at its exit (the trailer, the close handshake). Before: ~100, 20 a second while it ran,
    ~5 ms of CPU per second per process; to_process polled for as long as a command like sort worked after its
    input ended."""
    loop = asyncio.get_running_loop()
    selector = loop._selector  # type: ignore[attr-defined]
    real_select = selector.select
    wakeups = [0]

    def counting(timeout: float | None = None) -> object:
        wakeups[0] += 1
        return real_select(timeout)

    writer, reader = ends(*relay)
    source = ChannelSource(reader)
    script = "import os, sys, time; sys.stdout.write('x'); sys.stdout.flush(); os.close(1); time.sleep(2)"
    producing = asyncio.ensure_future(iii_channels.from_process(writer, [sys.executable, "-c", script]))
    assert await asyncio.wait_for(source.readexactly(1), 10) == b"x"
    selector.select = counting
    try:
        assert await asyncio.wait_for(producing, 10) == 1
    finally:
        selector.select = real_select
    assert wakeups[0] < 35, f"{wakeups[0]} loop wake-ups while the process ran 2 s on"
