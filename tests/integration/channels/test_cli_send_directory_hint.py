"""``iii-channel send DIR`` refuses a directory with the command that sends it (it said only "send takes one
file"), and that command, run as given by /bin/sh, delivers the directory as one tar archive: to the engine and
with the options given (``--engine`` was dropped: the command went to ``$III_URL`` or the default engine), for a
name with blanks, quotes or a leading ``-``. A name the error line cannot show as it is (a newline, a byte that is
no UTF-8, two spaces) gets no command that would not work."""

from __future__ import annotations

import asyncio
import io
import os
import shlex
import signal
import sys
import tarfile
from pathlib import Path

import pytest

from iii_engine import Engine
from tests.integration.channels.test_cli import _env, _finish, _start

pytestmark = pytest.mark.timeout(30)

HINT = "; to send a directory: "
SAID = "is a directory; send takes one file (or - for stdin); "
NO_COMMAND = "archive it with tar and send the archive (its name cannot be shown as a command)"


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (``root``'s own name first), a file's bytes, ``None`` for a directory."""
    found: dict[str, bytes | None] = {root.name: None}
    for path in root.rglob("*"):
        found[str(Path(root.name) / path.relative_to(root))] = path.read_bytes() if path.is_file() else None
    return found


def _archived(data: bytes) -> dict[str, bytes | None]:
    found: dict[str, bytes | None] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for member in archive.getmembers():
            extracted = archive.extractfile(member) if member.isfile() else None
            found[member.name.rstrip("/")] = extracted.read() if extracted is not None else None
    return found


@pytest.mark.parametrize("name", ["my photos", "it's \"quoted\" $(x)", "-dash"])
async def test_the_printed_command_sends_the_directory_to_the_engine_given(
        engine: Engine, tmp_path: Path, name: str) -> None:
    tree = tmp_path / "from" / name
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_bytes(b"alpha")
    (tree / "sub" / "b.bin").write_bytes(bytes(range(256)) * 40)
    out = tmp_path / "inbox"
    out.mkdir()

    refused = await _finish(await _start("--engine", engine.url, "send", "--to", "files::tree", "--timeout-ms",
                                         "20000", "--no-progress", "--connect-timeout", "5", "--", f"{tree}/"))
    assert refused.rc == 1 and refused.stdout == b"", refused.stderr
    line = refused.stderr.removesuffix("\n")
    assert "\n" not in line and HINT in line, refused.stderr
    assert line.startswith(f"iii-channel: error: {tree}/ {SAID}")
    command = line.split(HINT, 1)[1]
    assert command == (f"tar c -C {shlex.quote(str(tree.parent))} -- {shlex.quote(name)} | iii-channel send - "
                       f"--to=files::tree --name={shlex.quote(name + '.tar')} --engine={engine.url} "
                       "--timeout-ms=20000 --progress=never --connect-timeout=5.0")

    server = await _start("serve", "--function", "files::tree", "--out", str(out), "--engine", engine.url)
    try:
        assert server.stderr is not None
        assert b"serving files::tree" in await asyncio.wait_for(server.stderr.readline(), 15)
        # the command as printed (the console script's name through this checkout's module), from elsewhere, with
        # $III_URL naming no engine: only the --engine printed reaches this one
        runnable = command.replace("iii-channel send", f"{shlex.quote(sys.executable)} -m iii_channels.cli send")
        shell = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", runnable, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**_env(), "III_URL": "ws://127.0.0.1:1"}, cwd=tmp_path)
        sent = await _finish(shell)
        assert sent.rc == 0, sent.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        await _finish(server)
    assert os.listdir(out) == [f"{name}.tar"]
    assert _archived((out / f"{name}.tar").read_bytes()) == _tree(tree)


@pytest.mark.parametrize("name", ["new\nline", "bad\udcff", "two  spaces"], ids=["newline", "not-utf8", "spaces"])
async def test_a_name_the_line_cannot_show_gets_no_command(tmp_path: Path, name: str) -> None:
    tree = tmp_path / name
    tree.mkdir()
    refused = await _finish(await _start("send", "--to", "files::tree", "--engine", "ws://127.0.0.1:1", "--",
                                         str(tree)))
    assert refused.rc == 1 and refused.stdout == b"", refused.stderr
    line = refused.stderr.removesuffix("\n")
    assert "\n" not in line and line.endswith(f" {SAID}{NO_COMMAND}"), refused.stderr
    assert "tar c" not in line
