"""``iii-channel send`` of a FIFO or ``<(command)``: read like stdin, so SIGTERM ends it (143) at once.

It was read by ``send_file`` in executor threads (the open of a FIFO waits for its writer, each read for data),
which a signal cannot interrupt and ``asyncio.run`` waits for at exit: the send printed "terminated" and stayed
until the producer ended; of a FIFO nobody writes to, for good.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from iii.channels import ChannelReader
from iii_channels import ChannelSource
from iii_engine import Engine
from tests.integration.channels.test_cli import _finish, _start, _terminated
from tests.integration.channels.test_cli_send_confirmation import (
    Handler,
    worker,  # noqa: F401  (a fixture, used by its name)
)
from tests.polling import until


async def test_sigterm_ends_a_send_of_a_fifo_nobody_writes_to(
        engine: Engine, worker: Callable[[str, Handler], None], tmp_path: Path) -> None:  # noqa: F811
    called: concurrent.futures.Future[None] = concurrent.futures.Future()

    async def waits(data: dict[str, Any]) -> dict[str, bool]:
        called.set_result(None)
        reader: ChannelReader = data["reader"]
        await ChannelSource(reader).read_all()
        return {"verified": False}

    worker("files::waits", waits)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sender = await _start("send", str(fifo), "--to", "files::waits", "--engine", engine.url)
    try:
        await asyncio.wait_for(asyncio.wrap_future(called), 15)  # the transfer is under way
    finally:
        await _terminated(sender, "send")


async def test_a_fifo_is_sent_whole(
        engine: Engine, worker: Callable[[str, Handler], None], tmp_path: Path) -> None:  # noqa: F811
    async def stores(data: dict[str, Any]) -> dict[str, object]:
        source = ChannelSource(data["reader"], require_trailer=True)
        body = await source.read_all()
        return {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest(), "verified": source.verified,
                "name": data["name"]}

    worker("files::stores", stores)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sender = await _start("send", str(fifo), "--to", "files::stores", "--engine", engine.url)
    body = os.urandom(300_000)

    fd = -1

    def opened() -> bool:
        # Non-blocking: a blocking open in a thread never returned if the sender died first, and that thread held
        # pytest at its exit. ENXIO until the sender opens its end.
        nonlocal fd
        assert sender.returncode is None, "the sender ended before it opened the FIFO"
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            return False
        return True

    def produce() -> None:
        os.set_blocking(fd, True)  # the sender gone, a write fails (EPIPE) instead of waiting
        with open(fd, "wb") as out:
            out.write(body)

    await until(opened, within=15)
    await asyncio.to_thread(produce)
    done = await _finish(sender)
    assert done.rc == 0, done.stderr
    assert f'"sha256": "{hashlib.sha256(body).hexdigest()}", "verified": true, "name": "fifo"' in done.stdout.decode()
