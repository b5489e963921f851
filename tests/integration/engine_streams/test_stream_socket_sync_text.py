"""A group's sync is built from the items' stored JSON texts where the store keeps them (memory, SQL), none decoded.

Before, each join decoded every item of the group (``MemoryStream.list``) and encoded them all again into the
frame: a 50,000-item group (5.1 MB) took 95 to 300 ms of the event loop per join, so clients re-joining in a loop
held up every other worker's calls (``stream::get`` p50 1 ms -> 104 ms with one such client, 618 ms with eight).
"""

from __future__ import annotations

from typing import Any

import pytest

import iii_streams.memory
import iii_streams.sql
from iii_engine import Engine

from .helpers import SocketClient, Worker, engine_config

pytestmark = pytest.mark.our_engine("builds the stream socket's sync frames")

ITEMS = 200
# what only exact JSON keeps: big integers, key order, escapes, text outside ASCII
DATA = {"z": 2**70, "a": [1.5, None, True], "s": "é\"\\\n\u2028", "n": {"b": 1, "a": 2}}


class _CountedLoads:
    """Stands in for a store module's ``loads``, counting its calls."""

    def __init__(self, loads: Any) -> None:
        self.loads = loads
        self.calls = 0

    def __call__(self, raw: str | bytes) -> Any:
        self.calls += 1
        return self.loads(raw)


async def test_a_group_sync_carries_the_stored_items_exactly_without_decoding_them(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with Engine(config=engine_config(store_url=store_url)) as engine:
        worker = await Worker.connect(engine.url)
        for n in range(ITEMS):
            await worker.result("stream::set", {"stream_name": "s", "group_id": "g", "item_id": f"i{n}",
                                                "data": {**DATA, "i": n}})
        listed = await worker.result("stream::list", {"stream_name": "s", "group_id": "g"})
        # (Redis lists a group in its hash's order, the others in insertion order)
        assert sorted(listed, key=lambda item: item["i"]) == [{**DATA, "i": n} for n in range(ITEMS)]
        counted = {module: _CountedLoads(module.loads) for module in (iii_streams.memory, iii_streams.sql)}
        for module, stand_in in counted.items():
            monkeypatch.setattr(module, "loads", stand_in)
        client = await SocketClient.connect(engine, max_size=None)
        await client.join("a", "s", "g")
        sync = await client.recv()
        await client.join("b", "s", "g", "i7")  # an item's sync: as before
        item = await client.recv()
        monkeypatch.undo()
        assert sync["event"] == {"type": "sync", "data": listed}
        assert (sync["streamName"], sync["groupId"], sync["id"]) == ("s", "g", None)
        assert list(sync["event"]["data"][0]) == [*DATA, "i"]  # key order kept
        assert item["event"] == {"type": "sync", "data": {**DATA, "i": 7}}
        if not store_url.startswith("redis"):  # Redis: the default, list() encoded
            # before: one decode per item (200), then the frame encoded them all again
            assert sum(stand_in.calls for stand_in in counted.values()) <= 1  # the item's own get
        await client.close()
        await worker.close()
