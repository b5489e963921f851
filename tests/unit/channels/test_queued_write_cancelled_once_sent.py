"""An ``await writer.write(data)`` queued behind another write and cancelled once the queue's pump had sent it whole
(its future done, its caller not yet resumed). Before, its caller got ``CancelledError`` though everything had
gone out, no abort followed and the writer went on: a retry sent it twice and the reader saw a clean end. Now the
stream is aborted, as for a queued write cancelled while its frames go out: a retry raises, the reader sees an
abort.
"""

from __future__ import annotations

import asyncio

import pytest

from iii.channels import ChannelAbortedError, ChannelClosedError, ChannelWriter
from iii.waiters import Broadcast
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)


class _CancelOnceSent(Broadcast):
    """The writer's "pending bytes dropped" signal, set by the pump right after it completed a write's future:
    cancels the task awaiting ``future`` there, before that task resumes (the race, made certain)."""

    __slots__ = ("future", "task")

    def __init__(self, task: asyncio.Task[None], future: asyncio.Future[None]) -> None:
        super().__init__()
        self.task, self.future = task, future

    def set(self) -> None:
        if self.future.done() and not self.task.done():
            self.task.cancel()
        super().set()


async def _cancel_once_sent(writer: ChannelWriter, data: bytes | str) -> asyncio.Task[None]:
    writer.stream.write(b"q" * 300_000)  # the pump runs: the write below is queued behind it
    writing = asyncio.ensure_future(writer.write(data))  # type: ignore[arg-type]  # a str goes out as text
    await asyncio.sleep(0)  # lets it queue (the pump is still connecting)
    assert not writing.done() and writer._queue
    future = writer._queue[-1][1]
    assert future is not None
    writer._space = _CancelOnceSent(writing, future)
    return writing


@pytest.mark.parametrize("data", ["é" * 200_000, b"z" * 1000], ids=["text-in-four-pieces", "binary-one-frame"])
async def test_a_queued_write_cancelled_once_sent_aborts_the_stream(data: bytes | str) -> None:
    async with local_channel() as ch:
        texts: list[str] = []
        ch.reader.on_message(texts.append)
        reading = asyncio.ensure_future(ch.reader.read_all())
        writing = await _cancel_once_sent(ch.writer, data)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(writing, 10)
        # Before: the retry went through and the close too; the reader got the write twice, as a whole stream.
        with pytest.raises(ChannelClosedError, match="aborted"):
            await asyncio.wait_for(ch.writer.write(data), 10)  # type: ignore[arg-type]
        with pytest.raises(ChannelAbortedError):
            await asyncio.wait_for(reading, 10)
        assert sum(map(len, texts)) <= len(data)  # never twice
