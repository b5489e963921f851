"""``iii-channel`` given the address of a WebSocket server that is not an engine (here the engine's own stream socket,
which accepts the upgrade and never names the connection) fails in one line within about ``--connect-timeout``, or 5 s
after the upgrade when that is later (the SDK's own warning time: a loaded engine may name a connection late).

Before: ``send --connect-timeout 3`` took 33.5 s and ``serve`` 38.5 s; the useful line was the SDK's warning without
the command's prefix, and the error line said ``Invocation of 'engine::channels::create' timed out after 30000ms``
(``serve`` first said "could not check whether another worker serves …; going on").
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.integration.channels.test_cli import _start

pytestmark = pytest.mark.timeout(30)


async def _run(*args: str, within: float) -> tuple[int, str, float]:
    """``iii-channel ARGS`` to its end: ``(status, stderr, seconds)``; killed (and failed) after ``within`` s."""
    began = time.monotonic()
    proc = await _start(*args, stdin=asyncio.subprocess.DEVNULL)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), within)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, err.decode(errors="replace"), time.monotonic() - began


def _the_one_line(stderr: str, url: str, within: str) -> None:
    assert stderr == (f"iii-channel: error: {url} accepted the WebSocket upgrade but is not an iii engine: it did not "
                      f"name the connection (no workerregistered) within {within}. Is it the engine's worker port? "
                      "Its stream socket (3112 by default) accepts the upgrade too\n"), stderr


async def test_send_to_a_stream_socket_fails_5_s_after_the_upgrade(streams_url: str, tmp_path: Path) -> None:
    """A small --connect-timeout bounds reaching the server; the naming gets the SDK's own 5 s after the upgrade (an
    engine that names it late is one: test_cli_slow_naming.py), and the line states that wait."""
    source = tmp_path / "a.bin"
    source.write_bytes(b"a")
    rc, stderr, took = await _run("send", str(source), "--to", "files::x", "--engine", streams_url,
                                  "--connect-timeout", "0.5", "--progress", "always", within=20)
    assert rc == 1
    _the_one_line(stderr, streams_url, "5 s of the upgrade")
    assert 5 <= took < 5 + 6, took  # the process's start and end included (on a loaded machine)


async def test_serve_on_a_stream_socket_fails_in_one_line_past_the_sdks_warning(streams_url: str) -> None:
    """8 s: past the SDK's warning of a connection never named (5 s after the upgrade), the command's one line says
    it instead; the wait allowed is the whole --connect-timeout, later than 5 s after the upgrade."""
    rc, stderr, took = await _run("serve", "--function", "files::x", "--out", "-", "--engine", streams_url,
                                  "--connect-timeout", "8", within=25)
    assert rc == 1
    _the_one_line(stderr, streams_url, "8 s")
    assert 8 <= took < 8 + 6, took
