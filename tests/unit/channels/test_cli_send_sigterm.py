"""SIGTERM on ``iii-channel send`` in the middle of a transfer: cleaned up like Ctrl-C, one line, exit 143.

A service manager or ``docker stop`` sends SIGTERM. The send used to die of it at once: no abort (the receiver saw
the writer's connection drop), no shutdown of the client, no line, and the signal's own exit status.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any

from iii.channels import ChannelAbortedError, ChannelReader
from iii_engine import Engine
from tests.integration.channels.test_cli import _start, _terminated
from tests.integration.channels.test_cli_send_confirmation import (
    Handler,
    worker,  # noqa: F401  (a fixture, used by its name)
)


async def test_sigterm_aborts_the_upload_and_exits_143(
        engine: Engine, worker: Callable[[str, Handler], None]) -> None:  # noqa: F811
    reading: concurrent.futures.Future[None] = concurrent.futures.Future()
    ended: concurrent.futures.Future[BaseException | None] = concurrent.futures.Future()

    async def reads(data: dict[str, Any]) -> dict[str, bool]:
        reader: ChannelReader = data["reader"]
        try:
            while (chunk := await reader.read_chunk()) is not None:
                if chunk and not reading.done():
                    reading.set_result(None)
        except Exception as exc:
            ended.set_result(exc)
            raise
        ended.set_result(None)
        return {"verified": False}

    worker("files::reads", reads)
    sender = await _start("send", "-", "--to", "files::reads", "--name", "part.bin", "--engine", engine.url,
                          stdin=asyncio.subprocess.PIPE)
    try:
        assert sender.stdin is not None
        sender.stdin.write(b"x" * 1_000_000)  # stdin stays open: the transfer is under way when terminated
        await sender.stdin.drain()
        await asyncio.wait_for(asyncio.wrap_future(reading), 15)
    finally:
        await _terminated(sender, "send")
    error = await asyncio.wait_for(asyncio.wrap_future(ended), 5)
    assert isinstance(error, ChannelAbortedError), repr(error)
    assert "iii-channel send terminated" in str(error), str(error)  # the sender's abort, not a dropped connection
