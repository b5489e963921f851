"""A handler that raises after writing to a channel writer it was given (an HTTP response's, above all) has that
writer aborted before its error is sent: the reader sees an aborted stream, not one left open for as long as the
writer object lives (the attack's HTTP client waited 50 s), nor one that looks complete."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iii.channels import ChannelAbortedError, ChannelWriter
from iii.errors import InvocationError
from iii.iii import III

pytestmark = [pytest.mark.our_engine("reads the abort through our relay"), pytest.mark.timeout(30)]


@pytest.mark.parametrize("how", ["await write", "stream.write"])
async def test_a_handler_that_raises_has_the_writers_it_used_aborted(worker: III, how: str) -> None:
    kept: list[ChannelWriter] = []  # the writer outlives the run (a handler's object, a task, a traceback)

    async def download(data: dict[str, Any]) -> None:
        out: ChannelWriter = data["out"]
        kept.append(out)
        if how == "await write":
            await out.write(b"half of the file")
        else:
            out.stream.write(b"half of the file")  # queued, no wait
        raise RuntimeError("disk failed half-way")

    async def untouched(data: dict[str, Any]) -> None:
        kept.append(data["out"])
        raise RuntimeError("failed before writing")

    worker.register_function("download", download)
    worker.register_function("untouched", untouched)
    used, unused = await worker.create_channel_async(), await worker.create_channel_async()
    with pytest.raises(InvocationError, match="disk failed"):
        await worker.trigger_async({"function_id": "download", "payload": {"out": used.writer_ref}})
    with pytest.raises(ChannelAbortedError):  # before: the reader waited for good (TimeoutError)
        await asyncio.wait_for(used.reader.read_all(), 5)
    with pytest.raises(InvocationError, match="failed before writing"):
        await worker.trigger_async({"function_id": "untouched", "payload": {"out": unused.writer_ref}})
    assert not kept[-1].closed  # never written to: not connected only to be aborted
