"""``iii-channel`` with a closed stdin or stdout, or a stdout that cannot take the receipt.

Before (attack E): ``send - <&-`` crashed with a traceback (``'NoneType' object has no attribute 'fileno'``);
``serve --out - >&-`` started, then failed every transfer with that text (its senders heard it too); ``send ... >
/dev/full`` stored the file, then exited 1 with only "No space left on device", as if the transfer had failed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.channels import test_cli

pytestmark = pytest.mark.timeout(30)
engine_url, serve = test_cli.engine_url, test_cli.serve  # the fixtures, shared


async def _run_closed(fd: int, *args: str) -> test_cli.Done:
    """``iii-channel ARGS`` with its file descriptor ``fd`` closed (``<&-`` / ``>&-``)."""
    stdout = asyncio.subprocess.DEVNULL if fd == 1 else asyncio.subprocess.PIPE
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "iii_channels.cli", *args, stdin=asyncio.subprocess.DEVNULL, stdout=stdout,
        stderr=asyncio.subprocess.PIPE, env=test_cli._env(), cwd=ROOT, preexec_fn=lambda: os.close(fd))
    try:
        return await test_cli._finish(proc)  # before, serve did not end: it waited for transfers to fail
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_send_stdin_closed_is_refused_at_start(engine_url: str) -> None:
    done = await _run_closed(0, "send", "-", "--to", "files::none", "--engine", engine_url)
    assert (done.rc, done.stdout) == (2, b""), done.stderr
    assert done.stderr == ("iii-channel: send -: stdin is closed, there is nothing to send (give a file, or "
                           "redirect stdin) (see iii-channel --help)\n")


async def test_send_with_stdout_closed_is_refused_at_start(engine_url: str, tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(b"x")
    done = await _run_closed(1, "send", str(src), "--to", "files::none", "--engine", engine_url)
    assert done.rc == 2, done.stderr  # before: 0, the receipt lost without a word (print() to None does nothing)
    assert done.stderr == ("iii-channel: send: stdout is closed, the receipt cannot be written there (redirect it "
                           "to /dev/null to drop it) (see iii-channel --help)\n")


async def test_serve_to_a_closed_stdout_is_refused_at_start(engine_url: str) -> None:
    done = await _run_closed(1, "serve", "--function", "files::none", "--out", "-", "--engine", engine_url)
    assert done.rc == 2, done.stderr
    assert done.stderr == ("iii-channel: serve --out -: stdout is closed, received bytes cannot be written there "
                           "(give a directory or a file, or redirect stdout) (see iii-channel --help)\n")


async def test_a_stored_transfer_whose_receipt_cannot_be_printed_says_it_succeeded(
    serve: Callable[..., Awaitable[tuple[asyncio.subprocess.Process, str]]], engine_url: str,
    tmp_path: Path,
) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(b"x" * 5000)
    out = tmp_path / "out"
    out.mkdir()
    server, _ = await serve("--function", "files::full", "--out", str(out), "--once")
    full = os.open("/dev/full", os.O_WRONLY)  # every write fails with ENOSPC
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "iii_channels.cli", "send", str(src), "--to", "files::full", "--engine",
            engine_url, stdout=full, stderr=asyncio.subprocess.PIPE, env=test_cli._env(), cwd=ROOT)
    finally:
        os.close(full)
    sent = await test_cli._finish(proc)
    served = await test_cli._finish(server)
    assert served.rc == 0, served.stderr
    assert (out / "a.bin").read_bytes() == src.read_bytes()
    assert sent.rc == 1
    lines = sent.stderr.splitlines()
    assert len(lines) == 1, sent.stderr  # before: "iii-channel: error: [Errno 28] No space left on device"
    prefix = "iii-channel: error: the transfer succeeded (5000 bytes sent, files::full answered "
    suffix = "), but its receipt could not be written to stdout (No space left on device)"
    assert lines[0].startswith(prefix) and lines[0].endswith(suffix), lines[0]
    # (the answer is cut to 200 characters in the line, its path as long as pytest's temporary directory)
    assert lines[0][len(prefix):-len(suffix)].startswith(json.dumps({"path": str(out / "a.bin"), "bytes": 5000},
                                                                    separators=(", ", ": "))[:-1])
