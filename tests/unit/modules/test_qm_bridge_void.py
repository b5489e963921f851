"""A void call through the bridge runs at most once, on the connection that is up when it is made.

Before: ``BridgeLink.fire`` checked the link from the engine's thread and then handed the call to the SDK; a drop
in between (the state it read was out of date) had the SDK queue the call for the next connection, ``fire``
returned as if it had been sent, and the call ran on the remote after the reconnect, however much later; a caller
told nothing failed had no reason to think it late, and one that retried on a later error ran it twice.
"""

from __future__ import annotations

from typing import Any

import pytest
from polling import until

from iii_engine import Engine
from iii_engine.modules.bridge.link import BridgeCallError, BridgeLink

pytestmark = pytest.mark.timeout(30)

SCOPE = "qm-bridge-void"


async def stored(link: BridgeLink, key: str) -> Any:
    return await link.call("state::get", {"scope": SCOPE, "key": key})


async def test_a_void_call_racing_a_drop_fails_as_not_sent_and_never_runs_after_the_reconnect(
        remote: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    port = remote.port
    link = BridgeLink(remote.url, role="qm", connect_grace_s=0.5)
    link.start()
    try:
        await until(lambda: link.connected)
        await link.fire("state::set", {"scope": SCOPE, "key": "before", "value": 1})
        await until(lambda: link.connected)
        assert await stored(link, "before") == 1
        await remote.stop()
        await until(lambda: not link.connected)

        async def stale_up() -> Any:  # what _up returns when the state it read from its thread was still connected
            return link._client

        with monkeypatch.context() as patched:
            patched.setattr(link, "_up", stale_up)
            with pytest.raises(BridgeCallError, match=r"call of state::set not sent to remote engine "
                                                      rf"ws://127\.0\.0\.1:{port}: the connection dropped"):
                await link.fire("state::set", {"scope": SCOPE, "key": "racing", "value": 2})

        async with Engine(config=remote.config, port=port):  # the remote back on its port
            await until(lambda: link.connected, within=10)  # the link retries every 2 s
            await link.fire("state::set", {"scope": SCOPE, "key": "after", "value": 3})
            assert await stored(link, "after") == 3  # same connection, sent in order: "racing" would be in by now
            assert await stored(link, "racing") is None
    finally:
        await link.close()


async def test_a_void_call_made_while_the_link_stays_down_fails_within_the_grace_naming_the_remote(
        remote: Engine) -> None:
    # a guard (held before): the drop is seen, so the call waits for the link and then fails
    port = remote.port
    link = BridgeLink(remote.url, role="qm", connect_grace_s=0.3)
    link.start()
    try:
        await until(lambda: link.connected)
        await remote.stop()
        await until(lambda: not link.connected)
        with pytest.raises(BridgeCallError, match=rf"remote engine ws://127\.0\.0\.1:{port} unreachable"):
            await link.fire("state::set", {"scope": SCOPE, "key": "down", "value": 1})
    finally:
        await link.close()
