"""One watcher per bridge link looks at the connection while calls are pending, not one poll per call.

Before: each pending call woke every 0.1 s to look at the link, so 1,000 calls pending on a slow remote cost
10,000 wake-ups (and state reads across threads) a second.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iii_engine.modules.bridge.link import BridgeCallError, BridgeLink
from tests.polling import until

pytestmark = pytest.mark.timeout(20)


class _Client:
    """A client whose calls never get an answer; counts how often its state is read."""

    def __init__(self) -> None:
        self.state = "connected"
        self.reads = 0

    def get_connection_state(self) -> str:
        self.reads += 1
        return self.state

    async def pending_forever(self) -> Any:
        await asyncio.Event().wait()

    async def shutdown_async(self) -> None:
        self.state = "disconnected"


def _link(client: _Client, grace_s: float = 0.3) -> BridgeLink:
    link = BridgeLink("ws://127.0.0.1:9", role="state", connect_grace_s=grace_s)
    link._client = client  # type: ignore[assignment]
    return link


async def _pending_calls(link: BridgeLink, client: _Client, n: int) -> list[asyncio.Future[Any]]:
    """``n`` calls through the link that never get an answer, each already waiting."""
    calls = [asyncio.ensure_future(link._unless_lost(client, client.pending_forever(), "f"))  # type: ignore[arg-type]
             for _ in range(n)]
    await asyncio.sleep(0)
    return calls


async def test_many_pending_calls_share_one_look_at_the_link() -> None:
    client = _Client()
    link = _link(client)
    calls = await _pending_calls(link, client, 200)
    start = client.reads
    await until(lambda: client.reads - start >= 3)  # the watcher has looked three times (about 0.3 s)
    await asyncio.sleep(0.2)  # a window in which 200 polling calls would have read the state ~400 times more
    assert client.reads - start < 20
    for call in calls:
        call.cancel()
    await asyncio.gather(*calls, return_exceptions=True)
    assert link._pending_calls == 0
    await link.close()


async def test_an_outage_fails_every_call_pending_then_and_not_later_ones() -> None:
    client = _Client()
    link = _link(client)
    calls = await _pending_calls(link, client, 50)
    client.state = "reconnecting"
    done, _ = await asyncio.wait(calls, timeout=5)
    assert len(done) == 50
    assert all(isinstance(call.exception(), BridgeCallError) for call in calls)
    assert "unreachable" in str(calls[0].exception())
    # The link is back: a call made now waits for its own answer, not failed by the outage that is over.
    client.state = "connected"
    later = asyncio.ensure_future(link._unless_lost(client, asyncio.sleep(0.5, result=7), "f"))  # type: ignore[arg-type]
    assert await asyncio.wait_for(later, 5) == 7
    await link.close()
