"""A bridge link says "ready" (the stream store then tells its socket clients to re-sync) only once the remote has the
link's registrations again, also when the remote's late cleanup of the old connection deleted them (T7): a client
that re-joined before the ``stream.events`` subscription was back missed the events of that window."""

from __future__ import annotations

import asyncio
from typing import Any

from iii_engine.modules.bridge.link import BridgeLink
from tests.integration.sdk.conftest import EngineThread
from tests.integration.sdk.late_cleanup import LateCleanup


async def _nothing(data: Any) -> None:
    return None


async def test_the_link_is_ready_only_once_the_remote_has_its_subscription_again() -> None:
    with EngineThread() as fake:
        late = LateCleanup(fake)
        link = BridgeLink(fake.url, role="test", connect_grace_s=10)
        # the fake turns the link away until its callback is installed: a first connection ready before that
        # call is told to no one (CI once waited out the first readiness that way)
        fake.engine.reject_handshakes = 10**9
        link.start()
        old: list[str] = []  # the first connection's worker id, once the first readiness was seen
        seen: asyncio.Queue[tuple[bool, bool, bool] | None] = asyncio.Queue()
        # installed before the first connection can be ready, so that its readiness is the first one seen: one
        # that landed later would otherwise pass for the reconnect's (under load it did)
        link.on_ready(lambda: seen.put_nowait(late.snapshot(old[0], "sub") if old else None))
        fake.engine.reject_handshakes = 0  # the next attempt (the link retries every 2 s) connects
        try:
            link.register_function("sub", _nothing)
            link.register_trigger("subscribe", "sub", {"topic": "stream.events"})
            await link.call("engine::functions::list", {})
            await asyncio.to_thread(fake.wait_for, lambda: bool(fake.engine.triggers))
            assert await asyncio.wait_for(seen.get(), 10) is None  # the first connection's readiness
            old.append(next(iter(fake.engine.workers)))

            async def cut() -> None:
                fake.engine.workers[old[0]].ws.transport.abort()

            fake.run(cut())
            # reconnected and replayed; the link's SDK polls while the remote still knows the old connection
            await asyncio.to_thread(fake.wait_for, lambda: late.workers_listed >= 2)
            late.release()  # the old connection's cleanup deletes "sub" and its trigger (T7)
            # (old worker known, "sub" registered, its subscription bound); before: (True, True, True) at once,
            # and the subscription was deleted right after
            assert await asyncio.wait_for(seen.get(), 10) == (False, True, True)
        finally:
            late.release()
            await link.close()
