"""A bridge link's call watch belongs to the event loop it runs on.

Before: the link kept one outage future and one watcher task for its whole life. A loop that ended with a call
pending (an engine stopped, or its asyncio.run over) left that future behind unresolved, and every later call on
another loop was handed it: asyncio.wait refused a future of another loop, so each call failed with a ValueError
("The future belongs to a different loop") instead of returning the remote's answer. Calls from two live loops
(threads) at once shared one pending count and one watcher that could only run on one of them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from iii_engine.modules.bridge.link import BridgeCallError, BridgeLink
from tests.polling import until
from tests.unit.modules.test_bridge_link_watch import _Client, _link

pytestmark = pytest.mark.timeout(20)


def _pending_on_a_loop_that_ends(link: BridgeLink, client: _Client, *, close: bool) -> None:
    async def run() -> None:
        call = asyncio.ensure_future(link._unless_lost(client, client.pending_forever(), "f"))  # type: ignore[arg-type]
        await until(lambda: link._pending_calls == 1)
        if close:
            await link.close()
            link._client = client  # type: ignore[assignment]  # started again
            client.state = "connected"
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)

    asyncio.run(run())


@pytest.mark.parametrize("close", [True, False], ids=["closed-with-a-call-pending", "loop-ended"])
def test_a_link_serves_calls_on_a_new_loop_after_one_ended_with_calls_pending(close: bool) -> None:
    client = _Client()
    link = _link(client)
    _pending_on_a_loop_that_ends(link, client, close=close)

    async def answered() -> Any:
        return await link._unless_lost(client, asyncio.sleep(0.01, result=7), "f")  # type: ignore[arg-type]

    async def dropped() -> BaseException | None:
        call = asyncio.ensure_future(link._unless_lost(client, client.pending_forever(), "f"))  # type: ignore[arg-type]
        await until(lambda: link._pending_calls == 1)
        client.state = "reconnecting"
        try:
            await asyncio.wait_for(call, 5)  # grace 0.3 s: failed well before
        except BaseException as exc:  # the assertion below says which
            return exc
        return None

    assert asyncio.run(answered()) == 7
    failure = asyncio.run(dropped())
    assert isinstance(failure, BridgeCallError), repr(failure)
    assert link._pending_calls == 0


def test_calls_from_two_live_loops_each_see_an_outage() -> None:
    client = _Client()
    link = _link(client, grace_s=0.2)
    results: dict[str, BaseException | None] = {}
    failed_at: dict[str, float] = {}
    both_pending = threading.Barrier(3, timeout=10)

    def on_a_thread(name: str) -> None:
        async def run() -> None:
            call = asyncio.ensure_future(
                link._unless_lost(client, client.pending_forever(), "f"))  # type: ignore[arg-type]
            await asyncio.to_thread(both_pending.wait)
            try:
                await asyncio.wait_for(call, 5)  # grace 0.2 s: failed well before
            except BaseException as exc:  # recorded for the assertion below
                results[name] = exc
            else:
                results[name] = None
            failed_at[name] = time.monotonic()

        asyncio.run(run())

    threads = [threading.Thread(target=on_a_thread, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    until_both = threading.Event()
    dropped_at: list[float] = []

    def drop_when_pending() -> None:  # the outage starts once both calls are pending, each on its own loop
        both_pending.wait()
        client.state = "reconnecting"
        dropped_at.append(time.monotonic())
        until_both.set()

    dropper = threading.Thread(target=drop_when_pending)
    dropper.start()
    for thread in (*threads, dropper):
        thread.join(15)
    assert until_both.is_set()
    assert set(results) == {"a", "b"}
    for name, exc in results.items():
        assert isinstance(exc, BridgeCallError), (name, repr(exc))
        assert "unreachable" in str(exc)
        # grace 0.2 s and a look every 0.1 s; before, the loop whose call was not the watcher's learnt of it only
        # when something else woke it up (here its own 5 s timeout)
        assert failed_at[name] - dropped_at[0] < 2.5, name
    assert link._pending_calls == 0
