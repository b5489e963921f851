"""What a sender chose (its file name, its abort reason) reaches ``iii-channel serve``'s stderr with its unprintable
characters escaped, and a name that would drive a terminal or reorder itself is refused, not stored.

Before: a sender named ``\\x1b]0;PWNED-TITLE\\x07\\x1b[2J\\x1b[31mall transfers verified OK…`` had ``serve --out -``
print 8 raw ESC bytes with its progress lines (the window title set, the screen cleared, a fake status line); an
abort reason was printed raw twice (the SDK's "Error in handler" line and serve's error line); ``serve --out DIR``
stored a file named ``\\x9b2J\\x9b31mOK\\u202egpj.exe`` (C1 CSI sequences and a right-to-left override).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from iii import III
from iii.errors import InvocationError
from iii_channels.sink import ChannelSink
from tests.integration.channels.test_cli import SERVING, Done, _finish, _start

pytestmark = pytest.mark.timeout(30)

HOSTILE = "\x1b]0;PWNED-TITLE\x07\x1b[2J\x1b[31mall transfers verified OK\x1b[0m\u202egpj.exe"
# Raw, each of these drives a terminal (ESC, BEL, C1 CSI) or shows text in another order (RLO).
RAW = [b"\x1b", b"\x07", "\x9b".encode(), "\u202e".encode()]


async def _serving(engine_url: str, *args: str) -> asyncio.subprocess.Process:
    proc = await _start("serve", "--engine", engine_url, "--once", *args)
    assert proc.stderr is not None
    said = (await asyncio.wait_for(proc.stderr.readline(), 15)).decode()
    assert said.startswith(SERVING), said
    return proc


async def _stderr(proc: asyncio.subprocess.Process) -> tuple[int, bytes]:
    """The exit status and the raw bytes of the rest of ``proc``'s stderr (``_finish`` decodes them)."""
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, err


async def _call(engine_url: str, function_id: str, name: str, abort: str | None = None) -> object:
    """Call ``function_id`` as a hostile sender would: ``name`` announced, 8 bytes sent (then the channel aborted
    with ``abort``, when given); the answer, or the error it raised."""
    client = III(engine_url)
    try:
        await client.connect_async()
        channel = await client.create_channel_async()

        async def upload() -> None:
            if abort is not None:
                await channel.writer.write(b"payload\n")
                await channel.writer.abort(abort)
                return
            async with ChannelSink(channel.writer, trailer=True) as sink:
                await sink.write(b"payload\n")

        uploading = asyncio.ensure_future(upload())
        try:
            return await client.trigger_async({"function_id": function_id, "timeout_ms": 15000, "payload": {
                "reader": channel.reader_ref, "name": name, "size": 8}})
        except InvocationError as exc:
            return exc
        finally:
            await asyncio.gather(uploading, return_exceptions=True)
    finally:
        await client.shutdown_async()


async def test_a_senders_name_on_the_progress_lines_of_serve_to_stdout_is_escaped(engine_url: str) -> None:
    server = await _serving(engine_url, "--function", "esc::out", "--out", "-", "--progress", "always")
    answer = await _call(engine_url, "esc::out", HOSTILE)
    rc, err = await _stderr(server)
    assert rc == 0 and isinstance(answer, dict) and answer["verified"] is True, (answer, err)
    assert [raw for raw in RAW if raw in err] == [], err
    text = err.decode()
    # the name is there, escaped, on each progress line
    assert "\\x1b]0;PWNED-TITLE\\x07\\x1b[2J\\x1b[31mall transfers verified OK\\x1b[0m\\u202egpj.exe [" in text, text


async def test_a_senders_abort_reason_is_escaped_in_every_line_of_serve(engine_url: str, tmp_path: Path) -> None:
    server = await _serving(engine_url, "--function", "esc::abort", "--out", str(tmp_path), "--no-progress")
    answer = await _call(engine_url, "esc::abort", "a.bin", abort="gone\x1b]0;TITLE\x07\x1b[2J\u202eok")
    rc, err = await _stderr(server)
    assert isinstance(answer, InvocationError), answer
    assert rc == 1, err
    assert [raw for raw in RAW if raw in err] == [], err
    lines = err.decode().splitlines()
    # the SDK's log line of the handler's error, and serve's own error line: both quote the reason, escaped
    assert [line for line in lines if "gone\\x1b]0;TITLE\\x07\\x1b[2J\\u202eok" in line] == lines, lines
    assert len(lines) == 2 and lines[1].startswith("iii-channel: error: the transfer failed: "), lines


async def test_a_name_with_c1_controls_and_a_bidi_override_is_not_stored(engine_url: str, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    server = await _serving(engine_url, "--function", "esc::dir", "--out", str(inbox), "--no-progress")
    answer = await _call(engine_url, "esc::dir", "\x9b2J\x9b31mOK\u202egpj.exe")
    rc, err = await _stderr(server)
    assert isinstance(answer, InvocationError), answer
    assert "it contains a control character: \\x9b at character 1" in answer.message, answer.message
    assert list(inbox.iterdir()) == []
    assert rc == 1 and [raw for raw in RAW if raw in err] == [], err


async def test_send_prints_a_functions_answer_escaped(engine_url: str, tmp_path: Path) -> None:
    """A function's answer that does not confirm the transfer is quoted in send's error line: escaped too."""
    client = III(engine_url)
    await client.connect_async()
    try:
        client.register_function("esc::answer", lambda data: {"verified": False, "note": "\x1b[2J\u202eok\x9b"})
        await client.list_functions_async()  # a round trip: the registration is live once it answers
        source = tmp_path / "a.bin"
        source.write_bytes(b"a")
        done: Done = await _finish(await _start("send", str(source), "--to", "esc::answer", "--engine", engine_url,
                                                "--no-progress", "--allow-unverified"))
        assert done.rc == 0, done.stderr
        assert json.loads(done.stdout)["result"]["note"] == "\x1b[2J\u202eok\x9b"  # the receipt is JSON: escaped
        failed = await _finish(await _start("send", str(source), "--to", "esc::answer", "--engine", engine_url,
                                            "--no-progress"))
    finally:
        await client.shutdown_async()
    assert failed.rc == 1
    assert not any(char in failed.stderr for char in "\x1b\u202e\x9b"), failed.stderr
    # (JSON writes ESC as \\u001b already; the rest is escaped as every line of stderr is)
    assert '"note": "\\u001b[2J\\u202eok\\x9b"' in failed.stderr, failed.stderr



async def test_send_cuts_a_functions_long_error_before_escaping_it(engine_url: str, tmp_path: Path) -> None:
    """A function's error of right-to-left overrides is quoted in send's error line cut to its first and last
    characters (4096 in all), then escaped. Before: the ~10,000 characters the message arrives with, each escaped
    (``\\u202e``), made one line of ~60,000 characters; a peer whose errors are not cut on their way sends more."""
    def refuse(data: object) -> object:
        raise ValueError("\u202e" * 1_000_000 + " the end")

    client = III(engine_url)
    await client.connect_async()
    try:
        client.register_function("esc::long", refuse)
        await client.list_functions_async()  # a round trip: the registration is live once it answers
        source = tmp_path / "a.bin"
        source.write_bytes(b"a")
        failed = await _finish(await _start("send", str(source), "--to", "esc::long", "--engine", engine_url,
                                            "--no-progress"))
    finally:
        await client.shutdown_async()
    assert failed.rc == 1
    assert "\u202e" not in failed.stderr
    lines = failed.stderr.splitlines()
    assert len(lines) == 1 and len(lines[0]) < 4096 * 6 + 100, (len(lines), len(failed.stderr))
    head, cut, tail = re.split(r"…\((\d+) more characters\)…", lines[0])
    assert head == "iii-channel: error: esc::long failed: " + "\\u202e" * (4096 - 1365 - 38), head[:200]
    assert int(cut) > 0 and len(tail) >= 1365, (cut, tail[-200:])
