"""A callee's connection lost with calls pending: each caller is told whether its call was sent.

Why: calls that waited for room in a stalled callee's queue were never written to it, yet ~18 % of them were told
``channel_send_failed`` "worker connection closed" (woken by the queue's close before the disconnect was handled)
and the rest ``invocation_stopped`` "its callee's worker disconnected before answering", the words a call the callee
did receive gets too. A caller deciding whether to retry could not tell "did not run" from "may have run".
A frame the callee's queue took but dropped unwritten when the connection closed was told "may have run" too; now
only frames handed to the callee's socket (in part, or corked for it) are.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from iii_engine import Engine

from .raw import RawWorker

CALLERS = 40
PAYLOAD = "x" * (1024 * 1024)  # 40 MiB in all: past the callee's socket buffers and its 16 MiB queue
MAY_HAVE_RUN = "Invocation of stall stopped: its callee's worker disconnected before answering; the call may have run"
NOT_SENT = ("Invocation of stall stopped: its callee's worker disconnected before the call was sent to it; the call "
            "did not run")


async def _until(check: Any, what: str) -> None:
    """Wait for ``check()`` (engine state with no event to await), at most 20 s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not check():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.01)


async def test_calls_never_written_are_told_not_sent_the_written_ones_may_have_run(engine: Engine) -> None:
    callee = await RawWorker.connect(engine.url)
    await callee.register("stall")
    await callee.sync()
    callers = [await RawWorker.connect(engine.url) for _ in range(CALLERS)]
    box = engine.workers[callee.worker_id].outbox
    # what the engine hands to the callee's socket, by invocation id (the truth the answers must tell)
    written: set[str] = set()
    write_now, send = box._write_now, box._send
    assert write_now is not None

    def seen(text: str) -> None:
        written.add(json.loads(text)["invocation_id"])

    def spy_write_now(text: str, hold: bool) -> int:
        wrote = write_now(text, hold)
        if wrote:
            seen(text)
        return wrote

    async def spy_send(text: str) -> None:
        seen(text)
        await send(text)

    box._write_now, box._send = spy_write_now, spy_send
    try:
        # the first call reaches the callee, which then stops reading: the others fill its socket, then its queue,
        # then wait for room (one per caller: a caller's frames are not read while its call waits)
        first = asyncio.create_task(callers[0].call("stall", PAYLOAD))
        received = (await callee.expect("invokefunction"))["invocation_id"]
        callee.ws.transport.pause_reading()
        rest = [asyncio.create_task(caller.call("stall", PAYLOAD)) for caller in callers[1:]]
        await _until(lambda: len(engine.invocations.pending) == CALLERS and box.waiting > 0,
                     "every call routed, some waiting for room")
        waiting, queued = box.waiting, len(box)
        callee.ws.transport.abort()  # the callee's connection is lost (a reset)
        frames = [await first, *await asyncio.gather(*rest)]
    finally:
        for caller in callers:
            await caller.close()
    errors = [frame["error"] for frame in frames]
    ids = [frame["invocation_id"] for frame in frames]
    assert {error["code"] for error in errors} == {"invocation_stopped"}, errors
    told_not_sent = {i for i, error in zip(ids, errors, strict=True) if error["message"] == NOT_SENT}
    told_may_have_run = {i for i, error in zip(ids, errors, strict=True) if error["message"] == MAY_HAVE_RUN}
    assert told_not_sent | told_may_have_run == set(ids), [e["message"] for e in errors]
    # never "did not run" for a call the callee's socket was given, nor for the one it read
    assert not told_not_sent & written, sorted(told_not_sent & written)
    assert received in written and received in told_may_have_run
    # the calls that waited for room and those whose frames sat in the callee's queue, dropped unwritten at the
    # close, are told "did not run" (before: the queued ones "may have run": told_may_have_run held ~14 of them)
    assert waiting > 0 and queued > 0, (waiting, queued)
    assert told_may_have_run == written, (len(told_may_have_run), len(written), queued, waiting)
    assert told_not_sent == set(ids) - written
    assert len(told_not_sent) == waiting + queued, (len(told_not_sent), waiting, queued)
    assert engine.invocations.pending == {}
