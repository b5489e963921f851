"""A bridged call whose link drops while it waits fails within the connect grace, naming the remote, and the
request is dropped (cancelled) so it can never run on the remote later."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from iii.errors import OutboundQueueFullError
from iii_engine.modules.bridge.link import BridgeCallError, BridgeLink


class _DroppedLink:
    """A client whose connection dropped after the call was queued: the call never gets an answer."""

    def __init__(self) -> None:
        self.cancelled = False

    def get_connection_state(self) -> str:
        return "reconnecting"

    async def pending_forever(self) -> Any:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


async def test_a_call_pending_on_a_dropped_link_fails_within_the_grace() -> None:
    link = BridgeLink("ws://127.0.0.1:9", role="state", connect_grace_s=0.3)
    client = _DroppedLink()
    began = time.monotonic()
    with pytest.raises(BridgeCallError, match=r"remote engine ws://127\.0\.0\.1:9 unreachable"):
        await asyncio.wait_for(link._unless_lost(client, client.pending_forever(), "state::get"), 5)  # type: ignore[arg-type]
    assert time.monotonic() - began < 2.0
    await asyncio.sleep(0)
    assert client.cancelled


class _FullLink:
    """A connected client whose outbound queue stays full: every call fails before it is sent."""

    def get_connection_state(self) -> str:
        return "connected"

    async def trigger_once_async(self, request: Any) -> bool:
        raise OutboundQueueFullError(1000, 30.0)

    async def trigger_async(self, request: Any) -> Any:
        raise OutboundQueueFullError(1000, 30.0)


@pytest.mark.parametrize("void", [True, False], ids=["void", "answered"])
async def test_a_call_the_full_outbound_queue_refused_fails_as_not_sent_naming_the_remote(void: bool) -> None:
    # Before: a void call raised the SDK's own OutboundQueueFullError through the bridge, and an answered one
    # said "connection ... lost", though the link was up and the call had simply not been sent.
    link = BridgeLink("ws://127.0.0.1:9", role="state", connect_grace_s=0.3)
    link._client = _FullLink()  # type: ignore[assignment]
    with pytest.raises(BridgeCallError) as failed:
        if void:
            await link.fire("state::set", {"k": 1})
        else:
            await link.call("state::set", {"k": 1})
    assert str(failed.value).startswith("call of state::set not sent to remote engine ws://127.0.0.1:9: ")
    assert "outbound queue" in str(failed.value)
