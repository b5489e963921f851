"""Small edges of ``iii-channel`` and ``receive_dir``: each says one clear thing.

An empty ``--function`` printed a traceback (exit 1) and an empty ``--to`` said "failed: Function not found"
without naming it; a ``serve --out -`` whose stdout reader had ended went on serving, every later transfer failing
with "Broken pipe"; ``receive_dir`` named its hidden staging path instead of the entry, and said "1 bytes".
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from iii_channels import IntegrityError, receive_dir
from iii_channels.cli import main
from iii_channels.sink import ChannelSink
from iii_channels.trees import END_KEY, ENTRY_KEY
from iii_engine import Engine
from iii_engine.testing import local_channel
from tests.integration.channels.test_cli import ROOT, _env, _finish, _start


@pytest.mark.parametrize(("argv", "line"), [
    (["serve", "--function", "", "--out", "-"], "--function: a function id is required (got an empty one)"),
    (["send", "-", "--to", ""], "--to: a function id is required (got an empty one)"),
])
def test_an_empty_function_id_is_a_usage_error(argv: list[str], line: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--engine", "ws://127.0.0.1:9"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err == f"iii-channel: {line} (see iii-channel --help)\n", err


async def _stream(records: list[tuple[str, bytes]], tmp_path: Path) -> BaseException:
    async with local_channel() as ch:
        async def send() -> None:
            async with ChannelSink(ch.writer) as sink:
                for text, data in records:
                    await sink.send_text(text)
                    if data:
                        await sink.write(data)
        results = await asyncio.gather(send(), receive_dir(ch.reader, tmp_path / "dst"), return_exceptions=True)
    assert isinstance(results[1], BaseException), results
    return results[1]


async def test_receive_dir_names_the_entry_it_cannot_create(tmp_path: Path) -> None:
    done = json.dumps({END_KEY: {"bytes": 1, "sha256": hashlib.sha256(b"a").hexdigest()}})
    error = await _stream([(json.dumps({ENTRY_KEY: {"path": "a", "type": "file", "size": 1}}), b"a"), (done, b""),
                           (json.dumps({ENTRY_KEY: {"path": "a/b", "type": "file", "size": 1}}), b"")], tmp_path)
    assert isinstance(error, OSError), repr(error)
    assert "cannot create file entry 'a/b'" in str(error) and ".iii-part-" not in str(error), str(error)


async def test_one_byte_is_said_as_one_byte(tmp_path: Path) -> None:
    error = await _stream([(json.dumps({ENTRY_KEY: {"path": "a", "type": "file", "size": 1}}), b"a"),
                           (json.dumps({END_KEY: {"bytes": 1, "sha256": "0" * 64}}), b"")], tmp_path)
    assert isinstance(error, IntegrityError)
    assert "received 1 byte, not matching the sender's 1 byte / SHA-256" in str(error), str(error)


async def test_serve_to_a_closed_stdout_stops_with_one_line(engine: Engine, tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # whatever read serve's stdout has ended
    try:
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "iii_channels.cli", "serve", "--function", "files::out", "--out", "-",
            "--engine", engine.url, stdout=write_end, stderr=asyncio.subprocess.PIPE, env=_env(), cwd=ROOT)
    finally:
        os.close(write_end)
    try:
        assert server.stderr is not None
        assert b"serving files::out" in await asyncio.wait_for(server.stderr.readline(), 15)
        src = tmp_path / "a.bin"
        src.write_bytes(b"x" * 100_000)
        sent = await _finish(await _start("send", str(src), "--to", "files::out", "--engine", engine.url))
        assert sent.rc == 1
        assert "serve's stdout was closed (whatever read it ended)" in sent.stderr, sent.stderr
        err = (await asyncio.wait_for(server.stderr.read(), 15)).decode()
        assert await asyncio.wait_for(server.wait(), 15) == 1
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
    assert err.splitlines()[-1] == ("iii-channel: error: serve's stdout was closed (whatever read it ended): nothing "
                                    "more can be stored, and serve stops"), err
