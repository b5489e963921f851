"""Ctrl-C on ``iii-streams`` while it waits for a database: one line, and the process ends by SIGINT (status 130 in a
shell) as Python ends on an uncaught Ctrl-C, so that a shell loop running it stops (an exit status of 130 let the
loop go on)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from tests.packaging.helpers import ROOT


async def test_an_interrupted_command_ends_by_sigint_with_one_line() -> None:
    connected = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # a database that never answers: the command waits for it
        connected.set()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "iii_streams", "current", f"postgresql+asyncpg://app@127.0.0.1:{port}/db",
        stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        await asyncio.wait_for(connected.wait(), 20)
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for writer in held:
            writer.close()
        server.close()
    assert proc.returncode == -signal.SIGINT, err
    assert err.decode() == "iii-streams: current: interrupted\n"
