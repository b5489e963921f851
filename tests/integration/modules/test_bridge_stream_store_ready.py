"""A Bridge stream store tells its socket clients to re-sync once per connection made to the remote, however often it
was started, and stops telling them when it is closed (the remover ``BridgeLink.on_ready`` returns is kept).

Before: a second ``start()`` failed ("function id ... already registered") after the first had set everything up, and
the store threw away the remover of its reconnect callback, so closing it never removed the callback.
"""

from __future__ import annotations

import asyncio

import pytest

from iii_engine.modules.bridge.stores import BridgeStreamStore, _Gap
from iii_streams.events import make_event
from tests.integration.sdk.conftest import EngineThread

pytestmark = pytest.mark.timeout(30)


async def test_a_store_started_twice_tells_its_clients_once_per_connection_and_nothing_once_closed() -> None:
    with EngineThread() as fake:
        await asyncio.to_thread(fake.stop)  # the first connection comes after both starts
        store = BridgeStreamStore(fake.url)
        store.start()
        store.start()
        sub = store._hub.subscribe()
        told = asyncio.Event()
        # Added after the store's: run after it, in the same delivery, its call on this loop queued after the store's.
        stop_marking = store.link.on_ready(told.set)
        try:
            await asyncio.to_thread(fake.start)
            await asyncio.wait_for(told.wait(), 10)
            end = make_event("s", "g", "i", "create", 1)
            store._hub.publish(end)
            gaps = 0
            while (event := await asyncio.wait_for(sub.get(), 5)) is not end:
                gaps += isinstance(event, _Gap)
            assert gaps == 1
            client = store.link._client
            assert client is not None
            stop_marking()
        finally:
            await store.aclose()
            await sub.close()
        assert not client._registrations_ready.callbacks  # the store's own was removed with it
