"""Issue #8, ``iii-channel``: an unreachable engine is reported in one line, ``serve`` stops promptly on SIGTERM
even while the engine does not answer, bad paths fail before any channel is opened, and ``serve`` reclaims the
partial files dead receivers left in its output directory."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from iii_channels.files import PART_PREFIX
from tests.conftest import ROOT, EngineProcess

SERVING = "serving "


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


async def _cli(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "iii_channels.cli", *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env(), cwd=ROOT)


async def _done(proc: asyncio.subprocess.Process, within: float = 20) -> tuple[int, str]:
    _, err = await asyncio.wait_for(proc.communicate(), within)
    assert proc.returncode is not None
    return proc.returncode, err.decode(errors="replace")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BlackHole:
    """A TCP listener standing in for a broken engine: it accepts and then never answers (``hang``), or
    hangs up at once (the client retries with backoff). ``connected`` tells that a client tried."""

    def __init__(self, hang: bool = True) -> None:
        self.hang = hang
        self.connected = asyncio.Event()
        self._held: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def _accept(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._held.append(writer)
        if not self.hang:
            writer.close()
        self.connected.set()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}"

    async def __aexit__(self, *_: object) -> None:
        for writer in self._held:
            writer.close()
        assert self.server is not None
        self.server.close()


@pytest.fixture
async def black_hole() -> AsyncIterator[BlackHole]:
    hole = BlackHole()
    yield hole


async def test_send_to_an_unreachable_engine_says_so_in_one_line(tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(b"abc")
    url = f"ws://127.0.0.1:{_free_port()}"
    start = time.monotonic()
    rc, err = await _done(await _cli("send", str(src), "--to", "x::y", "--engine", url, "--connect-timeout", "1"))
    assert time.monotonic() - start < 8
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"iii-channel: error: cannot reach the engine at {url}"), err
    assert "Connection refused" in lines[0]


async def test_serve_with_the_engine_down_says_so_in_one_line(tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{_free_port()}"
    rc, err = await _done(await _cli("serve", "--function", "f::g", "--out", str(tmp_path), "--engine", url,
                                     "--connect-timeout", "1"))
    assert rc == 1
    assert err.strip().splitlines() == [err.strip()] and f"cannot reach the engine at {url}" in err, err


@pytest.mark.parametrize("hang", [True, False], ids=["handshake-hangs", "hangs-up"])
async def test_serve_exits_promptly_on_sigterm_while_the_engine_is_down(tmp_path: Path, hang: bool) -> None:
    black_hole = BlackHole(hang)
    async with black_hole as url:
        proc = await _cli("serve", "--function", "f::g", "--out", str(tmp_path), "--engine", url)
        # serve installs its signal handlers before it connects, so once it knocked it handles SIGTERM.
        await asyncio.wait_for(black_hole.connected.wait(), 15)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc, err = await _done(proc, 10)
        elapsed = time.monotonic() - start
    assert elapsed < 2.0, f"took {elapsed:.2f} s"
    assert rc == 0, err


@pytest.mark.parametrize(
    ("args", "words", "rc"),
    [
        (["serve", "--function", "f::g", "--out", "/missing/dir/"], "directory /missing/dir/ does not exist", 1),
        (["serve", "--function", "f::g", "--out", "/missing/dir/x.bin"], "/missing/dir", 1),
        (["send", "{tmp}", "--to", "f::g"], "is a directory", 1),
        (["send", "{tmp}/nothing.bin", "--to", "f::g"], "No such file or directory", 1),
        (["send", "-", "--to", "f::g", "--engine", "http://127.0.0.1:1"], "scheme 'http'", 2),
        (["send", "-", "--to", "f::g", "--connect-timeout", "0"], "--connect-timeout", 2),
    ],
)
async def test_bad_paths_fail_before_any_connection(
    tmp_path: Path, black_hole: BlackHole, args: list[str], words: str, rc: int
) -> None:
    async with black_hole as url:
        argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
        if "--engine" not in argv:
            argv += ["--engine", url]
        got, err = await _done(await _cli(*argv))
        assert not black_hole.connected.is_set()  # failed before touching the engine
    assert got == rc, err
    lines = err.strip().splitlines()
    assert words in lines[-1], err
    if rc == 1:
        assert len(lines) == 1, err  # usage errors (2) come with argparse's usage text


def _dead_pid() -> int:
    out = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                         check=True, timeout=20)
    return int(out.stdout)


@pytest.fixture
async def engine_url(engine_process: Callable[..., Awaitable[EngineProcess]]) -> str:
    return (await engine_process()).url


async def test_serve_reclaims_dead_partial_files_in_its_directory(engine_url: str, tmp_path: Path) -> None:
    dead = _dead_pid()
    stale = tmp_path / f"{PART_PREFIX}{dead}-abcdabcd"
    stale.write_bytes(b"s" * 5000)
    keep = tmp_path / "finished.bin"
    keep.write_bytes(b"k")
    proc = await _cli("serve", "--function", "f::reclaim", "--out", str(tmp_path), "--engine", engine_url)
    try:
        assert proc.stderr is not None
        seen = ""
        while SERVING not in seen:
            line = (await asyncio.wait_for(proc.stderr.readline(), 15)).decode()
            assert line, f"serve exited: {seen}"
            seen += line
        assert not stale.exists()
        assert keep.exists()
        assert "removed 1 stale partial file" in seen and "5000 bytes" in seen
    finally:
        proc.send_signal(signal.SIGTERM)
        await _done(proc, 10)
