"""``iii-channel send`` to a function that returns without reading the stream it was handed.

A user who names the wrong function (any function that ignores its ``reader``) gets the call's answer at once, but
the upload behind it waits for a reader that never attaches: the relay stops taking bytes once its buffers are full,
and ``send`` prints nothing and does not exit until the channel's attach deadline (300 s on our engine) or for good.
Once the called function has answered, an upload nobody takes must end the send with one error line, exit 1.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from iii import III
from iii.channels import ChannelReader
from iii_engine import Engine
from tests.integration.channels.test_cli import _finish, _start


async def test_send_to_a_function_that_ignores_the_stream_ends(engine: Engine, tmp_path: Path) -> None:
    worker = III(engine.url)
    await worker.connect_async()
    handed: list[ChannelReader] = []

    def ignores(data: dict[str, Any]) -> dict[str, bool]:
        handed.append(data["reader"])
        return {"ignored": True}

    worker.register_function("files::ignores", ignores)
    big = tmp_path / "big.bin"
    # Larger than what the relay and both sockets buffer, so the upload cannot finish without a reader.
    big.write_bytes(os.urandom(48 << 20))
    sender = await _start("send", str(big), "--to", "files::ignores", "--engine", engine.url)
    try:
        done: Any = await asyncio.wait_for(_finish(sender), 15)
    except TimeoutError:
        done = None
    finally:
        if sender.returncode is None:
            sender.kill()
            await sender.wait()
        await worker.shutdown_async()
        # The relay keeps the channel's writer loop waiting for room until the attach deadline (300 s), and the
        # engine fixture's stop waits for it: drop the channel so the teardown ends now.
        for reader in handed:
            engine.channels.discard(reader.ref.channel_id)
    assert handed, "the function was never called"
    assert done is not None, "iii-channel send still running 15 s after the function answered"
    assert done.rc == 1, done.stderr
    assert done.stderr.count("\n") == 1 and "files::ignores" in done.stderr, done.stderr
