"""``iii-channel send --stall-timeout``: after the function answered, the upload is given up only when no byte of
it moves for that long, not when one write waits.

With ``--allow-unverified`` (a function of one's own that answers first and reads on its own), the send used to
fail once any write had waited 5 s after the answer, though a reader slower than what the relay buffers in 5 s was
reading all the while. A reader that never attached must still fail the send, with one line.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from iii.channels import ChannelReader
from iii_engine import Engine
from tests.integration.channels.test_cli import Done, _finish, _start
from tests.integration.channels.test_cli_send_confirmation import (
    Handler,
    worker,  # noqa: F401  (a fixture, used by its name)
)

from .test_cli_send_unconfirmed_at_once import register_ignores

SIZE = 48 << 20  # more than the relay and both sockets buffer: most of it goes out after the answer
# Never read, an upload stops once every buffer on the way is full: the writer's send buffer (tcp_wmem, up to 4 MiB
# here), the engine's receive buffer (tcp_rmem, up to 32 MiB) and the relay's queue (16 MiB), 52 MiB with
# autotuning at its top; 48 MiB fitted whole in a loaded run (the send then ended 0). Twice that cannot.
NEVER_READ_SIZE = 96 << 20


async def _send(engine: Engine, src: Path, function_id: str, *extra: str) -> Done:
    return await _finish(await _start("send", str(src), "--to", function_id, "--engine", engine.url,
                                      "--allow-unverified", *extra))


async def test_a_reader_that_never_attached_fails_the_send_once_nothing_moves(
        engine: Engine, worker: Callable[[str, Handler], None], tmp_path: Path) -> None:  # noqa: F811
    answered = register_ignores(worker)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(NEVER_READ_SIZE))
    done = await _send(engine, src, "files::ignores", "--stall-timeout", "1")
    took = time.monotonic() - answered[0]
    assert done.rc == 1, done.stderr
    assert done.stderr.startswith('iii-channel: error: files::ignores answered without reading the channel: '
                                  '{"ignored": true} ('), done.stderr
    assert done.stderr.endswith(" of 96.0 MiB went out, then none for 1 s)\n"), done.stderr
    assert done.stderr.count("\n") == 1
    assert took < 4, f"exited {took:.2f} s after the answer"  # the buffers fill, 1 s, then the clean-up
    await asyncio.wait_for(engine.channels.wait_idle(), 2)  # the channel nobody read is gone with it


async def test_a_reader_slower_than_the_buffers_goes_on_to_the_end(
        engine: Engine, worker: Callable[[str, Handler], None], tmp_path: Path) -> None:  # noqa: F811
    """Answered at once, then read at 12 MB/s for 2.5 s: writes wait for longer than the stall timeout while
    bytes keep moving.

    The pace starts once the relay's queue is full (the upload waits on the reader from then on) and lasts a
    fixed amount, then the reader reads at full speed: more is left by then than every buffer on the way can hold
    (the queue's 16 MiB, and kernel-tuned socket buffers: up to 32 MiB a receive buffer here), so the upload is
    still writing throughout the pace. Before: paced from the answer to the end of 48 MiB, the upload ended in
    1.26 s under load (the buffers took most of it); or, its last write out, its close waited behind those
    buffers with nothing of its own moving for 2 s, and the send failed (the stall the test is not about)."""
    rate, paced = 12_000_000, 30_000_000
    size = 128 << 20
    received: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    test_loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []

    async def read_slowly(reader: ChannelReader) -> None:
        try:
            full = asyncio.run_coroutine_threadsafe(engine.channels.wait_full(reader.ref.channel_id), test_loop)
            await asyncio.wait_for(asyncio.wrap_future(full), 20)
            started, count = time.monotonic(), 0
            while (chunk := await reader.read_chunk()) is not None:
                count += len(chunk)
                ahead = count / rate - (time.monotonic() - started)
                if count <= paced and ahead > 0:
                    await asyncio.sleep(ahead)  # the reader's pace, not a synchronisation
        except BaseException as exc:
            test_loop.call_soon_threadsafe(received.set_exception, exc)
            raise
        test_loop.call_soon_threadsafe(received.set_result, count)

    async def accepts(data: dict[str, Any]) -> dict[str, bool]:
        tasks.append(asyncio.get_running_loop().create_task(read_slowly(data["reader"])))
        return {"accepted": True}

    worker("files::slow", accepts)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(size))
    started = time.monotonic()
    done = await _send(engine, src, "files::slow", "--stall-timeout", "2")
    took = time.monotonic() - started
    assert done.rc == 0, done.stderr
    assert json.loads(done.stdout) == {"sent": size, "result": {"accepted": True}}
    assert await asyncio.wait_for(received, 10) == size
    assert took > 2, f"the upload took {took:.2f} s: too fast to have waited on the reader"
