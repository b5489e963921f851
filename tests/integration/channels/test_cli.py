"""``iii-channel`` end to end: a real engine process, ``serve`` and ``send`` each as their own subprocess."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, EngineProcess

SERVING = "serving "


@dataclass
class Done:
    """A finished CLI process."""

    rc: int
    stdout: bytes
    stderr: str


def _env() -> dict[str, str]:
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": pythonpath}


async def _start(*args: str, stdin: int | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "iii_channels.cli", *args, stdin=stdin, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=_env(), cwd=ROOT)


async def _finish(proc: asyncio.subprocess.Process, stdin: bytes | None = None, first: str = "") -> Done:
    out, err = await asyncio.wait_for(proc.communicate(stdin), 25)
    assert proc.returncode is not None
    return Done(proc.returncode, out, first + err.decode(errors="replace"))


async def _terminated(proc: asyncio.subprocess.Process, command: str) -> Done:
    """SIGTERM ``proc`` (an ``iii-channel COMMAND`` under way) and check it ended as SIGTERM should: exit 143 and
    the one line ``iii-channel: COMMAND: terminated``; killed if it did not end in time."""
    try:
        proc.send_signal(signal.SIGTERM)
        done = await _finish(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert done.rc == 143, done.stderr
    assert done.stderr == f"iii-channel: {command}: terminated\n", done.stderr
    return done


@pytest.fixture
async def engine_url(engine_process: Callable[..., Awaitable[EngineProcess]]) -> str:
    return (await engine_process()).url


@pytest.fixture
async def serve(engine_url: str) -> AsyncIterator[Callable[..., Awaitable[tuple[asyncio.subprocess.Process, str]]]]:
    """Factory: start ``iii-channel serve`` and wait for its "serving" line (printed once registered)."""
    started: list[asyncio.subprocess.Process] = []

    async def start(*args: str) -> tuple[asyncio.subprocess.Process, str]:
        proc = await _start("serve", "--engine", engine_url, *args)
        started.append(proc)
        assert proc.stderr is not None
        seen = ""
        while not seen.endswith("\n") or SERVING not in seen:
            line = (await asyncio.wait_for(proc.stderr.readline(), 15)).decode()
            if not line:
                raise AssertionError(f"serve exited early ({await proc.wait()}): {seen}")
            seen += line
        return proc, seen

    yield start
    for proc in started:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_send_file_to_a_directory(serve: Callable[..., Awaitable[tuple[asyncio.subprocess.Process, str]]],
                                        engine_url: str, tmp_path: Path) -> None:
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(3_000_000) + b"end")
    out = tmp_path / "out"
    out.mkdir()
    server, _ = await serve("--function", "files::recv", "--out", str(out), "--once")
    sender = await _finish(await _start("send", str(src), "--to", "files::recv", "--engine", engine_url))
    served = await _finish(server)
    assert sender.rc == 0, sender.stderr
    assert served.rc == 0, served.stderr
    receipt = json.loads(sender.stdout)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    assert receipt["sent"] == src.stat().st_size
    assert receipt["result"] == {"path": str(out / "payload.bin"), "bytes": src.stat().st_size,
                                 "sha256": digest, "verified": True}
    assert sorted(p.name for p in out.iterdir()) == ["payload.bin"]  # no temporary file left behind
    assert hashlib.sha256((out / "payload.bin").read_bytes()).hexdigest() == digest
    assert "\r" not in sender.stderr  # no bar drawn when stderr is not a terminal (auto)


async def test_stdin_to_stdout_with_progress_keeps_stdout_clean(
    serve: Callable[..., Awaitable[tuple[asyncio.subprocess.Process, str]]], engine_url: str,
) -> None:
    data = os.urandom(2_500_000)
    server, _ = await serve("--function", "files::cat", "--out", "-", "--once", "--progress", "always")
    # Drain the server's stdout while sending: it carries the data, more than a pipe buffer holds.
    serving = asyncio.ensure_future(_finish(server))
    sender = await _finish(
        await _start("send", "-", "--to", "files::cat", "--engine", engine_url, "--progress", "always",
                     stdin=asyncio.subprocess.PIPE),
        stdin=data)
    served = await serving
    assert sender.rc == 0, sender.stderr
    assert served.rc == 0, served.stderr
    assert served.stdout == data  # the bytes and nothing else: progress went to stderr
    assert "MiB" in served.stderr and "\r" not in served.stderr  # plain progress lines off a terminal
    assert "stdin" in sender.stderr and "MiB" in sender.stderr
    result = json.loads(sender.stdout)["result"]
    assert result == {"path": "-", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                      "verified": True}


async def test_empty_stdin(serve: Callable[..., Awaitable[tuple[asyncio.subprocess.Process, str]]],
                           engine_url: str, tmp_path: Path) -> None:
    target = tmp_path / "empty.bin"
    server, _ = await serve("--function", "files::one", "--out", str(target), "--once")
    sender = await _finish(await _start("send", "-", "--to", "files::one", "--engine", engine_url,
                                        stdin=asyncio.subprocess.PIPE), stdin=b"")
    assert (await _finish(server)).rc == 0
    assert sender.rc == 0, sender.stderr
    assert json.loads(sender.stdout)["result"]["bytes"] == 0
    assert target.read_bytes() == b""


async def test_unknown_function_fails_cleanly(engine_url: str, tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_bytes(b"hello")
    sender = await _finish(await _start("send", str(src), "--to", "nobody::home", "--engine", engine_url))
    assert sender.rc == 1
    assert sender.stdout == b""
    assert "iii-channel: error: nobody::home failed" in sender.stderr
    assert "not found" in sender.stderr
    assert "Traceback" not in sender.stderr


async def test_failing_store_reports_and_leaves_nothing(
    serve: Callable[..., Awaitable[tuple[asyncio.subprocess.Process, str]]], engine_url: str, tmp_path: Path,
) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(200_000))
    # serve refuses a missing --out directory at start (issue #8), so it goes away after serve started.
    (tmp_path / "no").mkdir()
    missing = tmp_path / "no" / "x.bin"
    server, _ = await serve("--function", "files::bad", "--out", str(missing), "--once")
    (tmp_path / "no").rmdir()
    sender = await _finish(await _start("send", str(src), "--to", "files::bad", "--engine", engine_url))
    served = await _finish(server)
    assert sender.rc == 1
    assert "files::bad failed" in sender.stderr and "does not exist" in sender.stderr
    assert served.rc == 1 and "the transfer failed" in served.stderr
    assert not (tmp_path / "no").exists()


async def test_missing_file_is_a_usage_error(engine_url: str, tmp_path: Path) -> None:
    sender = await _finish(await _start("send", str(tmp_path / "nope"), "--to", "x", "--engine", engine_url))
    assert sender.rc == 1
    assert "cannot read" in sender.stderr and "nope" in sender.stderr


async def test_existing_file_is_refused_unless_overwrite(
    serve: Callable[..., Awaitable[tuple[asyncio.subprocess.Process, str]]], engine_url: str, tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    first, second = tmp_path / "a" / "same.bin", tmp_path / "b" / "same.bin"
    for path, data in ((first, b"first " * 1000), (second, os.urandom(300_000))):
        path.parent.mkdir()
        path.write_bytes(data)

    async def send_once(function: str, src: Path, *serve_args: str) -> tuple[Done, Done]:
        server, _ = await serve("--function", function, "--out", str(out), "--once", *serve_args)
        sender = await _finish(await _start("send", str(src), "--to", function, "--engine", engine_url))
        return sender, await _finish(server)

    sender, served = await send_once("files::one", first)
    assert (sender.rc, served.rc) == (0, 0), sender.stderr + served.stderr

    sender, served = await send_once("files::two", second)
    assert sender.rc == 1 and served.rc == 1
    assert sender.stdout == b""
    assert sender.stderr.strip() == (f"iii-channel: error: files::two failed: {out / 'same.bin'} already exists "
                                     "on the receiver (serve --overwrite replaces files)")
    assert "Traceback" not in served.stderr and "already exists" in served.stderr
    assert (out / "same.bin").read_bytes() == first.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["same.bin"]

    sender, served = await send_once("files::three", second, "--overwrite")
    assert (sender.rc, served.rc) == (0, 0), sender.stderr + served.stderr
    assert json.loads(sender.stdout)["result"]["sha256"] == hashlib.sha256(second.read_bytes()).hexdigest()
    assert (out / "same.bin").read_bytes() == second.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["same.bin"]


async def test_unsafe_announced_name_is_refused(
    serve: Callable[..., Awaitable[tuple[asyncio.subprocess.Process, str]]], engine_url: str, tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    src = tmp_path / "a.bin"
    src.write_bytes(b"x" * 1000)
    server, _ = await serve("--function", "files::unsafe", "--out", str(out), "--once")
    sender = await _finish(await _start("send", str(src), "--to", "files::unsafe", "--name", "../escape.bin",
                                        "--engine", engine_url))
    served = await _finish(server)
    assert sender.rc == 1 and served.rc == 1
    assert "path separator" in sender.stderr
    assert list(out.iterdir()) == [] and not (tmp_path / "escape.bin").exists()
