"""ChannelRelay.drop_owner: the right channels go, and a disconnect only looks at the worker's own channels."""

from __future__ import annotations

from typing import Any

from iii_engine.channels import ChannelRelay


class Tripwire:
    """Stands in for another owner's channel: any look at it fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"drop_owner looked at another owner's channel ({name})")


async def test_drop_owner_removes_only_its_unattached_channels() -> None:
    relay = ChannelRelay(orphan_grace_s=0)  # (the drop at once: its grace is tested in test_relay.py)
    idle = [relay.create(None, owner="w1")["reader"] for _ in range(3)]
    busy = relay.create(None, owner="w1")["reader"]
    others = [relay.create(None, owner="w2")["reader"] for _ in range(2)]
    anonymous = relay.create(None, owner=None)["reader"]
    reader = relay.open_local(busy["channel_id"], busy["access_key"], "read")  # an attached end keeps its channel
    relay.drop_owner("w1")
    assert [ref["channel_id"] in relay for ref in idle] == [False, False, False]
    assert busy["channel_id"] in relay
    assert all(ref["channel_id"] in relay for ref in others)
    assert anonymous["channel_id"] in relay
    relay.drop_owner("nobody")  # an owner without channels: nothing happens
    assert len(relay) == 4
    await reader.close()
    await relay.close()


async def test_drop_owner_never_touches_other_owners_channels() -> None:
    relay = ChannelRelay(orphan_grace_s=0)  # (the drop at once: its grace is tested in test_relay.py)
    mine = [relay.create(None, owner="w1")["reader"]["channel_id"] for _ in range(2)]
    theirs = [relay.create(None, owner=f"w{i % 50 + 2}")["reader"]["channel_id"] for i in range(500)]
    real = {channel_id: relay._channels[channel_id] for channel_id in theirs}
    for channel_id in theirs:
        relay._channels[channel_id] = Tripwire()  # type: ignore[assignment]
    relay.drop_owner("w1")
    relay._channels.update(real)
    assert not any(channel_id in relay for channel_id in mine)
    assert all(channel_id in relay for channel_id in theirs)
    await relay.close()


async def test_owner_index_forgets_finished_channels() -> None:
    relay = ChannelRelay(orphan_grace_s=0)  # (the drop at once: its grace is tested in test_relay.py)
    for _ in range(100):
        relay.discard(relay.create(None, owner="w1")["reader"]["channel_id"])
    kept = relay.create(None, owner="w1")["reader"]["channel_id"]
    assert relay._by_owner == {"w1": {kept: relay._channels[kept]}}  # no entry left behind by removed channels
    relay.drop_owner("w1")
    assert relay._by_owner == {} and len(relay) == 0
    await relay.close()
