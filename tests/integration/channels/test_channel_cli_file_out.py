"""``iii-channel serve --out FILE``: a transfer never silently replaces the file another one stored or is storing.

Before (attack E): in file mode each transfer replaced the file, ``--overwrite`` and the "already exists" refusal
applied only to a directory ``--out``; two senders at once (or back to back) both exited 0 with ``"verified": true``
for the same path, and the file held only the last one's bytes. Now an existing file is kept unless ``--overwrite``,
and a transfer to the file while another one writes it is refused at once, with or without ``--overwrite``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.integration.channels import test_cli
from tests.polling import until

pytestmark = pytest.mark.timeout(30)
engine_url, serve = test_cli.engine_url, test_cli.serve  # the fixtures, shared
Serve = Callable[..., Awaitable[tuple[asyncio.subprocess.Process, str]]]


async def _send(engine_url: str, function: str, src: Path) -> test_cli.Done:
    return await test_cli._finish(await test_cli._start("send", str(src), "--to", function, "--engine", engine_url))


def _sources(tmp_path: Path) -> tuple[Path, Path]:
    first, second = tmp_path / "a.bin", tmp_path / "b.bin"
    first.write_bytes(b"a" * 200_000)
    second.write_bytes(b"b" * 300_000)
    return first, second


async def test_a_second_transfer_to_the_file_is_refused_without_overwrite(
    serve: Serve, engine_url: str, tmp_path: Path,
) -> None:
    first, second = _sources(tmp_path)
    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / "out.bin"
    server, _ = await serve("--function", "files::file", "--out", str(target))
    sent = await _send(engine_url, "files::file", first)
    assert sent.rc == 0 and json.loads(sent.stdout)["result"]["verified"] is True, sent.stderr
    sent = await _send(engine_url, "files::file", second)
    assert (sent.rc, sent.stdout) == (1, b""), sent.stderr  # before: 0, "verified": true, and a.bin's bytes gone
    assert sent.stderr == (f"iii-channel: error: files::file failed: {target} already exists on the receiver "
                           "(serve --overwrite replaces files)\n")
    assert target.read_bytes() == first.read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin"]
    assert server.returncode is None  # serve goes on, as into a directory


@pytest.mark.parametrize("overwrite", [False, True], ids=["refuse", "overwrite"])
async def test_a_transfer_while_another_writes_the_file_is_refused_at_once(
    serve: Serve, engine_url: str, tmp_path: Path, overwrite: bool,
) -> None:
    _, second = _sources(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    target = out / "out.bin"
    server, _ = await serve("--function", "files::busy", "--out", str(target), *(["--overwrite"] if overwrite else []))
    first = await test_cli._start("send", "-", "--name", "first.bin", "--to", "files::busy", "--engine", engine_url,
                                  stdin=asyncio.subprocess.PIPE)
    try:
        assert first.stdin is not None
        first.stdin.write(b"1" * 100_000)
        await first.stdin.drain()
        await until(lambda: any(out.iterdir()))  # its part file: the first transfer is under way
        refused = await _send(engine_url, "files::busy", second)
        assert (refused.rc, refused.stdout) == (1, b""), refused.stderr
        assert refused.stderr == (f"iii-channel: error: files::busy failed: {target} is being written by another "
                                  "transfer on the receiver now (one transfer at a time per file)\n")
        done = await test_cli._finish(first, stdin=b"1" * 100_000)
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
    assert done.rc == 0, done.stderr
    assert json.loads(done.stdout)["result"]["sha256"] == hashlib.sha256(b"1" * 200_000).hexdigest()
    assert target.read_bytes() == b"1" * 200_000
    assert sorted(p.name for p in out.iterdir()) == ["out.bin"]
    # once it is done, the file is free again: with --overwrite the next transfer replaces it
    again = await _send(engine_url, "files::busy", second)
    assert again.rc == (0 if overwrite else 1), again.stderr
    assert target.read_bytes() == (second.read_bytes() if overwrite else b"1" * 200_000)
    assert server.returncode is None
