"""A void call through the bridge (``BridgeLink.fire``) queued behind a backlog is sent on the connection it was made
for, or fails "not sent"; it never runs on the remote after a reconnect.

Before: ``fire`` checked that the link was connected and handed the call to the SDK, which queues a frame behind
frames still waiting for the socket (here: a remote that stopped reading). When that connection dropped before the
backlog drained, the call stayed queued and was written on the NEXT connection: ``fire`` had returned as if sent,
and the call ran on the remote after the reconnect, however much later (twice, for a caller that retried after an
error meanwhile).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from polling import until
from stall_relay import SMALL_BUFFER, Relay

from iii.connection import Connection
from iii.iii import III
from iii.protocol.client import ClientSession
from iii_engine.modules.bridge.link import BridgeCallError, BridgeLink

pytestmark = pytest.mark.timeout(30)

SCOPE = "hbr-bridge-fire-backlog"


@pytest.fixture
async def link(relay: Relay) -> AsyncIterator[BridgeLink]:
    """A bridge link through ``relay``, connected; the relay flows again before the link is closed."""
    link = BridgeLink(relay.url, role="hbr", connect_grace_s=0.5)
    link.start()
    try:
        await until(lambda: link.connected)
        yield link
    finally:
        relay.flowing.set()
        await link.close()


def client_of(link: BridgeLink) -> III:
    """The link's SDK client (it has one once connected)."""
    client = link._client
    assert client is not None
    return client


async def on_client_loop(client: III, coro: Any) -> Any:
    return await client._bridge.run_async(coro)


async def send_fillers_until(client: III, enough: Callable[[Connection], bool], pause_s: float) -> bool:
    """On the client's loop, its socket's send buffer made small: void calls of a harmless 8 KiB write are sent, one
    per ``pause_s``, until ``enough(connection)`` holds; ``False`` when it still does not after 2,000 of them."""
    conn = client._conn
    ws = conn._ws
    assert ws is not None
    ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
    filler = ClientSession.new_call("state::set", {"scope": SCOPE, "key": "filler", "value": "x" * 8192},
                                    action={"type": "void"})[1]
    for _ in range(2000):
        conn.send_soon(filler)
        await asyncio.sleep(pause_s)
        if enough(conn):
            return True
    return False


async def back_up(client: III) -> None:
    """On the client's loop: frames of the loop's own (here void calls of a harmless write) are queued until the
    connection's backlog stays non-empty (its flusher waits for the stalled socket to drain)."""
    if not await send_fillers_until(client, lambda conn: len(conn._backlog) >= 2, 0.001):
        raise AssertionError("the link's backlog never backed up behind the stalled relay")


async def stall(relay: Relay, client: III) -> None:
    """The remote stops reading what the link sends, and the client's backlog backs up behind it."""
    relay.flowing.clear()
    await on_client_loop(client, back_up(client))


async def holds_on_client(client: III, condition: Callable[[], bool]) -> bool:
    """``condition()``, read on the client's loop (where its connection changes)."""
    async def check() -> bool:
        return condition()

    return bool(await on_client_loop(client, check()))


async def until_on_client(client: III, condition: Callable[[], bool]) -> None:
    """Poll ``condition`` on the client's loop until it holds, at most 10 s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not await holds_on_client(client, condition):
        assert loop.time() < deadline, "condition not met within 10 s"
        await asyncio.sleep(0.005)


def queued(client: III, text: str) -> Callable[[], bool]:
    return lambda: any(text in str(frame) for frame, _ in client._conn._backlog)


async def stored(link: BridgeLink, key: str) -> Any:
    return await link.call("state::get", {"scope": SCOPE, "key": key})


async def fired_behind_the_backlog(link: BridgeLink, key: str, value: int) -> asyncio.Future[None]:
    """A void ``state::set`` of ``key`` fired through the link, once its frame waits in the client's backlog."""
    fired = asyncio.ensure_future(link.fire("state::set", {"scope": SCOPE, "key": key, "value": value}))
    client = client_of(link)
    await until_on_client(client, queued(client, f'"{key}"'))
    return fired


async def test_a_void_call_queued_behind_a_backlog_fails_not_sent_when_the_connection_drops_and_never_runs_after(
        relay: Relay, link: BridgeLink) -> None:
    await stall(relay, client_of(link))
    racing = await fired_behind_the_backlog(link, "racing", 2)
    relay.cut()  # the connection drops before the backlog drained
    relay.flowing.set()

    await until(lambda: not link.connected)
    await until(lambda: link.connected, within=10)  # the link retries every 2 s
    await link.fire("state::set", {"scope": SCOPE, "key": "after", "value": 3})
    assert await stored(link, "after") == 3  # same connection, sent in order: "racing" would be in by now
    assert await stored(link, "racing") is None  # it did not run on the next connection
    with pytest.raises(BridgeCallError, match=r"call of state::set not sent to remote engine ws://127\.0\.0\.1:"
                                              r"\d+: the connection dropped before it was written"):
        await racing


async def test_a_void_call_queued_behind_a_backlog_is_sent_once_the_remote_reads_again(
        relay: Relay, link: BridgeLink) -> None:
    await stall(relay, client_of(link))
    waiting = await fired_behind_the_backlog(link, "waiting", 4)
    assert not waiting.done()  # it waits its turn, written or not: it has not returned as sent
    relay.flowing.set()
    await asyncio.wait_for(waiting, 10)
    assert await stored(link, "waiting") == 4


async def test_a_void_call_the_full_queue_refuses_fails_at_once_as_not_sent(relay: Relay, link: BridgeLink) -> None:
    # (what tests/unit/modules/test_bridge_link_lost.py checks with a fake client, on a real link)
    client = client_of(link)
    client._conn._max_queue = 3
    await stall(relay, client)

    async def fill() -> None:
        while len(client._conn._backlog) < 3:
            client._conn.send_soon("{}")

    await on_client_loop(client, fill())
    with pytest.raises(BridgeCallError, match=r"call of state::set not sent to remote engine ws://127\.0\.0\.1:"
                                              r"\d+: The call to 'state::set' was never sent: the outbound queue is "
                                              r"full \(3 frames"):
        await asyncio.wait_for(link.fire("state::set", {"scope": SCOPE, "key": "full", "value": 5}), 5)
    assert not await holds_on_client(client, queued(client, '"full"'))
    relay.flowing.set()
    await until_on_client(client, lambda: not client._conn._backlog)
    await link.fire("state::set", {"scope": SCOPE, "key": "later", "value": 6})
    assert await stored(link, "later") == 6
    assert await stored(link, "full") is None
