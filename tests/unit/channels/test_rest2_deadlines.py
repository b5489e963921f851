"""Attach deadlines run on one relay timer for the oldest channel, not on one loop timer per channel.

The REST API module creates and discards two channels per request; a ``loop.call_later`` per create (and its
cancel) was a sizeable part of that cost. These tests pin the cost (one timer for many creates) and every
guarantee the per-channel timers gave: each channel expires at its own deadline, in creation order; a discarded or
fully attached channel never expires; shutdown leaves no timer behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from iii_engine.channels import ChannelRelay


class _Recording(ChannelRelay):
    """Records when each channel leaves the relay, and wakes the test when ``until`` are all gone."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gone: dict[str, float] = {}
        self.until: set[str] = set()
        self.done = asyncio.Event()

    def _forget(self, channel_id: str) -> None:
        if channel_id in self:
            self.gone[channel_id] = asyncio.get_running_loop().time()
        super()._forget(channel_id)
        if self.until and self.until <= self.gone.keys():
            self.done.set()


def _count_timers(loop: asyncio.AbstractEventLoop) -> tuple[list[float], Callable[[], None]]:
    """Count the loop's ``call_at`` calls (``call_later`` goes through it too); returns the log and an undo."""
    calls: list[float] = []
    original = loop.call_at

    def counting(when: float, callback: Any, *args: Any, context: Any = None) -> asyncio.TimerHandle:
        calls.append(when)
        return original(when, callback, *args, context=context)

    setattr(loop, "call_at", counting)  # noqa: B010 - an instance attribute shadowing the method

    def undo() -> None:
        delattr(loop, "call_at")

    return calls, undo


async def test_many_creates_arm_one_timer() -> None:
    relay = ChannelRelay(attach_timeout_s=60.0)
    calls, undo = _count_timers(asyncio.get_running_loop())
    try:
        ids = [relay.create(8, owner=None)["reader"]["channel_id"] for _ in range(1000)]
        for channel_id in ids[:500]:
            relay.discard(channel_id)
        ids += [relay.create(8, owner=None)["reader"]["channel_id"] for _ in range(1000)]
    finally:
        undo()
    assert len(calls) == 1, f"{len(calls)} timers armed for 2000 creates"
    assert len(relay) == 1500
    await relay.close()
    assert len(relay) == 0


async def test_each_channel_expires_at_its_own_deadline_in_order() -> None:
    timeout = 0.4
    relay = _Recording(attach_timeout_s=timeout)
    loop = asyncio.get_running_loop()
    first = relay.create(None, owner=None)["reader"]["channel_id"]
    first_at = loop.time()
    discarded = relay.create(None, owner=None)["reader"]["channel_id"]
    await asyncio.sleep(0.15)  # spacing between the deadlines, not synchronisation
    second = relay.create(None, owner=None)["reader"]["channel_id"]
    second_at = loop.time()
    relay.discard(discarded)
    relay.until = {first, second}
    await asyncio.wait_for(relay.done.wait(), 10)
    assert relay.gone[first] >= first_at + timeout
    assert relay.gone[second] >= second_at + timeout
    assert relay.gone[first] < relay.gone[second]
    assert relay.gone[discarded] < relay.gone[first]
    assert len(relay) == 0
    await relay.close()


async def test_channel_with_both_ends_attached_outlives_the_deadline() -> None:
    relay = _Recording(attach_timeout_s=0.2)
    refs = relay.create(None, owner=None)
    attached = refs["reader"]["channel_id"]
    reader = relay.open_local(attached, refs["reader"]["access_key"], "read")
    writer = relay.open_local(attached, refs["writer"]["access_key"], "write")
    late = relay.create(None, owner=None)["reader"]["channel_id"]  # expires after the attached one's deadline
    relay.until = {late}
    await asyncio.wait_for(relay.done.wait(), 10)
    assert attached in relay  # its deadline passed with both ends attached: untouched
    await writer.send(b"still here")
    await writer.close()
    assert [message async for message in reader] == [b"still here"]
    await asyncio.wait_for(relay.wait_idle(), 5)
    await relay.close()


async def test_close_leaves_no_timer_and_a_new_create_rearms() -> None:
    relay = _Recording(attach_timeout_s=0.2)
    relay.create(None, owner=None)
    await relay.close()
    assert relay._sweep is None and not relay._pending
    again = relay.create(None, owner=None)["reader"]["channel_id"]
    relay.until = {again}
    await asyncio.wait_for(relay.done.wait(), 10)
    assert len(relay) == 0
