"""``iii-channel serve`` stopped by SIGTERM or SIGINT while a transfer is under way.

Before (attack E): ``serve --out -`` without ``--once`` stopped mid-transfer exited 0 with a partial stream on stdout
and said nothing (the cancellation the signal causes was never recorded as a failed transfer); with ``--once`` the
line read ``the transfer failed: `` with no reason; into a directory the partial file was removed, but serve still
exited 0 as if idle. Now each ends with status 1 and one line naming the transfer (and, on stdout, the bytes).
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.integration.channels import test_cli
from tests.polling import until

pytestmark = pytest.mark.timeout(30)
engine_url, serve = test_cli.engine_url, test_cli.serve  # the fixtures, shared
Serve = Callable[..., Awaitable[tuple[asyncio.subprocess.Process, str]]]

SENT = 1_000_000
FIRST = 64 << 10  # on stdout before serve is signalled


async def _sending(engine_url: str, function: str) -> asyncio.subprocess.Process:
    """A ``send -`` of ``part.bin`` with SENT bytes written to its stdin, which stays open (mid-transfer)."""
    sender = await test_cli._start("send", "-", "--name", "part.bin", "--to", function, "--engine", engine_url,
                                   stdin=asyncio.subprocess.PIPE)
    assert sender.stdin is not None
    sender.stdin.write(b"p" * SENT)
    await sender.stdin.drain()
    return sender


async def _stopped(server: asyncio.subprocess.Process, sender: asyncio.subprocess.Process,
                   sig: signal.Signals) -> tuple[test_cli.Done, test_cli.Done]:
    try:
        server.send_signal(sig)
        served = await test_cli._finish(server)
        sent = await test_cli._finish(sender, stdin=b"")  # its stdin ends now: the send fails or ends on its own
    finally:
        for proc in (server, sender):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    return served, sent


@pytest.mark.parametrize("once", [False, True], ids=["serving", "once"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_signal_mid_transfer_to_stdout_says_so_and_exits_1(
    serve: Serve, engine_url: str, sig: signal.Signals, once: bool,
) -> None:
    server, _ = await serve("--function", "files::cat", "--out", "-", *(["--once"] if once else []))
    assert server.stdout is not None
    sender = await _sending(engine_url, "files::cat")
    try:
        assert await asyncio.wait_for(server.stdout.readexactly(FIRST), 15) == b"p" * FIRST
    except BaseException:
        sender.kill()
        raise
    served, sent = await _stopped(server, sender, sig)
    written = FIRST + len(served.stdout)
    assert served.stdout == b"p" * (written - FIRST) and written <= SENT  # the rest may have come first
    assert served.rc == 1, served.stderr  # before: 0 (without --once), with nothing said
    lines = served.stderr.strip().splitlines()
    assert len(lines) == 1, served.stderr
    found = re.fullmatch(rf"iii-channel: error: the transfer of 'part\.bin' was interrupted by {sig.name} after up "
                         r"to (\d+) of its bytes were written to stdout: what is there is incomplete", lines[0])
    assert found is not None, lines[0]
    assert written <= int(found[1]) <= SENT
    assert sent.rc == 1 and "files::cat failed" in sent.stderr, sent.stderr  # the sender hears it too


async def test_a_signal_mid_transfer_into_a_directory_keeps_nothing_and_says_so(
    serve: Serve, engine_url: str, tmp_path: Path,
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    server, _ = await serve("--function", "files::in", "--out", str(inbox))
    sender = await _sending(engine_url, "files::in")
    try:
        await until(lambda: any(inbox.iterdir()))  # its part file: the transfer is under way
    except BaseException:
        sender.kill()
        raise
    served, sent = await _stopped(server, sender, signal.SIGTERM)
    assert served.rc == 1, served.stderr  # before: 0, as if serve had been idle
    assert served.stderr.strip().splitlines() == [
        "iii-channel: error: SIGTERM interrupted the transfer of 'part.bin': nothing of it was kept (its partial "
        "file was removed), and its sender was told it failed"], served.stderr
    assert list(inbox.iterdir()) == []
    assert sent.rc == 1, sent.stderr


async def test_a_signal_between_transfers_still_exits_0(serve: Serve, engine_url: str) -> None:
    server, _ = await serve("--function", "files::idle", "--out", "-")
    sent = await test_cli._finish(await test_cli._start("send", "-", "--to", "files::idle", "--engine", engine_url,
                                                        stdin=asyncio.subprocess.PIPE), stdin=b"whole")
    assert sent.rc == 0, sent.stderr
    server.send_signal(signal.SIGTERM)
    served = await test_cli._finish(server)
    assert (served.rc, served.stdout, served.stderr) == (0, b"whole", "")
