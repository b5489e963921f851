"""``iii-channel`` with a stderr closed (``2>&-``), that cannot be written (``/dev/full``), or that nobody reads.

Before (attack C, fault 5): ``send FILE --to F 2>&-`` exited 1 without a word (``sys.stderr.isatty()`` on
``None``), ``serve … 2>&-`` exited 1 without serving, and ``--progress always`` with stderr ``/dev/full`` failed the
transfer. Progress is a courtesy: both run now as with ``--progress never``, the receipt on stdout.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from iii import III
from tests.conftest import ROOT
from tests.integration.channels import test_cli
from tests.stuck_pipe import with_stuck_stderr

pytestmark = pytest.mark.timeout(30)
engine_url, serve = test_cli.engine_url, test_cli.serve  # the fixtures, shared


async def _send(src: Path, function: str, engine_url: str, *options: str, stderr: int | None = None,
                close_stderr: bool = False) -> test_cli.Done:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "iii_channels.cli", "send", str(src), "--to", function, "--engine", engine_url,
        *options, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=stderr if stderr is not None else asyncio.subprocess.PIPE, env=test_cli._env(), cwd=ROOT,
        preexec_fn=(lambda: os.close(2)) if close_stderr else None)
    out, err = await asyncio.wait_for(proc.communicate(), 25)
    assert proc.returncode is not None
    return test_cli.Done(proc.returncode, out, (err or b"").decode(errors="replace"))


@pytest.mark.parametrize("options", [(), ("--progress", "always")])
async def test_send_with_stderr_closed_sends(serve: Callable[..., Awaitable[tuple[asyncio.subprocess.Process, str]]],
                                             engine_url: str, tmp_path: Path, options: tuple[str, ...]) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(3_000_000))
    out = tmp_path / "out"
    out.mkdir()
    server, _ = await serve("--function", "files::quiet", "--out", str(out), "--once")
    sent = await _send(src, "files::quiet", engine_url, *options, close_stderr=True)
    assert sent.rc == 0, sent  # before: 1, nothing said, nothing sent
    receipt = json.loads(sent.stdout)
    assert receipt["result"]["verified"] is True and receipt["sent"] == 3_000_000
    assert (out / "a.bin").read_bytes() == src.read_bytes()
    assert (await test_cli._finish(server)).rc == 0


async def test_send_with_progress_to_a_full_stderr_sends(
    serve: Callable[..., Awaitable[tuple[asyncio.subprocess.Process, str]]], engine_url: str, tmp_path: Path,
) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(3_000_000))
    out = tmp_path / "out"
    out.mkdir()
    server, _ = await serve("--function", "files::full_err", "--out", str(out), "--once")
    full = os.open("/dev/full", os.O_WRONLY)  # every write fails with ENOSPC
    try:
        sent = await _send(src, "files::full_err", engine_url, "--progress", "always", stderr=full)
    finally:
        os.close(full)
    assert sent.rc == 0, sent  # before: 1, the transfer failed on the progress bar's write
    assert json.loads(sent.stdout)["result"]["verified"] is True
    assert (out / "a.bin").read_bytes() == src.read_bytes()
    assert (await test_cli._finish(server)).rc == 0


async def _registered(engine_url: str, function: str, within: float = 15.0) -> None:
    """Wait (polling the engine's function list) until ``function`` is registered."""
    client = III(engine_url)
    await client.connect_async()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while function not in {f.function_id for f in await client.list_functions_async()}:
            assert loop.time() < deadline, f"{function} not registered within {within} s"
            await asyncio.sleep(0.05)
    finally:
        await client.shutdown_async()


async def test_serve_to_stdout_with_stderr_closed_serves_only_the_data(engine_url: str, tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(100_000))
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "iii_channels.cli", "serve", "--function", "files::cat_quiet", "--out", "-", "--once",
        "--engine", engine_url, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        env=test_cli._env(), cwd=ROOT, preexec_fn=lambda: os.close(2))
    try:
        await _registered(engine_url, "files::cat_quiet")  # before: serve exited 1 without registering
        sent = await _send(src, "files::cat_quiet", engine_url, "--progress", "never")
        assert sent.rc == 0, sent
        data, _ = await asyncio.wait_for(server.communicate(), 25)
        assert server.returncode == 0
        assert data == src.read_bytes()  # "serving …" never lands among the bytes on stdout
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="F_SETPIPE_SZ is Linux's")


@linux_only
async def test_send_with_progress_to_a_stderr_nobody_reads_sends(
    serve: Callable[..., Awaitable[tuple[asyncio.subprocess.Process, str]]], engine_url: str, tmp_path: Path,
) -> None:
    """Before: the first progress line blocked the event loop for good (SIGTERM ignored too)."""
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(3_000_000))
    out = tmp_path / "out"
    out.mkdir()
    server, _ = await serve("--function", "files::stuck_err", "--out", str(out), "--once")
    async with with_stuck_stderr(
            sys.executable, "-m", "iii_channels.cli", "send", str(src), "--to", "files::stuck_err", "--engine",
            engine_url, "--progress", "always", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            env=test_cli._env(), cwd=ROOT) as proc:
        stdout, _ = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0
    assert json.loads(stdout)["result"]["verified"] is True
    assert (out / "a.bin").read_bytes() == src.read_bytes()
    assert (await test_cli._finish(server)).rc == 0


@linux_only
async def test_serve_with_a_stderr_nobody_reads_serves_and_stops_on_sigterm(engine_url: str, tmp_path: Path) -> None:
    """Before: serve blocked on its "serving" line once registered, and SIGTERM never ended it."""
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(1_000_000))
    out = tmp_path / "out"
    out.mkdir()
    async with with_stuck_stderr(
            sys.executable, "-m", "iii_channels.cli", "serve", "--function", "files::stuck_serve", "--out", str(out),
            "--engine", engine_url, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            env=test_cli._env(), cwd=ROOT) as server:
        await _registered(engine_url, "files::stuck_serve")
        sent = await _send(src, "files::stuck_serve", engine_url, "--progress", "never")
        assert sent.rc == 0, sent
        assert (out / "a.bin").read_bytes() == src.read_bytes()
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), 5) == 0


@linux_only
async def test_serve_with_a_stderr_nobody_reads_answers_a_refused_transfer(engine_url: str, tmp_path: Path) -> None:
    """The SDK logs "Error in handler F: …" for a refused transfer, on its client's loop thread. Before: with a stderr
    nobody read, that line blocked the thread, the refusal never reached its sender, and SIGTERM never ended serve."""
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(1000))
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.bin").write_bytes(b"kept")
    async with with_stuck_stderr(
            sys.executable, "-m", "iii_channels.cli", "serve", "--function", "files::stuck_refuse", "--out",
            str(out), "--engine", engine_url, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            env=test_cli._env(), cwd=ROOT) as server:
        await _registered(engine_url, "files::stuck_refuse")
        sender = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "iii_channels.cli", "send", str(src), "--to", "files::stuck_refuse",
            "--engine", engine_url, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=test_cli._env(), cwd=ROOT)
        try:
            _, err = await asyncio.wait_for(sender.communicate(), 10)
        finally:
            if sender.returncode is None:
                sender.kill()
                await sender.wait()
        assert sender.returncode == 1 and b"already exists on the receiver" in err, err
        assert (out / "a.bin").read_bytes() == b"kept"
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), 5) == 0
