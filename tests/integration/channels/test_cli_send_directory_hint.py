"""``iii-channel send DIR`` refuses a directory with the command that sends it (it said only "send takes one
file"), and that command, run as given, delivers the directory as one tar archive."""

from __future__ import annotations

import asyncio
import shlex
import signal
import sys
import tarfile
from pathlib import Path

import pytest

from iii_engine import Engine
from tests.integration.channels.test_cli import ROOT, _env, _finish, _start

pytestmark = pytest.mark.timeout(30)

HINT = "; to send a directory: "


async def test_send_of_a_directory_gives_the_command_that_sends_it(engine: Engine, tmp_path: Path) -> None:
    tree = tmp_path / "my photos"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_bytes(b"alpha")
    (tree / "sub" / "b.bin").write_bytes(bytes(range(256)) * 40)
    out = tmp_path / "inbox"
    out.mkdir()

    refused = await _finish(await _start("send", f"{tree}/", "--to", "files::tree", "--engine", engine.url))
    assert refused.rc == 1 and refused.stdout == b"", refused.stderr
    line = refused.stderr.removesuffix("\n")
    assert "\n" not in line and HINT in line, refused.stderr
    assert line.startswith(f"iii-channel: error: {tree}/ is a directory; send takes one file (or - for stdin)")
    command = line.split(HINT, 1)[1]
    assert command == (f"tar c -C {tmp_path} 'my photos' | iii-channel send - --to files::tree "
                       "--name 'my photos.tar'")

    server = await _start("serve", "--function", "files::tree", "--out", str(out), "--engine", engine.url)
    try:
        assert server.stderr is not None
        assert b"serving files::tree" in await asyncio.wait_for(server.stderr.readline(), 15)
        # the command as printed (the console script's name through this checkout's module)
        runnable = command.replace("iii-channel send", f"{shlex.quote(sys.executable)} -m iii_channels.cli send")
        shell = await asyncio.create_subprocess_shell(
            f"{runnable} --engine {engine.url}", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=_env(), cwd=ROOT)
        sent = await _finish(shell)
        assert sent.rc == 0, sent.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        await _finish(server)
    with tarfile.open(out / "my photos.tar") as archive:
        names = sorted(archive.getnames())
        extracted = archive.extractfile("my photos/sub/b.bin")
        assert extracted is not None and extracted.read() == bytes(range(256)) * 40
    assert names == ["my photos", "my photos/a.txt", "my photos/sub", "my photos/sub/b.bin"]
