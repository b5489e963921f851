"""A bridge link whose close is cut short (an engine stop bounded by a deadline, the end of ``asyncio.run``) still
disconnects from the remote and ends the link's SDK loop thread.

Before, the cancel reached the SDK's shutdown on the link's own loop: the remote kept a worker (its subscription
too) for a bridge that was gone, and the link's loop thread ran until the process ended.
"""

from __future__ import annotations

import asyncio

import pytest

from iii.iii import III
from iii_engine.modules.bridge.link import BridgeLink
from tests.integration.sdk.conftest import EngineThread

pytestmark = pytest.mark.timeout(30)


def test_a_link_close_cancelled_with_its_loop_still_ends_the_link() -> None:
    with EngineThread() as remote:
        async def closed_then_cut_short() -> III:
            link = BridgeLink(remote.url, role="stream")
            link.start()
            client = link._running()
            await client.wait_until_connected_async(5)
            closing = asyncio.ensure_future(link.close())
            await asyncio.sleep(0)  # the close has handed the shutdown to the link's loop
            closing.cancel()
            return client  # asyncio.run cancels what is left, then closes this loop

        client = asyncio.run(closed_then_cut_short())
        client._bridge.thread.join(5)
        assert not client._bridge.alive, "the bridge link's SDK loop thread outlived its cut-short close"
        remote.wait_for(lambda: not remote.engine.workers)


def test_a_second_close_returns_once_the_links_thread_ended() -> None:
    # before: the second close found no client and returned at once, while the first still disconnected
    with EngineThread() as remote:
        async def closed_twice() -> tuple[III, bool]:
            link = BridgeLink(remote.url, role="stream")
            link.start()
            client = link._running()
            await client.wait_until_connected_async(5)
            first = asyncio.ensure_future(link.close())
            await asyncio.sleep(0)  # the first close is under way
            await asyncio.wait_for(link.close(), 10)
            alive_after_second = client._bridge.alive
            await asyncio.wait_for(first, 10)
            return client, alive_after_second

        client, alive_after_second = asyncio.run(closed_twice())
        assert not alive_after_second, "the second close returned while the link's thread still ran"
        assert not client._bridge.alive
