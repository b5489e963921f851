"""``iii-channel send`` fails at once when the function's answer already decides that it fails.

An answer without ``"verified": true`` fails the send (unless ``--allow-unverified``) whatever the upload does next,
yet ``send`` went on waiting for the upload to end or stall (5 s after the answer), and it left the channel in the
engine: a function that never reads leaves the bytes buffered there until the channel's attach deadline (300 s on
our engine). Now the answer ends the send: the writer is aborted and the channel's read end, never taken, is
claimed and closed, so the engine drops the channel and what it buffered at once.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from iii.channels import ChannelAbortedError, ChannelReader
from iii_engine import Engine
from tests.integration.channels.test_cli import _finish, _start
from tests.integration.channels.test_cli_send_confirmation import (
    Handler,
    worker,  # noqa: F401  (a fixture, used by its name)
)

NOT_CONFIRMED = ('iii-channel: error: files::ignores did not confirm the transfer (its answer has no "verified": '
                 'true): {"ignored": true} (--allow-unverified accepts such an answer)\n')


def register_ignores(register: Callable[[str, Handler], None]) -> list[float]:
    """Registers ``files::ignores`` with ``register`` (the ``worker`` fixture): it answers ``{"ignored": true}``
    without reading. Returns the times it answered."""
    answered: list[float] = []

    def ignores(data: dict[str, Any]) -> dict[str, bool]:
        answered.append(time.monotonic())
        return {"ignored": True}

    register("files::ignores", ignores)
    return answered


@pytest.mark.parametrize("size", [3, 48 << 20], ids=["small", "more-than-the-engine-buffers"])
async def test_an_unconfirming_answer_ends_the_send_and_frees_the_channel(
        engine: Engine, worker: Callable[[str, Handler], None], tmp_path: Path, size: int) -> None:  # noqa: F811
    answered = register_ignores(worker)
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(size))
    done = await _finish(await _start("send", str(src), "--to", "files::ignores", "--engine", engine.url))
    took = time.monotonic() - answered[0]
    assert done.rc == 1, done.stderr
    assert done.stderr == NOT_CONFIRMED
    # Before: 5 s for the upload nobody takes to count as stalled; the abort of a writer whose socket is backed
    # up takes up to 2 s (its Close frame waits behind the unsent bytes), the rest well under one.
    assert took < (1.5 if size < 1 << 20 else 3.5), f"exited {took:.2f} s after the answer"
    # Before: the channel stayed, its bytes buffered, until the attach deadline.
    await asyncio.wait_for(engine.channels.wait_idle(), 2)
    assert len(engine.channels) == 0


async def test_a_function_that_reads_after_its_unconfirming_answer_hears_why(
        engine: Engine, worker: Callable[[str, Handler], None], tmp_path: Path) -> None:  # noqa: F811
    # Before: the failed send claimed and closed the read end, so a function attaching its reader just after
    # answering got ChannelNotFoundError ("unknown id, wrong key or wrong direction") with nothing read.
    heard: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
    later: list[asyncio.Task[None]] = []

    async def read_later(reader: ChannelReader) -> None:
        await asyncio.sleep(0.3)
        try:
            await reader.read_all()
            heard.set_result(None)
        except Exception as exc:
            heard.set_result(exc)

    def answers_first(data: dict[str, Any]) -> dict[str, bool]:
        later.append(asyncio.get_running_loop().create_task(read_later(data["reader"])))
        return {"accepted": True}

    worker("files::answers_first", answers_first)  # (called on the worker's loop)
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(48 << 20))  # more than the engine buffers: the upload is still going at the answer
    done = await _finish(await _start("send", str(src), "--to", "files::answers_first", "--engine", engine.url))
    assert done.rc == 1, done.stderr
    exc = await asyncio.wait_for(heard, 10)
    assert isinstance(exc, ChannelAbortedError), repr(exc)
    assert "files::answers_first did not confirm the transfer" in str(exc), str(exc)
