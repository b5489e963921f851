"""``iii-channel serve --out -`` once a transfer fails after some of its bytes were written to stdout.

Before (the attack): a ``send -`` SIGKILLed mid-transfer left its 8.9 MB on stdout, serve stayed up, and the next
transfer's bytes were appended with nothing between them, so ``| tar x`` or ``> all.bin`` got a corrupt stream with
no sign but one line on stderr. Now serve stops with one line naming the transfer and the bytes written, status 1.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tests.integration.channels import test_cli

pytestmark = pytest.mark.timeout(30)
engine_url, serve = test_cli.engine_url, test_cli.serve  # the fixtures, shared

SENT = 1_000_000
FIRST = 64 << 10  # on stdout before the sender is killed (how much more follows does not matter: it is counted)


async def test_a_sender_killed_mid_transfer_stops_serve_with_the_bytes_it_left_on_stdout(
    serve: Callable[..., Awaitable[tuple[asyncio.subprocess.Process, str]]], engine_url: str,
) -> None:
    server, _ = await serve("--function", "files::cat", "--out", "-")
    assert server.stdout is not None
    sender = await test_cli._start("send", "-", "--name", "part.tar", "--to", "files::cat", "--engine", engine_url,
                                   stdin=asyncio.subprocess.PIPE)
    try:
        assert sender.stdin is not None
        sender.stdin.write(b"p" * SENT)
        await sender.stdin.drain()
        assert await asyncio.wait_for(server.stdout.readexactly(FIRST), 15) == b"p" * FIRST
        sender.kill()  # mid-transfer: its stdin still open, no trailer sent
        await sender.wait()
        served = await test_cli._finish(server)
    finally:
        if sender.returncode is None:
            sender.kill()
            await sender.wait()
    assert served.rc == 1, served.stderr
    written = FIRST + len(served.stdout)  # the rest of stdout: the sender's bytes only, never another transfer's
    assert FIRST <= written <= SENT and served.stdout == b"p" * (written - FIRST)
    last = served.stderr.strip().splitlines()[-1]
    assert last.startswith(f"iii-channel: error: the transfer of 'part.tar' failed after {written} of its bytes "
                           "were written to stdout ("), last
    assert last.endswith("); serve stops, so that no later transfer follows them there"), last
