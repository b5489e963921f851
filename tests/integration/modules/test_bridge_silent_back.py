"""A back engine that stops answering without closing its socket (SIGSTOP: a stopped or hung process) is found by
the front's links within their ping timeout (5 s by default), not at the end of each call's timeout: state, stream
and queue calls through the front fail promptly, name the back, and say whether the back may have applied them.

Before, every call sent to the stopped back waited its whole timeout (30 s for the stores; the caller's own, shorter,
timeout ran out first with a bare ``TimeoutError``), the links stayed "connected", and a ``stream::update`` whose
caller had been told it failed was applied once the back ran again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from iii import III
from iii.errors import InvocationError
from tests.integration.modules.test_bridge_topology import (
    Topology,
    call,
    our_client,
    topology,  # noqa: F401  (a fixture, used by its name)
    until_bridged,
)

pytestmark = pytest.mark.our_engine("starts two engine processes from config files and stops one with SIGSTOP")

MAY_HAVE = "it was sent and may have been applied there"
NOT_SENT = "it was not sent, nothing was applied"


async def test_calls_to_a_stopped_back_fail_promptly_saying_whether_they_may_have_been_applied(
        topology: Topology) -> None:  # noqa: F811
    front = await our_client(topology.front_url)
    assert topology.back is not None
    back_pid = topology.back.process.pid
    item = {"stream_name": "silent", "group_id": "g", "item_id": "i"}
    try:
        await until_bridged(front)
        await call(front, "stream::set", {**item, "data": {"n": 0}})
        await call(front, "state::set", {"scope": "silent", "key": "k", "value": 1})
        # the queue link is up once a topic enqueue goes through (its first call may meet it still connecting)
        await until_enqueued(front)
        os.kill(back_pid, signal.SIGSTOP)
        try:
            began = time.monotonic()
            sent = await asyncio.gather(
                call(front, "stream::update", {**item, "ops": [{"type": "increment", "path": "n", "by": 1}]},
                     timeout_ms=25_000),
                call(front, "state::get", {"scope": "silent", "key": "k"}, timeout_ms=25_000),
                call(front, "enqueue", {"topic": "silent-topic", "data": {"x": 1}}, timeout_ms=25_000),
                return_exceptions=True)
            took = time.monotonic() - began
            assert took < 10.0, f"calls to the stopped back took {took:.1f} s: {sent}"
            for outcome, code in zip(sent, ("STREAM_UPDATE_ERROR", "GET_ERROR", "enqueue_error"), strict=True):
                assert isinstance(outcome, InvocationError), outcome
                assert outcome.code == code, (outcome.code, outcome.message)
                assert topology.back_url in outcome.message and MAY_HAVE in outcome.message, outcome.message
                assert "answered no ping" in outcome.message, outcome.message
            # once the front knows the back is silent, a write is not sent at all, and says so
            with pytest.raises(InvocationError) as unsent:
                await call(front, "state::set", {"scope": "silent", "key": "k", "value": 2}, timeout_ms=25_000)
            assert unsent.value.code == "SET_ERROR", unsent.value.message
            assert topology.back_url in unsent.value.message and NOT_SENT in unsent.value.message, unsent.value.message
        finally:
            os.kill(back_pid, signal.SIGCONT)
        await until_bridged(front)
        # (never sent: the back never applies it, even now that it runs again)
        assert await call(front, "state::get", {"scope": "silent", "key": "k"}) == 1
    finally:
        await front.shutdown_async()


async def until_enqueued(front: III, within: float = 15.0) -> None:
    """Return once a topic enqueue through the front succeeds (the queue adapter's link is up)."""
    deadline = time.monotonic() + within
    while True:
        try:
            await call(front, "enqueue", {"topic": "silent-probe", "data": {}})
            return
        except InvocationError:
            if time.monotonic() > deadline:
                raise
