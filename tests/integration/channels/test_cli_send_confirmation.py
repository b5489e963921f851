"""``iii-channel send`` exits 0 only when the called function's answer confirms the transfer.

A function that answers without reading (a wrong ``--to``) used to give exit 0 and a receipt for a small file: its
bytes fit in the relay's buffers, so the upload "succeeded" into a channel nobody ever read. The answer of
``iii-channel serve`` carries ``"verified": true`` (the receiver checked the integrity trailer) and the byte count;
anything else fails the send with one line, unless ``--allow-unverified``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from iii import III
from iii.channels import ChannelReader
from iii_channels import receive_file
from iii_engine import Engine
from tests.integration.channels.test_cli import Done, _finish, _start

Handler = Callable[[dict[str, Any]], Any]


@pytest.fixture
async def worker(engine: Engine) -> AsyncIterator[Callable[[str, Handler], None]]:
    """Registers functions on a worker of the engine; forgets the channels they were handed at the end."""
    client = III(engine.url)
    await client.connect_async()
    handed: list[ChannelReader] = []

    def register(function_id: str, handler: Handler) -> None:
        async def keeping(data: dict[str, Any]) -> Any:
            handed.append(data["reader"])
            result = handler(data)
            return await result if inspect.isawaitable(result) else result
        client.register_function(function_id, keeping)

    yield register
    await client.shutdown_async()
    # A channel whose reader never attached waits for the attach deadline (300 s) in the relay: drop it now.
    for reader in handed:
        engine.channels.discard(reader.ref.channel_id)


async def _send(engine: Engine, src: Path, function_id: str, *extra: str) -> Done:
    return await _finish(await _start("send", str(src), "--to", function_id, "--engine", engine.url, *extra))


@pytest.fixture
def small(tmp_path: Path) -> Path:
    src = tmp_path / "small.txt"
    src.write_bytes(b"abc")
    return src


async def test_an_answer_without_verified_fails_the_send(
        engine: Engine, worker: Callable[[str, Handler], None], small: Path) -> None:
    worker("files::ignores", lambda data: {"ignored": True})
    done = await _send(engine, small, "files::ignores")
    assert done.rc == 1, done.stderr
    assert done.stdout == b""  # no receipt for a transfer nobody confirmed
    assert done.stderr == ('iii-channel: error: files::ignores did not confirm the transfer (its answer has no '
                           '"verified": true): {"ignored": true} (--allow-unverified accepts such an answer)\n')


async def test_allow_unverified_prints_the_receipt(
        engine: Engine, worker: Callable[[str, Handler], None], small: Path) -> None:
    worker("files::ignores", lambda data: {"ignored": True})
    done = await _send(engine, small, "files::ignores", "--allow-unverified")
    assert done.rc == 0, done.stderr
    assert json.loads(done.stdout) == {"sent": 3, "result": {"ignored": True}}


@pytest.mark.parametrize(("answer", "why"), [
    ({"bytes": 3, "verified": False}, 'did not verify the transfer ("verified": false)'),
    ({"bytes": 2, "verified": True}, "verified 2 bytes, but 3 were sent"),
    ("stored", 'did not confirm the transfer (its answer has no "verified": true)'),
])
async def test_an_answer_that_does_not_match_fails_the_send(
        engine: Engine, worker: Callable[[str, Handler], None], small: Path, answer: object, why: str) -> None:
    worker("files::claims", lambda data: answer)
    done = await _send(engine, small, "files::claims")
    assert done.rc == 1, done.stderr
    assert done.stderr.count("\n") == 1 and f"files::claims {why}: {json.dumps(answer)}" in done.stderr, done.stderr


async def test_a_function_that_reads_after_answering_is_not_cut_off(
        engine: Engine, worker: Callable[[str, Handler], None], tmp_path: Path) -> None:
    """Answered at once, the stream read by a task of the function's own: the upload goes on while it moves."""
    received: concurrent.futures.Future[tuple[int, bool]] = concurrent.futures.Future()
    readers: list[asyncio.Task[None]] = []

    async def store(reader: ChannelReader) -> None:
        try:
            receipt = await receive_file(reader, tmp_path / "copy.bin", require_trailer=True)
            received.set_result((receipt.size, receipt.verified))
        except BaseException as exc:
            received.set_exception(exc)
            raise

    async def accepts(data: dict[str, Any]) -> dict[str, bool]:
        readers.append(asyncio.get_running_loop().create_task(store(data["reader"])))
        return {"accepted": True}

    worker("files::later", accepts)
    src = tmp_path / "big.bin"
    # More than the relay and the sockets buffer: most of it goes out after the answer.
    src.write_bytes(os.urandom(40 << 20))
    done = await _send(engine, src, "files::later", "--allow-unverified")
    assert done.rc == 0, done.stderr
    assert json.loads(done.stdout) == {"sent": 40 << 20, "result": {"accepted": True}}
    assert await asyncio.wrap_future(received) == (40 << 20, True)
